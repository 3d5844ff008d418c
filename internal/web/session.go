package web

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
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

// session is one signed-in browser. It holds the principal (with the id
// of the token it signed in with, checked on every request), never the
// token's secret.
type session struct {
	principal auth.Principal
	csrf      string
	expires   time.Time

	mu    sync.Mutex
	flash string
}

// setFlash leaves a one-time message for the next page.
func (s *session) setFlash(msg string) {
	s.mu.Lock()
	s.flash = msg
	s.mu.Unlock()
}

// takeFlash returns and clears the one-time message.
func (s *session) takeFlash() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.flash
	s.flash = ""
	return m
}

// sessions keeps sessions in memory, keyed by the SHA-256 of their random
// 256-bit id.
type sessions struct {
	clock clock.Clock
	ttl   time.Duration

	mu   sync.Mutex
	byID map[string]*session
}

func newSessions(c clock.Clock, ttl time.Duration) *sessions {
	return &sessions{clock: c, ttl: ttl, byID: map[string]*session{}}
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

// create starts a session for p and returns its id.
func (s *sessions) create(p auth.Principal) (string, *session) {
	id := randomToken()
	now := s.clock.Now()
	sess := &session{principal: p, csrf: randomToken(), expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, old := range s.byID {
		if !now.Before(old.expires) {
			delete(s.byID, k)
		}
	}
	s.byID[sessionKey(id)] = sess
	return id, sess
}

// get returns the live session with id, or nil.
func (s *sessions) get(id string) *session {
	if id == "" {
		return nil
	}
	key := sessionKey(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.byID[key]
	if sess == nil {
		return nil
	}
	if !s.clock.Now().Before(sess.expires) {
		delete(s.byID, key)
		return nil
	}
	return sess
}

// remove ends the session with id.
func (s *sessions) remove(id string) {
	s.mu.Lock()
	delete(s.byID, sessionKey(id))
	s.mu.Unlock()
}

// liveSession returns the request's session while the token it signed in
// with is still active. A session whose token was revoked, has expired or
// no longer exists is ended, and its cookie deleted; the answer is then
// nil, as for a request without a session. An error means the token could
// not be checked: the session is kept, the request is not served.
func (c *Console) liveSession(w http.ResponseWriter, r *http.Request) (*session, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, nil
	}
	sess := c.sessions.get(ck.Value)
	if sess == nil {
		return nil, nil
	}
	tok, err := c.cfg.Auth.Get(r.Context(), sess.principal.TokenID)
	switch {
	case err == nil && tok.Status == tokenActive:
		return sess, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	c.sessions.remove(ck.Value)
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
	p, err := c.cfg.Auth.Authenticate(r.Context(), strings.TrimSpace(r.PostFormValue("token")))
	if err != nil {
		// A refused sign-in is recorded like a refused API request; the
		// presented token never is.
		if aerr := c.cfg.Audit.Record(r.Context(), audit.Entry{Actor: audit.Actor{ID: "anonymous", Name: "anonymous"}, Action: "auth.denied",
			Target: "console/signin", Outcome: audit.OutcomeDenied, Details: map[string]any{"reason": "unauthenticated", "remote": r.RemoteAddr}}); aerr != nil {
			c.log.Error("audit refused console sign-in", "err", aerr)
		}
		c.showSignIn(w, r, http.StatusUnauthorized, "That token is not valid: it may be mistyped, revoked or expired.")
		return
	}
	if err := c.cfg.Audit.Record(r.Context(), audit.Entry{Actor: auth.ActorOf(p), Action: "console.signin", Target: "console",
		Details: map[string]any{"remote": r.RemoteAddr}}); err != nil {
		c.log.Error("audit console sign-in", "err", err)
		c.renderPage(w, r, nil, http.StatusInternalServerError, "error", "Sign-in failed", errorPage{Message: "The sign-in could not be recorded.", Hint: "Try again; the server log has the details."})
		return
	}
	id, _ := c.sessions.create(p)
	setCookie(w, r, signInCookie, "", -1)
	setCookie(w, r, sessionCookie, id, int(c.cfg.SessionTTL/time.Second))
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

// signOut ends the session.
func (c *Console) signOut(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	ck, err := r.Cookie(sessionCookie)
	if err == nil {
		if sess := c.sessions.get(ck.Value); sess != nil {
			if !c.checkCSRF(r, sess) {
				c.renderPage(w, r, nil, http.StatusForbidden, "error", "Refused", errorPage{Message: "The form's security token is missing or stale.", Hint: "Reload the page and sign out again."})
				return
			}
			c.sessions.remove(ck.Value)
			if err := c.cfg.Audit.Record(r.Context(), audit.Entry{Actor: auth.ActorOf(sess.principal), Action: "console.signout", Target: "console"}); err != nil {
				c.log.Error("audit console sign-out", "err", err)
			}
		}
	}
	setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
}
