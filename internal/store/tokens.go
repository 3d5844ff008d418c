package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Token is an API token's stored form. The secret itself is never stored:
// SecretHash is its SHA-256, hex encoded.
type Token struct {
	ID         string
	Name       string
	Role       string
	SecretHash string
	CreatedAt  time.Time
	CreatedBy  string
	ExpiresAt  *time.Time
	RevokedAt  *time.Time
}

const tokenColumns = "id, name, role, secret_hash, created_at, created_by, expires_at, revoked_at"

func scanToken(row interface{ Scan(...any) error }) (Token, error) {
	var t Token
	var created int64
	var expires, revoked sql.NullInt64
	if err := row.Scan(&t.ID, &t.Name, &t.Role, &t.SecretHash, &created, &t.CreatedBy, &expires, &revoked); err != nil {
		return Token{}, err
	}
	t.CreatedAt = fromMicros(created)
	t.ExpiresAt = fromNullMicros(expires)
	t.RevokedAt = fromNullMicros(revoked)
	return t, nil
}

// InsertToken stores a new token.
func (t *Tx) InsertToken(ctx context.Context, tok Token) error {
	_, err := t.tx.ExecContext(ctx, "INSERT INTO tokens ("+tokenColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
		tok.ID, tok.Name, tok.Role, tok.SecretHash, micros(tok.CreatedAt), tok.CreatedBy, nullMicros(tok.ExpiresAt), nullMicros(tok.RevokedAt))
	if err != nil {
		return fmt.Errorf("store: insert token %s: %w", tok.ID, mapErr(err))
	}
	return nil
}

// RevokeToken marks a token revoked at the given time and returns it as it
// was before. Revoking an already revoked token returns ErrConflict.
func (t *Tx) RevokeToken(ctx context.Context, id string, at time.Time) (Token, error) {
	tok, err := scanToken(t.tx.QueryRowContext(ctx, "SELECT "+tokenColumns+" FROM tokens WHERE id = $1", id))
	if err != nil {
		return Token{}, fmt.Errorf("store: revoke token %s: %w", id, mapErr(err))
	}
	if tok.RevokedAt != nil {
		return tok, fmt.Errorf("store: revoke token %s: already revoked: %w", id, ErrConflict)
	}
	res, err := t.tx.ExecContext(ctx, "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", micros(at), id)
	if err != nil {
		return Token{}, fmt.Errorf("store: revoke token %s: %w", id, mapErr(err))
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return tok, fmt.Errorf("store: revoke token %s: already revoked: %w", id, ErrConflict)
	}
	return tok, nil
}

// CountTokens counts every token ever created, revoked ones included.
func (t *Tx) CountTokens(ctx context.Context) (int, error) {
	var n int
	if err := t.tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM tokens").Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count tokens: %w", err)
	}
	return n, nil
}

// TokenBySecretHash finds a token by the hash of its secret.
func (s *Store) TokenBySecretHash(ctx context.Context, hash string) (Token, error) {
	tok, err := scanToken(s.read.QueryRowContext(ctx, "SELECT "+tokenColumns+" FROM tokens WHERE secret_hash = $1", hash))
	if err != nil {
		return Token{}, fmt.Errorf("store: find token: %w", mapErr(err))
	}
	return tok, nil
}

// Token returns one token by id.
func (s *Store) Token(ctx context.Context, id string) (Token, error) {
	tok, err := scanToken(s.read.QueryRowContext(ctx, "SELECT "+tokenColumns+" FROM tokens WHERE id = $1", id))
	if err != nil {
		return Token{}, fmt.Errorf("store: get token %s: %w", id, mapErr(err))
	}
	return tok, nil
}

// ListTokens returns every token, oldest first.
func (s *Store) ListTokens(ctx context.Context) ([]Token, error) {
	rows, err := s.read.QueryContext(ctx, "SELECT "+tokenColumns+" FROM tokens ORDER BY created_at, id")
	if err != nil {
		return nil, fmt.Errorf("store: list tokens: %w", err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		tok, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list tokens: %w", err)
		}
		out = append(out, tok)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list tokens: %w", err)
	}
	return out, nil
}
