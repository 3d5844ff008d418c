package seal

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// maxKEKFileSize bounds how much of a KEK file is read; a valid one is 62 bytes.
const maxKEKFileSize = 1024

// LoadKEKFile reads a KEK file written by [WriteKEKFile] (format: [ParseKEK]).
// It refuses a file that group or others may access at all, with an error that
// says to run chmod 600 on it. A missing file returns an error matching
// [fs.ErrNotExist].
func LoadKEKFile(path string) (*KEK, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("seal: load kek file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("seal: load kek file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("seal: load kek file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("seal: load kek file %s: permissions %04o let group or others read the key-encryption key; run: chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKEKFileSize+1))
	defer clear(data)
	if err != nil {
		return nil, fmt.Errorf("seal: load kek file %s: %w", path, err)
	}
	if len(data) > maxKEKFileSize {
		return nil, fmt.Errorf("seal: load kek file %s: larger than %d bytes; not a trustflow kek", path, maxKEKFileSize)
	}
	k, err := ParseKEK(data)
	if err != nil {
		return nil, fmt.Errorf("seal: load kek file %s: %w", path, err)
	}
	return k, nil
}

// WriteKEKFile writes k to path atomically: the key goes to a temporary file
// (mode 0600) in the same directory, which is synced and then renamed over
// path, and the directory is synced. The parent directory is created with mode
// 0700 if missing. An existing file at path is replaced; a replaced KEK is
// lost, so keep the old one until every blob it wrapped has been rewrapped.
func WriteKEKFile(path string, k *KEK) error {
	if err := writeKEKFile(path, k, true); err != nil {
		return fmt.Errorf("seal: write kek file %s: %w", path, err)
	}
	return nil
}

// LoadOrCreateKEKFile loads the KEK at path, or, if no file exists there,
// creates a new KEK and writes it as [WriteKEKFile] does. created reports
// whether it was created. Concurrent callers, even in other processes, never
// overwrite each other: exactly one creates the file and the others load it.
func LoadOrCreateKEKFile(path string) (k *KEK, created bool, err error) {
	k, err = LoadKEKFile(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	k, err = NewKEK()
	if err != nil {
		return nil, false, err
	}
	err = writeKEKFile(path, k, false)
	if errors.Is(err, fs.ErrExist) {
		// Another caller created it first: use theirs.
		k, err = LoadKEKFile(path)
		return k, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("seal: create kek file %s: %w", path, err)
	}
	return k, true, nil
}

// writeKEKFile writes k to a synced temporary file next to path and moves it
// into place: with rename if replace is set, otherwise with a hard link that
// fails with fs.ErrExist when path already exists.
func writeKEKFile(path string, k *KEK, replace bool) (err error) {
	if !k.usable() {
		return errors.New("nil kek")
	}
	if k.external {
		return fmt.Errorf("key-encryption key %s lives in a device and cannot be written to a file", k.ID())
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	closed := false
	defer func() {
		if !closed {
			err = errors.Join(err, tmp.Close())
		}
		if rmErr := os.Remove(tmpName); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
			err = errors.Join(err, rmErr)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	text := k.appendText(make([]byte, 0, 64))
	defer clear(text)
	if _, err := tmp.Write(text); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	closed = true
	if err := tmp.Close(); err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmpName, path)
	} else {
		err = os.Link(tmpName, path)
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
