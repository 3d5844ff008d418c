package seal_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/seal"
)

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteKEKFile(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data", "keys")
	path := filepath.Join(dataDir, "kek")
	k := newKEK(t)

	require.NoError(t, seal.WriteKEKFile(path, k))

	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(dataDir)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o700), di.Mode().Perm())
	require.Equal(t, []string{"kek"}, dirNames(t, dataDir), "no temporary file is left behind")

	text, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Regexp(t, `\Atrustflow-kek-v1\n[A-Za-z0-9+/]{43}=\n\z`, string(text))

	loaded, err := seal.LoadKEKFile(path)
	require.NoError(t, err)
	require.Equal(t, k.ID(), loaded.ID())
}

func TestWriteKEKFileReplacesAtomically(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	require.NoError(t, seal.WriteKEKFile(path, newKEK(t)))
	second := newKEK(t)

	require.NoError(t, seal.WriteKEKFile(path, second))

	loaded, err := seal.LoadKEKFile(path)
	require.NoError(t, err)
	require.Equal(t, second.ID(), loaded.ID())
	require.Equal(t, []string{"kek"}, dirNames(t, dir))
}

func TestWriteKEKFileFailureLeavesNoTempFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A non-empty directory where the file should go: the final rename fails.
	path := filepath.Join(dir, "kek")
	require.NoError(t, os.MkdirAll(filepath.Join(path, "occupied"), 0o700))

	err := seal.WriteKEKFile(path, newKEK(t))

	require.ErrorContains(t, err, "seal: write kek file "+path)
	require.Equal(t, []string{"kek"}, dirNames(t, dir))
	require.Equal(t, []string{"occupied"}, dirNames(t, path))
}

func TestWriteKEKFileNilKEK(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.ErrorContains(t, seal.WriteKEKFile(filepath.Join(dir, "kek"), nil), "nil kek")
	require.Empty(t, dirNames(t, dir))
}

func TestLoadKEKFileRefusesWidePermissions(t *testing.T) {
	t.Parallel()
	for _, perm := range []fs.FileMode{0o644, 0o640, 0o604, 0o660, 0o666, 0o700 | 0o070} {
		t.Run(perm.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kek")
			require.NoError(t, seal.WriteKEKFile(path, newKEK(t)))
			require.NoError(t, os.Chmod(path, perm))

			k, err := seal.LoadKEKFile(path)

			require.Nil(t, k)
			require.ErrorContains(t, err, "chmod 600 "+path)
			require.ErrorContains(t, err, "seal: load kek file "+path)
		})
	}
}

func TestLoadKEKFileAcceptsOwnerOnlyPermissions(t *testing.T) {
	t.Parallel()
	for _, perm := range []fs.FileMode{0o600, 0o400} {
		t.Run(perm.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kek")
			k := newKEK(t)
			require.NoError(t, seal.WriteKEKFile(path, k))
			require.NoError(t, os.Chmod(path, perm))

			loaded, err := seal.LoadKEKFile(path)

			require.NoError(t, err)
			require.Equal(t, k.ID(), loaded.ID())
		})
	}
}

func TestLoadKEKFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	_, err := seal.LoadKEKFile(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, fs.ErrNotExist)

	_, err = seal.LoadKEKFile(dir)
	require.ErrorContains(t, err, "not a regular file")

	notKEK := filepath.Join(dir, "not-a-kek")
	require.NoError(t, os.WriteFile(notKEK, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600))
	_, err = seal.LoadKEKFile(notKEK)
	require.ErrorContains(t, err, "seal: load kek file "+notKEK+": seal: parse kek: missing first line")

	big := filepath.Join(dir, "big")
	require.NoError(t, os.WriteFile(big, append(kekText(0), make([]byte, 2048)...), 0o600))
	_, err = seal.LoadKEKFile(big)
	require.ErrorContains(t, err, "larger than 1024 bytes")
}

func TestLoadOrCreateKEKFile(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "kek")

	first, created, err := seal.LoadOrCreateKEKFile(path)
	require.NoError(t, err)
	require.True(t, created)

	again, created, err := seal.LoadOrCreateKEKFile(path)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, first.ID(), again.ID())
	require.Equal(t, []string{"kek"}, dirNames(t, dir))

	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
}

func TestLoadOrCreateKEKFileDoesNotOverwriteABadFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "kek")
	require.NoError(t, os.WriteFile(path, []byte("not a key\n"), 0o600))

	_, _, err := seal.LoadOrCreateKEKFile(path)
	require.ErrorContains(t, err, "not a trustflow kek")

	require.NoError(t, os.Chmod(path, 0o644))
	_, _, err = seal.LoadOrCreateKEKFile(path)
	require.ErrorContains(t, err, "chmod 600 "+path)

	text, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "not a key\n", string(text))
}

func TestLoadOrCreateKEKFileConcurrentCallersAgree(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	const callers = 16
	ids := make([]string, callers)
	created := make([]bool, callers)
	errs := make([]error, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			var k *seal.KEK
			k, created[i], errs[i] = seal.LoadOrCreateKEKFile(path)
			if k != nil {
				ids[i] = k.ID()
			}
		})
	}
	close(start)
	wg.Wait()

	creators := 0
	for i := range callers {
		require.NoError(t, errs[i])
		require.Equal(t, ids[0], ids[i])
		if created[i] {
			creators++
		}
	}
	require.Equal(t, 1, creators)
	require.Equal(t, []string{"kek"}, dirNames(t, dir))
	onDisk, err := seal.LoadKEKFile(path)
	require.NoError(t, err)
	require.Equal(t, ids[0], onDisk.ID())
}
