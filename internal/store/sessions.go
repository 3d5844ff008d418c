package store

import (
	"context"
	"fmt"
	"time"
)

// ConsoleSession is a signed-in web console browser, shared by every node.
// IDHash is the SHA-256 (hex) of the random session id the browser holds;
// the id itself is never stored.
type ConsoleSession struct {
	IDHash string
	// TokenID is the API token the session signed in with.
	TokenID   string
	CreatedAt time.Time
	ExpiresAt time.Time
	LastSeen  time.Time
	// Flash is a one-time message for the next page ("" when none).
	Flash string
}

const consoleSessionColumns = "id_hash, token_id, created_at, expires_at, last_seen, flash"

// InsertConsoleSession stores a new session. It first deletes every session
// expired by the new one's CreatedAt, so that sign-ins sweep the table and
// abandoned sessions do not pile up.
func (t *Tx) InsertConsoleSession(ctx context.Context, s ConsoleSession) error {
	if _, err := t.PurgeExpiredConsoleSessions(ctx, s.CreatedAt); err != nil {
		return err
	}
	_, err := t.tx.ExecContext(ctx, "INSERT INTO console_sessions ("+consoleSessionColumns+") VALUES ($1, $2, $3, $4, $5, $6)",
		s.IDHash, s.TokenID, micros(s.CreatedAt), micros(s.ExpiresAt), micros(s.LastSeen), s.Flash)
	if err != nil {
		return fmt.Errorf("store: insert console session: %w", mapErr(err))
	}
	return nil
}

// PurgeExpiredConsoleSessions deletes every session expired at now and
// reports how many it deleted.
func (t *Tx) PurgeExpiredConsoleSessions(ctx context.Context, now time.Time) (int64, error) {
	res, err := t.tx.ExecContext(ctx, "DELETE FROM console_sessions WHERE expires_at <= $1", micros(now))
	if err != nil {
		return 0, fmt.Errorf("store: purge expired console sessions: %w", mapErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: purge expired console sessions: %w", err)
	}
	return n, nil
}

// DeleteConsoleSession ends one session; ErrNotFound when it had already
// ended.
func (t *Tx) DeleteConsoleSession(ctx context.Context, idHash string) error {
	res, err := t.tx.ExecContext(ctx, "DELETE FROM console_sessions WHERE id_hash = $1", idHash)
	if err != nil {
		return fmt.Errorf("store: delete console session: %w", mapErr(err))
	}
	return expectOne(res, "delete console session")
}

// DeleteConsoleSessionsOfToken ends every session signed in with the token
// and reports how many there were.
func (t *Tx) DeleteConsoleSessionsOfToken(ctx context.Context, tokenID string) (int64, error) {
	res, err := t.tx.ExecContext(ctx, "DELETE FROM console_sessions WHERE token_id = $1", tokenID)
	if err != nil {
		return 0, fmt.Errorf("store: delete console sessions of token %s: %w", tokenID, mapErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: delete console sessions of token %s: %w", tokenID, err)
	}
	return n, nil
}

// ConsoleSession reads the session whose id hashes to idHash, if it is
// still live at now: a missing session is ErrNotFound, and so is an expired
// one, which is deleted on the way.
func (s *Store) ConsoleSession(ctx context.Context, idHash string, now time.Time) (ConsoleSession, error) {
	var cs ConsoleSession
	var created, expires, seen int64
	err := s.read.QueryRowContext(ctx, "SELECT "+consoleSessionColumns+" FROM console_sessions WHERE id_hash = $1", idHash).
		Scan(&cs.IDHash, &cs.TokenID, &created, &expires, &seen, &cs.Flash)
	if err != nil {
		return ConsoleSession{}, fmt.Errorf("store: get console session: %w", mapErr(err))
	}
	cs.CreatedAt, cs.ExpiresAt, cs.LastSeen = fromMicros(created), fromMicros(expires), fromMicros(seen)
	if !now.Before(cs.ExpiresAt) {
		if _, err := s.write.ExecContext(ctx, "DELETE FROM console_sessions WHERE id_hash = $1 AND expires_at <= $2", idHash, micros(now)); err != nil {
			return ConsoleSession{}, fmt.Errorf("store: delete expired console session: %w", mapErr(err))
		}
		return ConsoleSession{}, fmt.Errorf("store: get console session: expired: %w", ErrNotFound)
	}
	return cs, nil
}

// TouchConsoleSession records that the session was seen at at (never moving
// last_seen back).
func (s *Store) TouchConsoleSession(ctx context.Context, idHash string, at time.Time) error {
	if _, err := s.write.ExecContext(ctx, "UPDATE console_sessions SET last_seen = $1 WHERE id_hash = $2 AND last_seen < $1", micros(at), idHash); err != nil {
		return fmt.Errorf("store: touch console session: %w", mapErr(err))
	}
	return nil
}

// SetConsoleSessionFlash leaves msg for the session's next page, replacing
// any message not yet shown. ErrNotFound when the session has ended.
func (s *Store) SetConsoleSessionFlash(ctx context.Context, idHash, msg string) error {
	res, err := s.write.ExecContext(ctx, "UPDATE console_sessions SET flash = $1 WHERE id_hash = $2", msg, idHash)
	if err != nil {
		return fmt.Errorf("store: set console session flash: %w", mapErr(err))
	}
	return expectOne(res, "set console session flash")
}

// TakeConsoleSessionFlash clears the session's message if it is still msg
// and reports whether it did: of several requests that read the same
// message, exactly one takes it, and a message set in between is kept.
func (s *Store) TakeConsoleSessionFlash(ctx context.Context, idHash, msg string) (bool, error) {
	if msg == "" {
		return false, nil
	}
	res, err := s.write.ExecContext(ctx, "UPDATE console_sessions SET flash = '' WHERE id_hash = $1 AND flash = $2", idHash, msg)
	if err != nil {
		return false, fmt.Errorf("store: take console session flash: %w", mapErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: take console session flash: %w", err)
	}
	return n == 1, nil
}
