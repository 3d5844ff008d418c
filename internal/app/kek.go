package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/truststore"
)

// kekFiles rotates the key-encryption key kept in a file. The new KEK is
// written beside the current one as FILE.next before any key is re-wrapped,
// and renamed over FILE only after the re-wrap committed, so a crash at any
// point leaves every sealed key openable: on the next start, loadKEK finds
// FILE.next, holds both keys, and finishes the rotation.
type kekFiles struct {
	path  string
	trust *truststore.Service
	mu    sync.Mutex
}

func nextPath(path string) string { return path + ".next" }

// loadKEK loads (or creates) the KEK file and returns the keyring to start
// with, plus the KEK of an unfinished rotation, if any.
func loadKEK(path string) (*seal.Keyring, *seal.KEK, bool, error) {
	kek, created, err := seal.LoadOrCreateKEKFile(path)
	if err != nil {
		return nil, nil, false, err
	}
	next, err := seal.LoadKEKFile(nextPath(path))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return seal.NewKeyring(kek), nil, created, nil
	case err != nil:
		return nil, nil, false, fmt.Errorf("an interrupted key rotation left %s, which does not load: %w", nextPath(path), err)
	}
	return seal.NewKeyring(next, kek), next, created, nil
}

// finish completes an interrupted rotation found at start.
func (k *kekFiles) finish(ctx context.Context, keyring *seal.Keyring, next *seal.KEK) error {
	if _, err := k.trust.Rewrap(ctx, audit.System, keyring, next); err != nil {
		return fmt.Errorf("app: finish interrupted key rotation: %w", err)
	}
	return k.commit(next)
}

// commit makes next the KEK file and drops the old key from memory.
func (k *kekFiles) commit(next *seal.KEK) error {
	if err := os.Rename(nextPath(k.path), k.path); err != nil {
		return fmt.Errorf("app: replace %s: %w", k.path, err)
	}
	if d, err := os.Open(filepath.Dir(k.path)); err == nil {
		syncErr := d.Sync()
		d.Close()
		if syncErr != nil {
			return fmt.Errorf("app: sync %s: %w", filepath.Dir(k.path), syncErr)
		}
	}
	k.trust.UseKeyring(seal.NewKeyring(next))
	return nil
}

// rotate generates a new KEK, re-wraps every sealed key under it, and
// replaces the KEK file.
func (k *kekFiles) rotate(ctx context.Context, actor audit.Actor) (truststore.RewrapResult, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	next, err := seal.NewKEK()
	if err != nil {
		return truststore.RewrapResult{}, fmt.Errorf("app: rotate kek: %w", err)
	}
	if err := seal.WriteKEKFile(nextPath(k.path), next); err != nil {
		return truststore.RewrapResult{}, fmt.Errorf("app: rotate kek: %w", err)
	}
	current := k.trust.Keyring()
	res, err := k.trust.Rewrap(ctx, actor, seal.NewKeyring(next, current.KEKs()...), next)
	var incomplete *truststore.RewrapIncompleteError
	switch {
	case errors.As(err, &incomplete):
		// Keys are already sealed under the new KEK: keep FILE.next so that
		// the next start (or rotation) finishes the job.
		return truststore.RewrapResult{}, fmt.Errorf("app: rotate kek: %w (the new key is kept in %s; the rotation finishes at the next start)", err, nextPath(k.path))
	case err != nil:
		if rmErr := os.Remove(nextPath(k.path)); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
		return truststore.RewrapResult{}, err
	}
	if err := k.commit(next); err != nil {
		return truststore.RewrapResult{}, err
	}
	return res, nil
}
