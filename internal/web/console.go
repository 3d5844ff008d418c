// Package web owns trustflow's web console: server-rendered HTML pages
// under /ui/ for the trust store, connectors and the endpoint probe, flows,
// runs, the audit log and tokens. It signs people in with an API token,
// keeps their sessions in the database, so that any node behind a load
// balancer serves them (each ends at sign-out, and as soon as its token is
// revoked or expires, on every node), guards every form with a per-session
// CSRF token, and acts only through the same domain services and role
// permissions as the REST API, so every change it makes is audited with the
// signed-in principal.
package web

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/probe"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/truststore"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the console's pages live.
const Prefix = "/ui/"

// Config wires the console to the domain services. Auth, Audit, Trust,
// Connectors and Engine are required.
type Config struct {
	Auth       *auth.Service
	Audit      *audit.Log
	Trust      *truststore.Service
	Connectors *connector.Service
	Engine     *engine.Engine
	// Store keeps the console sessions. Defaults to the store Auth keeps
	// its tokens in.
	Store *store.Store
	// Prober runs the endpoint probe page. Defaults to a prober over Trust,
	// Audit and Clock.
	Prober *probe.Prober
	// API serves every request outside the console ("/" and /ui/). Nil
	// answers those with 404.
	API http.Handler
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// SessionTTL is how long a sign-in lasts. Defaults to 8h.
	SessionTTL time.Duration
	// Refusals is the API's table of refused requests per source (the API
	// server); nil records each refusal directly.
	Refusals Refusals
	// MaxBodyBytes bounds form bodies, uploads included. Defaults to 1 MiB.
	MaxBodyBytes int64
}

// withDefaults fills in the zero values.
func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 8 * time.Hour
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	return c
}

// Console is the web console.
type Console struct {
	cfg      Config
	log      *slog.Logger
	sessions *sessions
	pages    map[string]*template.Template
	mux      *http.ServeMux
}

// New builds the console and its routes.
func New(cfg Config) (*Console, error) {
	cfg = cfg.withDefaults()
	if cfg.Auth == nil || cfg.Audit == nil || cfg.Trust == nil || cfg.Connectors == nil || cfg.Engine == nil {
		return nil, errors.New("web: Auth, Audit, Trust, Connectors and Engine are required")
	}
	if cfg.Store == nil {
		cfg.Store = cfg.Auth.Store()
	}
	var err error
	if cfg.Prober == nil {
		if cfg.Prober, err = probe.New(probe.Config{Trust: cfg.Trust, Audit: cfg.Audit, Clock: cfg.Clock}); err != nil {
			return nil, fmt.Errorf("web: prober: %w", err)
		}
	}
	c := &Console{cfg: cfg, log: cfg.Logger, sessions: newSessions(cfg.Store, cfg.Clock, cfg.SessionTTL, cfg.Logger), mux: http.NewServeMux()}
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("web: static files: %w", err)
	}
	c.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticHandler(static)))
	c.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
	})
	c.mux.HandleFunc("GET /ui/signin", c.signInForm)
	c.mux.HandleFunc("POST /ui/signin", c.signIn)
	c.mux.HandleFunc("POST /ui/signout", c.signOut)
	for _, rt := range c.routes() {
		c.mux.Handle(rt.pattern, c.guard(rt))
	}
	c.mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		c.renderStatus(w, r, http.StatusNotFound, "Not found", "There is no page at "+r.URL.Path+".")
	})
	return c, nil
}

// Handler serves the console at "/" and under /ui/, and hands every other
// request (the API, webhooks, health and metrics) to Config.API.
func (c *Console) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, Prefix) || r.URL.Path == "/ui" {
			if r.URL.Path == "/ui" {
				http.Redirect(w, r, Prefix, http.StatusSeeOther)
				return
			}
			c.serve(w, r)
			return
		}
		if c.cfg.API == nil {
			http.NotFound(w, r)
			return
		}
		c.cfg.API.ServeHTTP(w, r)
	})
}

// serve sets the security headers, bounds the body and dispatches.
func (c *Console) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	r.Body = http.MaxBytesReader(w, r.Body, c.cfg.MaxBodyBytes)
	c.mux.ServeHTTP(w, r)
}

func staticHandler(static fs.FS) http.Handler {
	files := http.FileServerFS(static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// route is one console page or action and the permission it needs.
type route struct {
	pattern string
	perm    auth.Permission
	handle  func(w http.ResponseWriter, r *http.Request, rq *request)
}

// request is what a guarded handler knows about the caller.
type request struct {
	p    auth.Principal
	sess *session
}

// actor is the audit actor of the signed-in principal.
func (rq *request) actor() audit.Actor { return auth.ActorOf(rq.p) }

func (c *Console) routes() []route {
	var rs []route
	rs = append(rs, c.dashboardRoutes()...)
	rs = append(rs, c.truststoreRoutes()...)
	rs = append(rs, c.connectorRoutes()...)
	rs = append(rs, c.probeRoutes()...)
	rs = append(rs, c.flowRoutes()...)
	rs = append(rs, c.auditRoutes()...)
	rs = append(rs, c.tokenRoutes()...)
	return rs
}

// guard resolves the session (ending it when its token is no longer
// active), checks the CSRF token of a POST and the principal's role, then
// runs the handler.
func (c *Console) guard(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		sess, err := c.liveSession(w, r)
		if err != nil {
			c.log.Error("console session check failed", "path", r.URL.Path, "err", err)
			c.renderPage(w, r, nil, http.StatusServiceUnavailable, "error", "Unavailable", errorPage{Message: "Your sign-in could not be checked right now; nothing was changed.",
				Hint: "Try again in a moment."})
			return
		}
		if sess == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/ui/signin?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.renderStatus(w, r, http.StatusForbidden, "Signed out", "Your session has ended. Sign in again.")
			return
		}
		rq := &request{p: sess.principal, sess: sess}
		if r.Method == http.MethodPost {
			if err := parseForm(r, c.cfg.MaxBodyBytes); err != nil {
				c.renderError(w, r, rq, err)
				return
			}
		}
		if r.Method == http.MethodPost && !c.checkCSRF(r, sess) {
			c.deny(r, rq, rt, "csrf")
			c.renderPage(w, r, rq, http.StatusForbidden, "error", "Refused", errorPage{Message: "The form's security token is missing or stale; nothing was changed.", Hint: "Reload the page and submit the form again."})
			return
		}
		if !rq.p.Role.Can(rt.perm) {
			c.deny(r, rq, rt, "forbidden")
			c.renderPage(w, r, rq, http.StatusForbidden, "error", "Forbidden", errorPage{Message: "Role " + string(rq.p.Role) + " may not " + string(rt.perm) + ".",
				Hint: "Ask an admin for a token with a role that has " + string(rt.perm) + "."})
			return
		}
		r = r.WithContext(auth.WithPrincipal(r.Context(), rq.p))
		rt.handle(w, r, rq)
	})
}

// deny records a refused console request, as the API does.
func (c *Console) deny(r *http.Request, rq *request, rt route, reason string) {
	c.refused(r, reason, audit.Entry{Actor: rq.actor(), Action: "auth.denied", Target: rt.pattern,
		Outcome: audit.OutcomeDenied, Details: map[string]any{"reason": reason, "permission": string(rt.perm), "remote": r.RemoteAddr, "via": "console"}})
}

// Refusals is the API server's per-source table of refused requests, which
// the console shares: a source over its refusals is answered 429 before any
// work, and refusals are recorded aggregated.
type Refusals interface {
	RefusalLimited(r *http.Request, route string) error
	Refused(r *http.Request, reason string, e audit.Entry)
}

// refused records a refusal through the shared table, or directly without
// one.
func (c *Console) refused(r *http.Request, reason string, e audit.Entry) {
	if c.cfg.Refusals != nil {
		c.cfg.Refusals.Refused(r, reason, e)
		return
	}
	if err := c.cfg.Audit.Record(r.Context(), e); err != nil {
		c.log.Error("audit refused console request", "err", err)
	}
}

// limited answers 429 when r's source is over its refusals.
func (c *Console) limited(w http.ResponseWriter, r *http.Request, route string) bool {
	if c.cfg.Refusals == nil {
		return false
	}
	err := c.cfg.Refusals.RefusalLimited(r, route)
	if err == nil {
		return false
	}
	e, _ := errs.As(err)
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int64((e.RetryAfter+time.Second-1)/time.Second)))
	}
	c.renderStatus(w, r, http.StatusTooManyRequests, "Too many refused requests", e.Public()+". "+e.Hint)
	return true
}

// parseForm parses a urlencoded or multipart body.
func parseForm(r *http.Request, maxBytes int64) error {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		return r.ParseMultipartForm(maxBytes)
	}
	return r.ParseForm()
}

// formFile returns the content of an uploaded file, or nil when the field
// is empty.
func formFile(r *http.Request, field string) ([]byte, error) {
	if r.MultipartForm == nil || len(r.MultipartForm.File[field]) == 0 {
		return nil, nil
	}
	f, err := r.MultipartForm.File[field][0].Open()
	if err != nil {
		return nil, fmt.Errorf("web: open upload %s: %w", field, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("web: read upload %s: %w", field, err)
	}
	return b, nil
}
