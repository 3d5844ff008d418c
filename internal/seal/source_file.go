package seal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// FileSource keeps the KEK in a file (format: [ParseKEK]), mode 0600, and a
// staged rotation's new KEK beside it in PATH.next, so a crash between Stage
// and Commit leaves both on disk. It is the default source, at
// <data-dir>/kek.
type FileSource struct {
	// Path is the KEK file.
	Path string
}

// NextPath is where a staged KEK waits for its rotation to commit.
func (s FileSource) NextPath() string { return s.Path + ".next" }

// String returns the source as a file:// URI.
func (s FileSource) String() string { return "file://" + s.Path }

// Load returns the KEK in Path, then the staged one in Path.next if any. A
// missing Path returns [ErrNoKEK] (and a staged key alone is not loaded:
// its rotation never committed anything without the file).
func (s FileSource) Load(ctx context.Context) ([]*KEK, error) {
	k, err := LoadKEKFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("seal: %s: %w", s, ErrNoKEK)
	}
	if err != nil {
		return nil, err
	}
	out := []*KEK{k}
	next, err := LoadKEKFile(s.NextPath())
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("seal: an interrupted key rotation left %s, which does not load: %w", s.NextPath(), err)
	default:
		out = append(out, next)
	}
	return out, nil
}

// Create writes a new KEK to Path; it never replaces an existing file.
func (s FileSource) Create(ctx context.Context) (*KEK, error) {
	k, err := NewKEK()
	if err != nil {
		return nil, err
	}
	if err := writeKEKFile(s.Path, k, false); err != nil {
		return nil, fmt.Errorf("seal: create kek file %s: %w", s.Path, err)
	}
	return k, nil
}

// Stage writes a new KEK to Path.next (durably, replacing a staged key that
// never became active) and returns it.
func (s FileSource) Stage(ctx context.Context) (*KEK, error) {
	k, err := NewKEK()
	if err != nil {
		return nil, err
	}
	if err := WriteKEKFile(s.NextPath(), k); err != nil {
		return nil, err
	}
	return k, nil
}

// Commit makes the KEK with id the file's only key: when it is the staged
// one, Path.next is renamed over Path; a staged key that is not id is
// removed.
func (s FileSource) Commit(ctx context.Context, id string) error {
	cur, err := LoadKEKFile(s.Path)
	if err != nil {
		return err
	}
	next, nextErr := LoadKEKFile(s.NextPath())
	switch {
	case nextErr == nil && next.ID() == id:
		if err := os.Rename(s.NextPath(), s.Path); err != nil {
			return fmt.Errorf("seal: commit kek: replace %s: %w", s.Path, err)
		}
	case cur.ID() == id:
		if err := os.Remove(s.NextPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("seal: commit kek: remove %s: %w", s.NextPath(), err)
		}
	default:
		return fmt.Errorf("seal: commit kek %s: %s holds neither it nor a staged key with that id", id, s)
	}
	if err := syncDir(filepath.Dir(s.Path)); err != nil {
		return fmt.Errorf("seal: commit kek: %w", err)
	}
	return nil
}
