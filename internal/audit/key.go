package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

const (
	// keySize is the size of an audit key's secret.
	keySize = 32
	// keyFileHeader is the first line of an audit key file.
	keyFileHeader = "trustflow-audit-key-v1"
	// maxKeyFileSize bounds how much of an audit key file is read; a valid
	// one is 68 bytes.
	maxKeyFileSize = 1024
	// HKDF labels: the record MAC key and the checkpoint signing key are
	// derived from the secret, each under its own label, so neither can be
	// computed from the other.
	macKeyInfo  = "trustflow-audit-mac-v1"
	signKeyInfo = "trustflow-audit-checkpoint-ed25519-v1"
)

// ErrNoKey is returned by a KeySource's Load when it holds no audit key yet.
var ErrNoKey = errors.New("audit: the source holds no audit key")

// Key is an audit key: a 256-bit secret, held like the key-encryption key
// (a file in the data dir or an environment variable, never the database),
// from which two keys are derived with HKDF-SHA256: the HMAC-SHA256 key that
// chains records, and the Ed25519 key that signs checkpoints. Its id is a
// fingerprint of the Ed25519 public key, so an assessor who holds only the
// public key can check it. A Key is immutable and safe for concurrent use;
// formatting it prints its id, never a key.
type Key struct {
	mac  []byte
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	id   string
}

// NewKey returns a new random audit key and its secret in the form
// ParseKey reads (the text of an audit key file). The secret is the key
// itself: write it once, never log it.
func NewKey() (*Key, []byte, error) {
	var secret [keySize]byte
	defer clear(secret[:])
	if _, err := rand.Read(secret[:]); err != nil {
		return nil, nil, fmt.Errorf("audit: new audit key: %w", err)
	}
	k, err := keyFromSecret(secret[:])
	if err != nil {
		return nil, nil, err
	}
	text := []byte(keyFileHeader + "\n")
	text = base64.StdEncoding.AppendEncode(text, secret[:])
	return k, append(text, '\n'), nil
}

// keyFromSecret derives an audit key from its 32-byte secret.
func keyFromSecret(secret []byte) (*Key, error) {
	if len(secret) != keySize {
		return nil, fmt.Errorf("audit: audit key is %d bytes, want %d", len(secret), keySize)
	}
	mac, err := hkdf.Key(sha256.New, secret, nil, macKeyInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("audit: derive the record key: %w", err)
	}
	seed, err := hkdf.Key(sha256.New, secret, nil, signKeyInfo, ed25519.SeedSize)
	defer clear(seed)
	if err != nil {
		return nil, fmt.Errorf("audit: derive the checkpoint key: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	return &Key{mac: mac, priv: priv, pub: pub, id: KeyID(pub)}, nil
}

// KeyID returns the id of the audit key whose checkpoint public key is pub:
// the first 8 bytes, in hex, of SHA-256 over the 32 raw bytes of pub.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// ParseKey parses an audit key: the text of an audit key file
//
//	trustflow-audit-key-v1
//	<32-byte secret in standard base64>
//
// or the secret alone in standard base64 (the form an env:// variable
// holds). Surrounding whitespace is ignored. Errors never quote the input.
func ParseKey(data []byte) (*Key, error) {
	data = bytes.TrimSpace(data)
	line := data
	if rest, ok := bytes.CutPrefix(data, []byte(keyFileHeader)); ok {
		rest = bytes.TrimLeft(rest, "\r")
		if len(rest) == 0 || rest[0] != '\n' {
			return nil, errors.New("audit: parse audit key: the first line must be " + keyFileHeader + " alone")
		}
		line = bytes.TrimSpace(rest[1:])
	} else if bytes.HasPrefix(data, []byte("trustflow-")) {
		return nil, errors.New("audit: parse audit key: not an audit key (a key-encryption key file?); want a file whose first line is " + keyFileHeader)
	}
	if bytes.ContainsAny(line, "\r\n") {
		return nil, errors.New("audit: parse audit key: unexpected data after the key line")
	}
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(line)))
	defer clear(buf)
	n, err := base64.StdEncoding.Decode(buf, line)
	if err != nil {
		return nil, errors.New("audit: parse audit key: not standard base64 (want 32 random bytes, e.g. from `openssl rand -base64 32`)")
	}
	if n != keySize {
		return nil, fmt.Errorf("audit: parse audit key: the key is %d bytes, want %d", n, keySize)
	}
	return keyFromSecret(buf[:n])
}

// ID returns the key's id (see KeyID).
func (k *Key) ID() string { return k.id }

// PublicKey returns the Ed25519 public key that verifies checkpoints.
func (k *Key) PublicKey() ed25519.PublicKey { return k.pub }

// publicKeyPEM returns pub as a PEM SubjectPublicKeyInfo.
func publicKeyPEM(pub ed25519.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("audit: encode the checkpoint public key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// String returns "audit.Key(<id>)"; a key is never formatted.
func (k *Key) String() string { return "audit.Key(" + k.id + ")" }

// GoString is like String, so %#v does not print a key either.
func (k *Key) GoString() string { return k.String() }

// newMAC returns HMAC-SHA256 under the record key.
func (k *Key) newMAC() hash.Hash { return hmac.New(sha256.New, k.mac) }

// KeySource is where a node's audit key lives.
type KeySource interface {
	// Load returns the key; an error matching ErrNoKey when there is none.
	Load(ctx context.Context) (*Key, error)
	// Create makes the source's key. It is called only for a database that
	// records no audit key, when Load found none.
	Create(ctx context.Context) (*Key, error)
	// String describes the source (a file:// or env:// URI); never a key.
	String() string
}

// FileKeySource keeps the audit key in a file, mode 0600; the default is
// <data-dir>/audit.key.
type FileKeySource struct {
	Path string
}

// String returns the source as a file:// URI.
func (s FileKeySource) String() string { return "file://" + s.Path }

// Load reads the key file. It refuses a file that group or others may
// access, with an error that says to run chmod 600; a missing file is
// ErrNoKey.
func (s FileKeySource) Load(ctx context.Context) (*Key, error) {
	f, err := os.Open(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("audit: %s: %w", s, ErrNoKey)
	}
	if err != nil {
		return nil, fmt.Errorf("audit: load audit key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("audit: load audit key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("audit: load audit key %s: not a regular file", s.Path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("audit: load audit key %s: permissions %04o let group or others read the audit key; run: chmod 600 %s", s.Path, perm, s.Path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	defer clear(data)
	if err != nil {
		return nil, fmt.Errorf("audit: load audit key %s: %w", s.Path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("audit: load audit key %s: larger than the %d-byte limit of an audit key file; not a trustflow audit key", s.Path, maxKeyFileSize)
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("audit: load audit key %s: %w", s.Path, err)
	}
	return k, nil
}

// Create writes a new key to Path (0600, parent created 0700) through a
// synced temporary file that is hard-linked into place, so it never
// replaces an existing file: of two nodes creating at once, one fails with
// an error matching fs.ErrExist.
func (s FileKeySource) Create(ctx context.Context) (_ *Key, err error) {
	k, text, err := NewKey()
	if err != nil {
		return nil, err
	}
	defer clear(text)
	dir := filepath.Dir(s.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: create audit key %s: %w", s.Path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(s.Path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("audit: create audit key %s: %w", s.Path, err)
	}
	defer func() {
		tmp.Close()
		if rmErr := os.Remove(tmp.Name()); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) && err == nil {
			err = fmt.Errorf("audit: create audit key %s: %w", s.Path, rmErr)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return nil, fmt.Errorf("audit: create audit key %s: %w", s.Path, err)
	}
	if _, err := tmp.Write(text); err != nil {
		return nil, fmt.Errorf("audit: create audit key %s: %w", s.Path, err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("audit: create audit key %s: %w", s.Path, err)
	}
	if err := os.Link(tmp.Name(), s.Path); err != nil {
		return nil, fmt.Errorf("audit: create audit key %s: %w", s.Path, err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("audit: create audit key %s: %w", s.Path, err)
	}
	return k, nil
}

// EnvKeySource reads the audit key from an environment variable: the
// 32-byte secret in standard base64 (or the text of an audit key file). It
// cannot create a key: the operator puts one there.
type EnvKeySource struct {
	Name string
	// Getenv reads a variable; nil reads an empty environment.
	Getenv func(string) string
}

// String returns the source as an env:// URI.
func (s EnvKeySource) String() string { return "env://" + s.Name }

// Load parses the variable; an empty or unset one is ErrNoKey.
func (s EnvKeySource) Load(ctx context.Context) (*Key, error) {
	v := ""
	if s.Getenv != nil {
		v = s.Getenv(s.Name)
	}
	if strings.TrimSpace(v) == "" {
		return nil, fmt.Errorf("audit: %s: the variable %s is empty or unset: %w", s, s.Name, ErrNoKey)
	}
	k, err := ParseKey([]byte(v))
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w", s, err)
	}
	return k, nil
}

// Create refuses: the key must be put in the variable.
func (s EnvKeySource) Create(ctx context.Context) (*Key, error) {
	return nil, fmt.Errorf("audit: %s: the variable %s is unset; put 32 random bytes in standard base64 in it (e.g. `openssl rand -base64 32`), the same on every node", s, s.Name)
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
	defer d.Close()
	return d.Sync()
}
