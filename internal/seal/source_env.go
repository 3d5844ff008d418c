package seal

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
)

// EnvSource reads KEKs from environment variables, for containers and
// systemd credentials: Name holds the KEK as 32 bytes in standard base64 (or
// in the text format of a KEK file), and Name_PREVIOUS optionally holds
// earlier KEKs, comma-separated, while a rotation re-wraps to the new one.
// It cannot create or drop keys: to rotate, put a new KEK (from `trustflow
// kek generate`) in Name and the old one in Name_PREVIOUS, restart, and run
// `trustflow kek rotate`, which re-wraps every blob to the key in Name; then
// remove Name_PREVIOUS.
type EnvSource struct {
	// Name is the variable holding the KEK.
	Name string
	// Getenv reads a variable. Defaults to an empty environment in tests;
	// the server passes os.Getenv.
	Getenv func(string) string
}

// PreviousName is the variable holding earlier KEKs during a rotation.
func (s EnvSource) PreviousName() string { return s.Name + "_PREVIOUS" }

// String returns the source as an env:// URI.
func (s EnvSource) String() string { return "env://" + s.Name }

func (s EnvSource) getenv(name string) string {
	if s.Getenv == nil {
		return ""
	}
	return s.Getenv(name)
}

// Load returns the KEK in Name first, then those in Name_PREVIOUS.
func (s EnvSource) Load(ctx context.Context) ([]*KEK, error) {
	v := s.getenv(s.Name)
	if strings.TrimSpace(v) == "" {
		return nil, fmt.Errorf("seal: %s: the variable %s is empty or unset: %w", s, s.Name, ErrNoKEK)
	}
	k, err := parseEnvKEK(v)
	if err != nil {
		return nil, fmt.Errorf("seal: %s: %w", s, err)
	}
	out := []*KEK{k}
	for i, part := range strings.Split(s.getenv(s.PreviousName()), ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		p, err := parseEnvKEK(part)
		if err != nil {
			return nil, fmt.Errorf("seal: %s: key %d of %s: %w", s, i+1, s.PreviousName(), err)
		}
		out = append(out, p)
	}
	return out, nil
}

// Create refuses: the key must be put in the variable.
func (s EnvSource) Create(ctx context.Context) (*KEK, error) {
	return nil, fmt.Errorf("seal: %s: the variable %s is unset; put a key from `trustflow kek generate` in it: %w", s, s.Name, ErrReadOnlySource)
}

// Stage refuses: the new key must be put in the variable.
func (s EnvSource) Stage(ctx context.Context) (*KEK, error) {
	return nil, fmt.Errorf("seal: %s: put a new key from `trustflow kek generate` in %s and the current one in %s, restart, and rotate again: %w",
		s, s.Name, s.PreviousName(), ErrReadOnlySource)
}

// Commit succeeds when id is the key in Name; the operator then removes
// Name_PREVIOUS (a variable cannot be changed from inside the process).
func (s EnvSource) Commit(ctx context.Context, id string) error {
	keys, err := s.Load(ctx)
	if err != nil {
		return err
	}
	if keys[0].ID() != id {
		return fmt.Errorf("seal: commit kek %s: %s holds %s; put %s in it", id, s.Name, keys[0].ID(), id)
	}
	return nil
}

// parseEnvKEK parses a KEK given as base64 or in the KEK file format.
func parseEnvKEK(v string) (*KEK, error) {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, kekFileHeader) {
		return ParseKEK([]byte(v + "\n"))
	}
	buf, err := base64.StdEncoding.DecodeString(v)
	defer clear(buf)
	if err != nil {
		return nil, fmt.Errorf("parse kek: not base64 (want 32 bytes in standard base64, as `trustflow kek generate` prints): %w", err)
	}
	if len(buf) != kekSize {
		return nil, fmt.Errorf("parse kek: key is %d bytes, want %d", len(buf), kekSize)
	}
	return newKEK(buf)
}

// EncodeKEK returns k's key in standard base64, the form EnvSource reads.
// The result is the key itself: print it once, never log it.
func EncodeKEK(k *KEK) (string, error) {
	if !k.usable() || k.external {
		return "", fmt.Errorf("seal: encode kek: %v cannot be exported", k)
	}
	return base64.StdEncoding.EncodeToString(k.key[:]), nil
}
