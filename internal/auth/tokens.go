package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
)

// TokenPrefix starts every token secret, so that secret scanners and people
// can recognise one.
const TokenPrefix = "tf_"

// secretBytes is the token's entropy: 256 bits.
const secretBytes = 32

// Errors callers distinguish.
var (
	// ErrUnauthenticated means no valid token: missing, malformed, unknown,
	// revoked or expired. Callers must not say which.
	ErrUnauthenticated error = &errs.Error{Kind: errs.Unauthenticated, Code: "unauthenticated", Op: "auth",
		Message: "a valid API token is required",
		Hint:    "send Authorization: Bearer <token>; create one with `trustflow token create`, or use the admin token printed at first start"}
	// ErrInvalid means a request to create a token was malformed; every
	// such error is an errs.Invalid error naming the field, and matches it.
	ErrInvalid error = &errs.Error{Kind: errs.Invalid, Code: "invalid_input", Op: "auth", Message: "the token request is invalid"}
)

// Why a credential was refused: stored in the audit record of the refusal,
// never told to the caller (who learns only that it was refused).
const (
	ReasonNoCredentials = "no Authorization header"
	ReasonNotBearer     = "authorization scheme is not Bearer"
	ReasonBadPrefix     = "does not start with"
	ReasonBadLength     = "wrong length"
	ReasonBadAlphabet   = "not base64url"
	ReasonUnknown       = "unknown token"
	ReasonRevoked       = "is revoked"
	ReasonExpired       = "expired"
)

// denial carries a refusal's reason under ErrUnauthenticated.
type denial struct{ reason, detail string }

func (d *denial) Error() string { return d.detail }

// Unauthenticated is an ErrUnauthenticated error whose reason (one of the
// Reason* constants) the audit log records; detail is for the server log.
func Unauthenticated(reason, detail string) error {
	e := *(ErrUnauthenticated.(*errs.Error))
	e.Err = &denial{reason: reason, detail: detail}
	return &e
}

// DenyReason returns the Reason* of a refusal, or "invalid token".
func DenyReason(err error) string {
	var d *denial
	if errors.As(err, &d) {
		return d.reason
	}
	return "invalid token"
}

// ParseToken checks a presented token's form and returns the hash under
// which it is stored. It does not touch the database.
func ParseToken(s string) (hash string, err error) {
	if !strings.HasPrefix(s, TokenPrefix) {
		return "", Unauthenticated(ReasonBadPrefix, fmt.Sprintf("token does not start with %q", TokenPrefix))
	}
	body := s[len(TokenPrefix):]
	if len(body) != base64.RawURLEncoding.EncodedLen(secretBytes) {
		return "", Unauthenticated(ReasonBadLength, "token has the wrong length")
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil || len(raw) != secretBytes {
		return "", Unauthenticated(ReasonBadAlphabet, "token is not base64url")
	}
	return hashSecret(s), nil
}

func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func newSecret() (string, error) {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("auth: generate token: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

func newID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("auth: generate token id: %w", err)
	}
	return "tok_" + hex.EncodeToString(b), nil
}

// Token is a token's public view: never its secret.
type Token struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Role      Role       `json:"role"`
	CreatedAt time.Time  `json:"created_at"`
	CreatedBy string     `json:"created_by"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Status    string     `json:"status"` // active, expired or revoked
}

func publicToken(t store.Token, now time.Time) Token {
	status := "active"
	switch {
	case t.RevokedAt != nil:
		status = "revoked"
	case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
		status = "expired"
	}
	return Token{ID: t.ID, Name: t.Name, Role: Role(t.Role), CreatedAt: t.CreatedAt, CreatedBy: t.CreatedBy,
		ExpiresAt: t.ExpiresAt, RevokedAt: t.RevokedAt, Status: status}
}

// Service issues, checks and revokes tokens.
type Service struct {
	store *store.Store
	audit *audit.Log
	clock clock.Clock
}

// NewService returns a token service. A nil clock means the wall clock.
func NewService(st *store.Store, log *audit.Log, c clock.Clock) *Service {
	if c == nil {
		c = clock.Real{}
	}
	return &Service{store: st, audit: log, clock: c}
}

// Store returns the database the service keeps its tokens in (the web
// console keeps its sessions there too).
func (s *Service) Store() *store.Store { return s.store }

// Authenticate resolves a presented token to its principal.
func (s *Service) Authenticate(ctx context.Context, presented string) (Principal, error) {
	hash, err := ParseToken(presented)
	if err != nil {
		return Principal{}, err
	}
	t, err := s.store.TokenBySecretHash(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, Unauthenticated(ReasonUnknown, "unknown token")
	}
	if err != nil {
		return Principal{}, fmt.Errorf("auth: authenticate: %w", err)
	}
	if t.RevokedAt != nil {
		return Principal{}, Unauthenticated(ReasonRevoked, "token "+t.ID+" is revoked")
	}
	if t.ExpiresAt != nil && !s.clock.Now().Before(*t.ExpiresAt) {
		return Principal{}, Unauthenticated(ReasonExpired, "token "+t.ID+" expired")
	}
	return Principal{TokenID: t.ID, Name: t.Name, Role: Role(t.Role)}, nil
}

// ActorOf converts a principal into the audit log's actor.
func ActorOf(p Principal) audit.Actor {
	return audit.Actor{ID: p.TokenID, Name: p.Name, Role: string(p.Role)}
}

// CreateRequest asks for a new token.
type CreateRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// ExpiresIn is a Go duration ("720h"); empty means the token does not expire.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// MaxNameLen bounds a token's name.
const MaxNameLen = 128

func (r CreateRequest) validate() (Role, time.Duration, error) {
	name := strings.TrimSpace(r.Name)
	if name == "" {
		return "", 0, &errs.Error{Kind: errs.Invalid, Code: "invalid_input", Field: "name", Message: "is required", Hint: "name the token after who or what uses it, e.g. --name ci-deploy", Op: "auth"}
	}
	if !utf8.ValidString(name) || len(name) > MaxNameLen || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", 0, &errs.Error{Kind: errs.Invalid, Code: "invalid_input", Field: "name", Message: fmt.Sprintf("must be printable text of at most %d bytes", MaxNameLen), Hint: "use letters, digits, spaces, '-' or '_'", Op: "auth"}
	}
	role, err := ParseRole(r.Role)
	if err != nil {
		return "", 0, &errs.Error{Kind: errs.Invalid, Code: "invalid_input", Field: "role", Message: fmt.Sprintf("unknown role %q", r.Role), Hint: "use admin, editor, operator or auditor", Op: "auth"}
	}
	var ttl time.Duration
	if r.ExpiresIn != "" {
		ttl, err = time.ParseDuration(r.ExpiresIn)
		if err != nil || ttl <= 0 {
			return "", 0, &errs.Error{Kind: errs.Invalid, Code: "invalid_input", Field: "expires_in", Message: fmt.Sprintf("%q is not a positive duration", r.ExpiresIn), Hint: "use a Go duration such as 720h or 90m", Op: "auth"}
		}
	}
	return role, ttl, nil
}

// Create issues a token on behalf of actor and returns it with its secret,
// which is never available again. The token and its audit record commit
// together.
func (s *Service) Create(ctx context.Context, actor Principal, req CreateRequest) (Token, string, error) {
	role, ttl, err := req.validate()
	if err != nil {
		return Token{}, "", err
	}
	var out Token
	var secret string
	err = s.store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		out, secret, err = s.create(ctx, tx, ActorOf(actor), strings.TrimSpace(req.Name), role, ttl)
		return err
	})
	if err != nil {
		return Token{}, "", err
	}
	return out, secret, nil
}

func (s *Service) create(ctx context.Context, tx *store.Tx, actor audit.Actor, name string, role Role, ttl time.Duration) (Token, string, error) {
	secret, err := newSecret()
	if err != nil {
		return Token{}, "", err
	}
	id, err := newID()
	if err != nil {
		return Token{}, "", err
	}
	now := s.clock.Now().UTC().Truncate(time.Microsecond)
	st := store.Token{ID: id, Name: name, Role: string(role), SecretHash: hashSecret(secret), CreatedAt: now, CreatedBy: actor.ID}
	if ttl > 0 {
		// Stored times have microsecond precision: answer what is stored.
		exp := now.Add(ttl).Truncate(time.Microsecond)
		st.ExpiresAt = &exp
	}
	if err := tx.InsertToken(ctx, st); err != nil {
		return Token{}, "", fmt.Errorf("auth: create token: %w", err)
	}
	details := map[string]any{"name": name, "role": string(role)}
	if st.ExpiresAt != nil {
		details["expires_at"] = st.ExpiresAt.Format(time.RFC3339)
	}
	if _, err := s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "token.create", Target: "token/" + id, Details: details}); err != nil {
		return Token{}, "", fmt.Errorf("auth: create token: %w", err)
	}
	return publicToken(st, now), secret, nil
}

// Revoke revokes a token and ends its console sessions; the revocation, the
// sessions' end and its audit record commit together.
func (s *Service) Revoke(ctx context.Context, actor Principal, id string) (Token, error) {
	var out Token
	err := s.store.InTx(ctx, func(tx *store.Tx) error {
		// Holding the audit head before reading the token serialises
		// concurrent revocations on PostgreSQL: the later one sees the
		// earlier one's revoked_at and conflicts.
		if _, err := tx.LockAuditHead(ctx); err != nil {
			return fmt.Errorf("auth: revoke token: %w", err)
		}
		now := s.clock.Now().UTC().Truncate(time.Microsecond)
		t, err := tx.RevokeToken(ctx, id, now)
		if err != nil {
			return fmt.Errorf("auth: revoke token: %w", err)
		}
		t.RevokedAt = &now
		out = publicToken(t, now)
		// The token's console sessions end with it, on every node; the
		// record says how many there were, when there were any.
		ended, err := tx.DeleteConsoleSessionsOfToken(ctx, id)
		if err != nil {
			return fmt.Errorf("auth: revoke token: %w", err)
		}
		details := map[string]any{"name": t.Name, "role": t.Role}
		if ended > 0 {
			details["sessions_ended"] = ended
		}
		_, err = s.audit.Append(ctx, tx, audit.Entry{Actor: ActorOf(actor), Action: "token.revoke", Target: "token/" + id, Details: details})
		return err
	})
	return out, err
}

// List returns every token's public view.
func (s *Service) List(ctx context.Context) ([]Token, error) {
	rows, err := s.store.ListTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("auth: list tokens: %w", err)
	}
	now := s.clock.Now()
	out := make([]Token, 0, len(rows))
	for _, t := range rows {
		out = append(out, publicToken(t, now))
	}
	return out, nil
}

// Get returns one token's public view.
func (s *Service) Get(ctx context.Context, id string) (Token, error) {
	t, err := s.store.Token(ctx, id)
	if err != nil {
		return Token{}, fmt.Errorf("auth: get token: %w", err)
	}
	return publicToken(t, s.clock.Now()), nil
}

// Bootstrap creates the first admin token when the database has never had
// one, and returns its secret (created is false, and secret empty, when a
// token already existed). Safe to call from several nodes at once.
func (s *Service) Bootstrap(ctx context.Context) (secret string, created bool, err error) {
	return s.BootstrapWith(ctx, nil)
}

// BootstrapWith is Bootstrap that hands a newly created secret to persist
// before the token commits: when persist fails, no token is created, so the
// admin can never be left without the only copy of the first token.
func (s *Service) BootstrapWith(ctx context.Context, persist func(secret string) error) (secret string, created bool, err error) {
	err = s.store.InTx(ctx, func(tx *store.Tx) error {
		// Holding the audit head serialises concurrent bootstraps on PostgreSQL.
		if _, err := tx.LockAuditHead(ctx); err != nil {
			return fmt.Errorf("auth: bootstrap: %w", err)
		}
		n, err := tx.CountTokens(ctx)
		if err != nil {
			return fmt.Errorf("auth: bootstrap: %w", err)
		}
		if n > 0 {
			return nil
		}
		_, secret, err = s.create(ctx, tx, audit.System, "admin", RoleAdmin, 0)
		if err != nil {
			return err
		}
		if persist != nil {
			if err := persist(secret); err != nil {
				return fmt.Errorf("auth: bootstrap: keep the admin token: %w", err)
			}
		}
		created = true
		return nil
	})
	if err != nil {
		return "", false, err
	}
	return secret, created, nil
}
