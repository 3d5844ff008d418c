package auth_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

var (
	tokenForm = regexp.MustCompile(`^tf_[A-Za-z0-9_-]{43}$`)
	hashForm  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

func TestParseToken(t *testing.T) {
	t.Parallel()
	valid := "tf_" + strings.Repeat("A", 43)
	sum := sha256.Sum256([]byte(valid))
	hash, err := auth.ParseToken(valid)
	require.NoError(t, err)
	require.Equal(t, hex.EncodeToString(sum[:]), hash)

	for name, tok := range map[string]string{
		"empty":              "",
		"no prefix":          strings.Repeat("A", 46),
		"upper-case prefix":  "TF_" + strings.Repeat("A", 43),
		"short":              "tf_" + strings.Repeat("A", 42),
		"long":               "tf_" + strings.Repeat("A", 44),
		"padded":             "tf_" + strings.Repeat("A", 42) + "=",
		"standard alphabet":  "tf_" + strings.Repeat("+/", 21) + "A",
		"non-canonical tail": "tf_" + strings.Repeat("A", 42) + "B",
		"trailing newline":   "tf_" + strings.Repeat("A", 42) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := auth.ParseToken(tok)
			require.ErrorIs(t, err, auth.ErrUnauthenticated)
		})
	}
}

// FuzzParseToken checks that ParseToken never panics and accepts only the
// form trustflow issues: "tf_" and 43 canonical base64url characters,
// stored under the lowercase hex SHA-256 of the whole token.
func FuzzParseToken(f *testing.F) {
	f.Fuzz(func(t *testing.T, tok string) {
		hash, err := auth.ParseToken(tok)
		if err != nil {
			if !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("ParseToken(%q) = %v, want an ErrUnauthenticated error", tok, err)
			}
			return
		}
		if !tokenForm.MatchString(tok) {
			t.Fatalf("ParseToken accepted %q, which is not tf_ and 43 base64url characters", tok)
		}
		if !hashForm.MatchString(hash) {
			t.Fatalf("ParseToken(%q) hash %q is not 64 lowercase hex characters", tok, hash)
		}
		sum := sha256.Sum256([]byte(tok))
		if hash != hex.EncodeToString(sum[:]) {
			t.Fatalf("ParseToken(%q) hash %q is not the token's SHA-256", tok, hash)
		}
	})
}

func newService(t *testing.T, st *store.Store, c clock.Clock) *auth.Service {
	t.Helper()
	return auth.NewService(st, audit.New(st, c), c)
}

func TestIssuedTokensParse(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t, store.SQLite)
	ctx := context.Background()
	s := newService(t, st, nil)
	secret, created, err := s.Bootstrap(ctx)
	require.NoError(t, err)
	require.True(t, created)
	admin, err := s.Authenticate(ctx, secret)
	require.NoError(t, err)
	for i := 0; i < 20; i++ {
		_, secret, err := s.Create(ctx, admin, auth.CreateRequest{Name: "t", Role: "operator"})
		require.NoError(t, err)
		require.Regexp(t, tokenForm, secret)
		_, err = auth.ParseToken(secret)
		require.NoError(t, err)
	}
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		fc := clock.NewFake(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
		s := newService(t, st, fc)
		secret, _, err := s.Bootstrap(ctx)
		require.NoError(t, err)
		admin, err := s.Authenticate(ctx, secret)
		require.NoError(t, err)
		require.Equal(t, "admin", admin.Name)
		require.Equal(t, auth.RoleAdmin, admin.Role)

		tok, short, err := s.Create(ctx, admin, auth.CreateRequest{Name: "short", Role: "editor", ExpiresIn: "1h"})
		require.NoError(t, err)
		p, err := s.Authenticate(ctx, short)
		require.NoError(t, err)
		require.Equal(t, auth.Principal{TokenID: tok.ID, Name: "short", Role: auth.RoleEditor}, p)

		fc.Advance(time.Hour)
		_, err = s.Authenticate(ctx, short)
		require.ErrorIs(t, err, auth.ErrUnauthenticated)
		require.ErrorContains(t, err, "expired")

		_, err = s.Revoke(ctx, admin, admin.TokenID)
		require.NoError(t, err)
		_, err = s.Authenticate(ctx, secret)
		require.ErrorIs(t, err, auth.ErrUnauthenticated)
		require.ErrorContains(t, err, "is revoked")
		_, err = s.Revoke(ctx, admin, admin.TokenID)
		require.ErrorIs(t, err, store.ErrConflict)
		_, err = s.Revoke(ctx, admin, "tok_missing")
		require.ErrorIs(t, err, store.ErrNotFound)

		_, err = s.Authenticate(ctx, "tf_"+strings.Repeat("A", 43))
		require.ErrorIs(t, err, auth.ErrUnauthenticated)
		require.ErrorContains(t, err, "unknown token")
	})
}

func TestCreateRejectsInvalidRequest(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t, store.SQLite)
	ctx := context.Background()
	s := newService(t, st, nil)
	secret, _, err := s.Bootstrap(ctx)
	require.NoError(t, err)
	admin, err := s.Authenticate(ctx, secret)
	require.NoError(t, err)
	cases := []struct {
		req   auth.CreateRequest
		field string
	}{
		{auth.CreateRequest{Role: "admin"}, "name"},
		{auth.CreateRequest{Name: "x\x7f", Role: "admin"}, "name"},
		{auth.CreateRequest{Name: strings.Repeat("é", 65), Role: "admin"}, "name"},
		{auth.CreateRequest{Name: "x", Role: "superuser"}, "role"},
		{auth.CreateRequest{Name: "x", Role: "admin", ExpiresIn: "tomorrow"}, "expires_in"},
		{auth.CreateRequest{Name: "x", Role: "admin", ExpiresIn: "-5m"}, "expires_in"},
	}
	for _, tc := range cases {
		_, _, err := s.Create(ctx, admin, tc.req)
		require.ErrorIs(t, err, auth.ErrInvalid)
		var inv *errs.Error
		require.ErrorAs(t, err, &inv)
		require.Equal(t, tc.field, inv.Field, "%+v", tc.req)
		require.NotEmpty(t, inv.Hint)
		require.Equal(t, errs.Invalid, inv.Kind)
	}
	toks, err := s.List(ctx)
	require.NoError(t, err)
	require.Len(t, toks, 1, "only the bootstrap token exists")
}

// TestBootstrapOnce runs several nodes' bootstraps at once against one
// database: exactly one creates the admin token.
func TestBootstrapOnce(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		const nodes = 4
		var wg sync.WaitGroup
		secrets := make([]string, nodes)
		errs := make([]error, nodes)
		for i := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				secrets[i], _, errs[i] = newService(t, st, nil).Bootstrap(ctx)
			}()
		}
		wg.Wait()
		var issued []string
		for i := range nodes {
			require.NoError(t, errs[i])
			if secrets[i] != "" {
				issued = append(issued, secrets[i])
			}
		}
		require.Len(t, issued, 1)
		secret, created, err := newService(t, st, nil).Bootstrap(ctx)
		require.NoError(t, err)
		require.False(t, created)
		require.Empty(t, secret)
		toks, err := newService(t, st, nil).List(ctx)
		require.NoError(t, err)
		require.Len(t, toks, 1)
	})
}

// TestConcurrentRevokeSucceedsOnce revokes one token from several requests
// at once: one revocation wins, the others conflict, and the audit log
// records a single token.revoke.
func TestConcurrentRevokeSucceedsOnce(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		s := newService(t, st, nil)
		secret, _, err := s.Bootstrap(ctx)
		require.NoError(t, err)
		admin, err := s.Authenticate(ctx, secret)
		require.NoError(t, err)
		for round := 0; round < 5; round++ {
			victim, _, err := s.Create(ctx, admin, auth.CreateRequest{Name: "victim", Role: "operator"})
			require.NoError(t, err)
			const callers = 4
			var wg sync.WaitGroup
			errs := make([]error, callers)
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = s.Revoke(ctx, admin, victim.ID)
				}()
			}
			wg.Wait()
			won := 0
			for _, err := range errs {
				if err == nil {
					won++
					continue
				}
				require.ErrorIs(t, err, store.ErrConflict)
			}
			require.Equal(t, 1, won, "exactly one revocation succeeds")
			recs, err := audit.New(st, nil).List(ctx, audit.Filter{Action: "token.revoke", Target: "token/" + victim.ID})
			require.NoError(t, err)
			require.Len(t, recs, 1, "one token.revoke record")
		}
	})
}
