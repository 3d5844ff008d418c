// Package api owns trustflow's HTTP surface: the REST API under /api/v1/,
// its OpenAPI document, authentication and authorisation of every request,
// the JSON error format, /metrics and the health endpoints.
package api

import (
	"context"
	"crypto/fips140"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/custody"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/probe"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/truststore"
)

// BuildInfo describes the running binary.
type BuildInfo struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
}

// Config wires the API to the domain services. Logger defaults to
// slog.Default(), MaxBodyBytes to 1 MiB, Registry to a fresh registry.
type Config struct {
	Store        *store.Store
	Auth         *auth.Service
	Audit        *audit.Log
	Logger       *slog.Logger
	Build        BuildInfo
	FIPSRequired bool
	MaxBodyBytes int64
	Registry     *prometheus.Registry
	// Trust is the trust store; its routes exist only when it is set.
	Trust *truststore.Service
	// RotateKEK performs `kek rotate`; nil answers 501.
	RotateKEK KEKRotator
	// KEKStatus answers GET /api/v1/kek; nil answers 501.
	KEKStatus func(ctx context.Context) (custody.Status, error)
	// KeysReady reports whether this node holds the active key-encryption
	// key; /readyz answers 503 while it returns an error. Optional.
	KeysReady func() error
	// Connectors is the connector service; its routes exist only when set.
	Connectors *connector.Service
	// Probe runs endpoint probes; its route exists only when it is set.
	Probe *probe.Prober
	// Engine runs flows; its routes exist only when set.
	Engine *engine.Engine
	// Policy is the egress and TLS policy; its routes exist only when set.
	Policy *policy.Service
	// PolicyCheck lists what a policy breaks, for GET /api/v1/policy/check.
	PolicyCheck func(ctx context.Context, p *policy.Policy) ([]policy.Violation, error)
	// Refusals bounds refused requests per source and how they are
	// audited; its zero value means every default.
	Refusals RefusalConfig
	// MaxWait caps ?wait= on run starts and webhooks. Defaults to 5m.
	MaxWait time.Duration
	// WriteTimeout is the write deadline of an answer that waits (?wait
	// adds it to the wait) and of each write of a streamed answer (audit
	// export, KEK rotation progress), so a client that stops reading is
	// dropped. Defaults to 30s.
	WriteTimeout time.Duration
	// MetricsAuth makes /metrics require a valid token (the system:read
	// permission, which every role has).
	MetricsAuth bool
	// Clock defaults to the wall clock.
	Clock clock.Clock
}

// Server is the HTTP API.
type Server struct {
	cfg      Config
	log      *slog.Logger
	refusals *refusals
	routes   []Route
	mux      *http.ServeMux
	metrics  *metrics
	handler  http.Handler
}

// Route is one API endpoint: what it serves, who may call it, and how it is
// documented in the OpenAPI document.
type Route struct {
	Method string
	Path   string
	// Perm is the permission required; empty with Public false means any
	// authenticated principal.
	Perm auth.Permission
	// Public routes need no token.
	Public bool
	// Doc is the route's OpenAPI operation.
	Doc     Operation
	handler handlerFunc
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// New builds the API server and its routes.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 5 * time.Minute
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	s.refusals = newRefusals(cfg.Refusals, cfg.Clock, cfg.Audit, cfg.Logger)
	s.metrics = newMetrics(cfg.Registry, cfg.Build, fips140.Enabled())
	s.routes = s.buildRoutes()
	for _, rt := range s.routes {
		s.mux.Handle(rt.Method+" "+rt.Path, s.wrap(rt))
	}
	s.mux.Handle("/", s.wrap(Route{handler: s.unmatched, Public: true}))
	s.handler = s.observe(s.mux)
	return s
}

// unmatched answers a request no route serves: 405 with Allow when the path
// exists for other methods, else 404.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request) error {
	paths := http.NewServeMux()
	seen := map[string]bool{}
	for _, rt := range s.routes {
		if !seen[rt.Path] {
			seen[rt.Path] = true
			paths.HandleFunc(rt.Path, func(http.ResponseWriter, *http.Request) {})
		}
	}
	if _, pattern := paths.Handler(r); pattern != "" {
		var allow []string
		for _, rt := range s.routes {
			if rt.Path == pattern {
				allow = append(allow, rt.Method)
			}
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		return &errs.Error{Kind: errs.Invalid, Code: codeMethodNotAllowed, Message: fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path), Hint: "use " + strings.Join(allow, " or ")}
	}
	return &errs.Error{Kind: errs.NotFound, Code: "not_found", Message: "no endpoint " + r.Method + " " + r.URL.Path, Hint: "the API lives under /api/v1/; see /api/v1/openapi.json"}
}

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Start begins writing the aggregated auth.denied records every
// Refusals.Interval.
func (s *Server) Start(ctx context.Context) error {
	s.refusals.start()
	return nil
}

// Stop ends that loop and writes the refusals not yet recorded. Call it
// after the HTTP server has shut down and before the database closes. It is
// idempotent.
func (s *Server) Stop() { s.refusals.close() }

// Routes returns the registered routes (for documentation and tests).
func (s *Server) Routes() []Route { return s.routes }

// Register adds routes contributed by other parts of the server. It must be
// called before Handler is used to serve.
func (s *Server) Register(routes ...Route) {
	for _, rt := range routes {
		s.routes = append(s.routes, rt)
		s.mux.Handle(rt.Method+" "+rt.Path, s.wrap(rt))
	}
}

func (s *Server) buildRoutes() []Route {
	var rs []Route
	rs = append(rs, s.systemRoutes()...)
	rs = append(rs, s.tokenRoutes()...)
	rs = append(rs, s.auditRoutes()...)
	rs = append(rs, s.truststoreRoutes()...)
	rs = append(rs, s.connectorRoutes()...)
	rs = append(rs, s.probeRoutes()...)
	rs = append(rs, s.policyRoutes()...)
	rs = append(rs, s.flowRoutes()...)
	return rs
}

type ctxKey int

const requestIDKey ctxKey = iota

func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

// RequestID returns the request's id.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// statusWriter records the status code written. When the answer starts it
// sets the connection's write deadline to writeTimeout from then: however
// long the handler worked, a client that does not read the answer is
// dropped that long after it starts.
type statusWriter struct {
	http.ResponseWriter
	status       int
	writeTimeout time.Duration
}

func (w *statusWriter) start(code int) {
	w.status = code
	if w.writeTimeout > 0 {
		_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.writeTimeout)) // ErrNotSupported only off a real connection
	}
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.start(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.start(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// deadlineWriter gives each write to a streamed answer its own write
// deadline, timeout from the write's start.
type deadlineWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout)) // ErrNotSupported only off a real connection
	return d.w.Write(p)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// observe assigns a request id, recovers panics, bounds bodies, and records
// metrics and a log line for every request.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := newRequestID()
		w.Header().Set("X-Request-Id", id)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		sw := &statusWriter{ResponseWriter: w, writeTimeout: s.cfg.WriteTimeout}
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, id))
		r.Body = http.MaxBytesReader(sw, r.Body, s.cfg.MaxBodyBytes)
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("panic serving request", "request_id", id, "method", r.Method, "path", r.URL.Path, "panic", p)
				if sw.status == 0 {
					s.writeError(sw, r, &errs.Error{Kind: errs.Internal, Code: "internal", Message: "internal error", Hint: "the server log has the details under this request id"})
				}
			}
			route := r.Pattern
			if route == "" || route == "/" {
				route = "unmatched"
			}
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			s.metrics.observe(route, r.Method, status, time.Since(start))
			attrs := []any{"request_id", id, "method", r.Method, "route", route, "status", status, "duration_ms", time.Since(start).Milliseconds()}
			if p, ok := auth.PrincipalFrom(r.Context()); ok {
				attrs = append(attrs, "principal", p.TokenID)
			}
			s.log.Info("http request", attrs...)
		}()
		next.ServeHTTP(sw, r)
	})
}

// wrap authenticates and authorises the request for rt, runs its handler
// and maps its error.
func (s *Server) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A source over its refusals is answered before any work is done
		// for it, with a token or without.
		if err := s.refusals.limited(sourceOf(r, s.cfg.Refusals.TrustedProxies), rt.Method+" "+rt.Path); err != nil {
			s.writeError(w, r, err)
			return
		}
		if !rt.Public {
			p, err := s.authenticate(r)
			if err != nil && !errors.Is(err, auth.ErrUnauthenticated) {
				// The token could not be checked (the database did not
				// answer): that is the server's fault, not the caller's.
				s.writeError(w, r, err)
				return
			}
			if err != nil {
				s.deny(r, rt, audit.Actor{ID: "anonymous", Name: "anonymous"}, "unauthenticated", err)
				w.Header().Set("WWW-Authenticate", `Bearer realm="trustflow"`)
				s.writeError(w, r, errUnauthenticated(err))
				return
			}
			if rt.Perm != "" && !p.Role.Can(rt.Perm) {
				s.deny(r, rt, auth.ActorOf(p), "forbidden", nil)
				s.writeError(w, r, &errs.Error{Kind: errs.Forbidden, Code: "forbidden", Message: "role " + string(p.Role) + " may not " + string(rt.Perm), Hint: "ask an admin for a token with a role that has " + string(rt.Perm) + " (" + rolesWith(rt.Perm) + ")"})
				return
			}
			// Store the principal on the request the mux handed us so that
			// the outer middleware can log it.
			*r = *r.WithContext(auth.WithPrincipal(r.Context(), p))
		}
		q, err := parseQuery(r.URL.RawQuery, rt.Doc.Query)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if err := rt.handler(w, r.WithContext(withQuery(r.Context(), q))); err != nil {
			s.writeError(w, r, err)
		}
	})
}

func rolesWith(p auth.Permission) string {
	var names []string
	for _, r := range auth.Roles {
		if r.Can(p) {
			names = append(names, string(r))
		}
	}
	return strings.Join(names, ", ")
}

func (s *Server) authenticate(r *http.Request) (auth.Principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return auth.Principal{}, auth.Unauthenticated(auth.ReasonNoCredentials, "no Authorization header")
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return auth.Principal{}, auth.Unauthenticated(auth.ReasonNotBearer, "authorization scheme is not Bearer")
	}
	return s.cfg.Auth.Authenticate(r.Context(), strings.TrimSpace(tok))
}

// deny counts a refused request against its source's limit and audits it:
// at once as its own auth.denied record when the source was quiet, else in
// the source's aggregated record (see RefusalConfig). The presented token is
// never recorded.
func (s *Server) deny(r *http.Request, rt Route, actor audit.Actor, reason string, cause error) {
	src := sourceOf(r, s.cfg.Refusals.TrustedProxies)
	details := map[string]any{"reason": reason, "method": r.Method, "route": rt.Path, "remote": r.RemoteAddr, "source": src}
	if rt.Perm != "" {
		details["permission"] = string(rt.Perm)
	}
	if cause != nil {
		details["cause"] = publicAuthCause(cause)
	}
	s.refusals.refuse(r.Context(), src, reason, audit.Entry{Actor: actor, Action: "auth.denied", Target: rt.Method + " " + rt.Path, Outcome: audit.OutcomeDenied, Details: details})
}

// publicAuthCause is an authentication failure's reason, safe to store:
// never the token.
func publicAuthCause(err error) string { return auth.DenyReason(err) }

// writeError sends err as the JSON error body, logging its internal cause.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := toAPIError(err)
	id := RequestID(r.Context())
	if e.Status >= 500 {
		s.log.Error("request failed", "request_id", id, "method", r.Method, "path", r.URL.Path, "kind", e.Kind.String(), "err", err)
	} else if e.Err != nil {
		s.log.Debug("request refused", "request_id", id, "code", e.Code, "err", e.Err)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfter(e.RetryAfter))
	}
	writeJSON(w, e.Status, errorBody{Error: errorDetail{Code: e.Code, Message: e.Public(), Hint: e.Hint, Field: e.Field,
		RequestID: id, Problems: wireProblems(e.Problems), UsedBy: e.UsedBy}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the status is sent; a failed write means the client left
}

// principal returns the request's authenticated principal.
func principal(r *http.Request) auth.Principal {
	p, _ := auth.PrincipalFrom(r.Context())
	return p
}

func goVersion() string { return runtime.Version() }
