package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/store"
)

// Cookie names.
const (
	sessionCookie = "trustflow_session"
	signInCookie  = "trustflow_signin"
)

// touchEvery is how stale a session's last_seen may grow before a request
// records it again: often enough to tell an idle session from a used one,
// rarely enough that reading pages does not become a stream of writes.
const touchEvery = time.Minute

// session is one signed-in browser, as read from the database for one
// request. It holds the principal of the token it signed in with (checked
// on every request), never the token's secret, and is bound to the request
// that read it: its flash methods write with that request's context.
type session struct {
	ctx      context.Context
	sessions *sessions
	idHash   string

	principal auth.Principal
	// csrf is the session's form token, derived from the session id.
	csrf     string
	lastSeen time.Time
	// flash is the one-time message as read with the session.
	flash string
}

// setFlash leaves a one-time message for the next page. The change it
// reports has already committed, so a failure to store the message is
// logged, not returned.
func (s *session) setFlash(msg string) {
	if err := s.sessions.store.SetConsoleSessionFlash(s.ctx, s.idHash, msg); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.sessions.log.Error("console: store flash message", "err", err)
	}
}

// takeFlash returns and clears the one-time message. Of several requests
// that read the same message, only the one that clears it shows it; when
// it cannot be cleared it is kept for a later page.
func (s *session) takeFlash() string {
	msg := s.flash
	s.flash = ""
	if msg == "" {
		return ""
	}
	took, err := s.sessions.store.TakeConsoleSessionFlash(s.ctx, s.idHash, msg)
	if err != nil {
		s.sessions.log.Error("console: clear flash message", "err", err)
		return ""
	}
	if !took {
		return ""
	}
	return msg
}

// sessions keeps console sessions in the database, so that every node
// behind a load balancer knows them. A row is keyed by the SHA-256 of the
// session's random 256-bit id; the id itself lives only in the browser's
// cookie.
type sessions struct {
	store *store.Store
	clock clock.Clock
	ttl   time.Duration
	log   *slog.Logger
}

func newSessions(st *store.Store, c clock.Clock, ttl time.Duration, log *slog.Logger) *sessions {
	return &sessions{store: st, clock: c, ttl: ttl, log: log}
}

// randomToken returns 256 random bits, base64url-encoded.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}

func sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// csrfLabel separates the CSRF derivation from any other use of the id.
const csrfLabel = "trustflow console csrf v1"

// csrfToken derives a session's form token: HMAC-SHA256 keyed by the
// session id. Nothing is stored: a node that knows the cookie computes the
// same token; the database, which holds only the id's hash, cannot, and a
// leaked form token does not reveal the id.
func csrfToken(id string) string {
	m := hmac.New(sha256.New, []byte(id))
	m.Write([]byte(csrfLabel))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// create starts a session for p inside tx, so that it commits with its
// audit record, and returns its id. Expired sessions are swept on the way.
func (s *sessions) create(ctx context.Context, tx *store.Tx, p auth.Principal) (string, error) {
	id := randomToken()
	now := s.clock.Now().UTC().Truncate(time.Microsecond)
	err := tx.InsertConsoleSession(ctx, store.ConsoleSession{IDHash: sessionKey(id), TokenID: p.TokenID,
		CreatedAt: now, ExpiresAt: now.Add(s.ttl), LastSeen: now})
	if err != nil {
		return "", fmt.Errorf("web: start session: %w", err)
	}
	return id, nil
}

// get returns the live session with id, or nil. Its principal carries
// only the token id until liveSession has checked the token.
func (s *sessions) get(ctx context.Context, id string) (*session, error) {
	if id == "" {
		return nil, nil
	}
	key := sessionKey(id)
	row, err := s.store.ConsoleSession(ctx, key, s.clock.Now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("web: read session: %w", err)
	}
	return &session{ctx: ctx, sessions: s, idHash: key, principal: auth.Principal{TokenID: row.TokenID},
		csrf: csrfToken(id), lastSeen: row.LastSeen, flash: row.Flash}, nil
}

// end deletes the session with id. Ending one that already ended is not
// an error.
func (s *sessions) end(ctx context.Context, id string) error {
	err := s.store.InTx(ctx, func(tx *store.Tx) error { return tx.DeleteConsoleSession(ctx, sessionKey(id)) })
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("web: end session: %w", err)
	}
	return nil
}

// touch records that sess was used now, at most once every touchEvery.
// Failing to is logged: it must not refuse the request.
func (s *sessions) touch(ctx context.Context, sess *session) {
	now := s.clock.Now()
	if now.Sub(sess.lastSeen) < touchEvery {
		return
	}
	if err := s.store.TouchConsoleSession(ctx, sess.idHash, now); err != nil {
		s.log.Error("console: record session activity", "err", err)
	}
}

// liveSession returns the request's session while the token it signed in
// with is still active; the token is read from the database on every
// request, so a revocation on any node is seen by the next request on
// every node. A session whose token was revoked, has expired or no longer
// exists is ended; the cookie of a session that ended is deleted, and the
// answer is nil, as for a request without a session. An error means the
// session or its token could not be checked: the session is kept, the
// request is not served.
func (c *Console) liveSession(w http.ResponseWriter, r *http.Request) (*session, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, nil
	}
	sess, err := c.sessions.get(r.Context(), ck.Value)
	if err != nil {
		return nil, err
	}
	if sess == nil {
		// Signed out, expired, or ended with its token: the cookie is stale.
		setCookie(w, r, sessionCookie, "", -1)
		return nil, nil
	}
	tok, err := c.cfg.Auth.Get(r.Context(), sess.principal.TokenID)
	switch {
	case err == nil && tok.Status == tokenActive:
		sess.principal = auth.Principal{TokenID: tok.ID, Name: tok.Name, Role: tok.Role}
		c.sessions.touch(r.Context(), sess)
		return sess, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	if err := c.sessions.end(r.Context(), ck.Value); err != nil {
		return nil, err
	}
	setCookie(w, r, sessionCookie, "", -1)
	return nil, nil
}

// tokenActive is the status of a token that is neither revoked nor expired.
const tokenActive = "active"

// checkCSRF reports whether a POST carries its session's CSRF token. The
// form (multipart included) must already be parsed.
func (c *Console) checkCSRF(r *http.Request, sess *session) bool {
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) == 1
}

// setCookie sets a console cookie: HttpOnly, SameSite=Strict, Secure when
// the request came over TLS. maxAge < 0 deletes it.
func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// safeNext keeps a post-sign-in redirect inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return Prefix
	}
	return next
}

// signInForm shows the sign-in form. Its CSRF token is a random value also
// set in a short-lived cookie, so a foreign page cannot sign a browser in.
func (c *Console) signInForm(w http.ResponseWriter, r *http.Request) {
	c.showSignIn(w, r, http.StatusOK, "")
}

func (c *Console) showSignIn(w http.ResponseWriter, r *http.Request, status int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	tok := randomToken()
	setCookie(w, r, signInCookie, tok, 600)
	c.renderPage(w, r, nil, status, "signin", "Sign in", signInPage{CSRF: tok, Next: safeNext(r.FormValue("next")), Error: msg})
}

type signInPage struct {
	CSRF, Next, Error string
}

// signIn checks the token once and starts a session holding its principal.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	ck, err := r.Cookie(signInCookie)
	got := r.PostFormValue("csrf")
	if err != nil || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(ck.Value)) != 1 {
		w.Header().Set("Cache-Control", "no-store")
		c.renderPage(w, r, nil, http.StatusForbidden, "error", "Refused", errorPage{Message: "The sign-in form's security token is missing or stale.", Hint: "Reload the sign-in page and try again."})
		return
	}
	if c.limited(w, r, "console/signin") {
		return
	}
	p, err := c.cfg.Auth.Authenticate(r.Context(), strings.TrimSpace(r.PostFormValue("token")))
	if err != nil {
		// A refused sign-in is recorded like a refused API request (and
		// counts against the same per-source limit); the presented token
		// never is.
		c.refused(r, "unauthenticated", audit.Entry{Actor: audit.Actor{ID: "anonymous", Name: "anonymous"}, Action: "auth.denied",
			Target: "console/signin", Outcome: audit.OutcomeDenied, Details: map[string]any{"reason": "unauthenticated", "cause": auth.DenyReason(err), "remote": r.RemoteAddr}})
		c.showSignIn(w, r, http.StatusUnauthorized, "That token is not valid: it may be mistyped, revoked or expired.")
		return
	}
	// The session and its audit record commit together.
	var id string
	err = c.cfg.Store.InTx(r.Context(), func(tx *store.Tx) error {
		var err error
		if id, err = c.sessions.create(r.Context(), tx, p); err != nil {
			return err
		}
		_, err = c.cfg.Audit.Append(r.Context(), tx, audit.Entry{Actor: auth.ActorOf(p), Action: "console.signin", Target: "console",
			Details: map[string]any{"remote": r.RemoteAddr}})
		return err
	})
	if err != nil {
		c.log.Error("console sign-in", "err", err)
		c.renderPage(w, r, nil, http.StatusInternalServerError, "error", "Sign-in failed", errorPage{Message: "The sign-in could not be recorded.", Hint: "Try again; the server log has the details."})
		return
	}
	setCookie(w, r, signInCookie, "", -1)
	setCookie(w, r, sessionCookie, id, int(c.cfg.SessionTTL/time.Second))
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

// signOut ends the session on every node: its row is deleted in the same
// transaction as the sign-out's audit record.
func (c *Console) signOut(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if ck, err := r.Cookie(sessionCookie); err == nil {
		sess, err := c.liveSession(w, r)
		if err != nil {
			c.signOutFailed(w, r, err)
			return
		}
		if sess != nil {
			if !c.checkCSRF(r, sess) {
				c.renderPage(w, r, nil, http.StatusForbidden, "error", "Refused", errorPage{Message: "The form's security token is missing or stale.", Hint: "Reload the page and sign out again."})
				return
			}
			err := c.cfg.Store.InTx(r.Context(), func(tx *store.Tx) error {
				if err := tx.DeleteConsoleSession(r.Context(), sessionKey(ck.Value)); err != nil {
					return err
				}
				_, err := c.cfg.Audit.Append(r.Context(), tx, audit.Entry{Actor: auth.ActorOf(sess.principal), Action: "console.signout", Target: "console"})
				return err
			})
			// A session another request ended meanwhile is signed out already.
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				c.signOutFailed(w, r, err)
				return
			}
		}
	}
	setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
}

// signOutFailed answers a sign-out that could not be carried out; the
// session is unchanged.
func (c *Console) signOutFailed(w http.ResponseWriter, r *http.Request, err error) {
	c.log.Error("console sign-out", "err", err)
	c.renderPage(w, r, nil, http.StatusServiceUnavailable, "error", "Sign-out failed", errorPage{Message: "The sign-out could not be carried out; you are still signed in.",
		Hint: "Try again in a moment; the server log has the details."})
}
