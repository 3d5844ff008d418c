package connector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/errs"
)

// DefaultMaxResponseBytes bounds a response body kept in memory.
const DefaultMaxResponseBytes = 10 << 20

// Request is one call through a connector.
type Request struct {
	Method string
	// Path is joined to the connector's base URL; it carries no scheme or host.
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte
	// IdempotencyKey, when set, is sent as the Idempotency-Key header.
	IdempotencyKey string
	// MaxResponseBytes bounds the body kept; the rest is discarded and
	// Truncated set. Defaults to 10 MiB.
	MaxResponseBytes int64
	// Actor is recorded in the call's audit record.
	Actor audit.Actor
	// AuditTarget overrides the audit record's target (a run's step).
	AuditTarget string
	// Redact, when set, removes secret values (a run's) from the audit
	// record: it is applied to each segment of the path and to the
	// diagnosis's message and hint.
	Redact func(string) string
	// AuditTo, when set, receives the call's audit record instead of the
	// audit log, for a caller that appends it in the transaction of its
	// own change (a run's step checkpoint). The caller must append it.
	AuditTo func(audit.Entry)
}

// Response is a call's answer.
type Response struct {
	Status    int           `json:"status"`
	Header    http.Header   `json:"headers"`
	Body      []byte        `json:"-"`
	Truncated bool          `json:"truncated,omitempty"`
	Evidence  *Evidence     `json:"evidence"`
	Duration  time.Duration `json:"-"`
}

// resolve joins a request path to the connector's base URL, refusing
// anything that would leave it.
func (c *client) resolve(path string, query url.Values) (*url.URL, error) {
	if path == "" {
		path = "/"
	}
	p, err := url.Parse(path)
	if err != nil || p.Scheme != "" || p.Host != "" || p.User != nil || strings.HasPrefix(path, "//") {
		return nil, &errs.Error{Kind: errs.Invalid, Code: "invalid_input", Field: "path", Message: fmt.Sprintf("%q must be a path, without scheme or host", path), Hint: "e.g. /users/42; the connector's URL supplies the rest", Op: "connector"}
	}
	for _, seg := range strings.Split(p.Path, "/") {
		if seg == ".." {
			return nil, &errs.Error{Kind: errs.Invalid, Code: "invalid_input", Field: "path", Message: fmt.Sprintf("%q climbs out of the connector's base path", path), Hint: "remove the '..' segments", Op: "connector"}
		}
	}
	u := *c.base
	u.Path = strings.TrimRight(c.base.Path, "/") + "/" + strings.TrimLeft(p.Path, "/")
	u.RawPath = ""
	q := p.Query()
	for k, vs := range query {
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	u.RawQuery = q.Encode()
	return &u, nil
}

// Do makes one request through the named connector. Every request is
// audited (connector, method, host, path without the query, status,
// duration and the handshake evidence; never bodies or secrets).
func (s *Service) Do(ctx context.Context, name string, req Request) (*Response, error) {
	start := s.clock.Now()
	resp, c, what, err := s.do(ctx, name, req)
	if c == nil {
		return nil, err
	}
	var ce *CallError
	if err != nil && !errors.As(err, &ce) {
		if errs.KindOf(err) == errs.Invalid {
			return nil, err
		}
		ce = c.diagnose(ctx, err, nil)
		err = ce
	}
	if s.auditCalls {
		// A call that failed because its context ended is audited all the same.
		if aerr := s.auditCall(context.WithoutCancel(ctx), c, req, what, resp, ce, s.clock.Now().Sub(start)); aerr != nil {
			return nil, errors.Join(err, aerr)
		}
	}
	return resp, err
}

// sent is what a request was, for its audit record: the method and the
// resolved path (never the query string).
type sent struct {
	method, path string
}

func (s *Service) do(ctx context.Context, name string, req Request) (*Response, *client, sent, error) {
	start := s.clock.Now()
	c, err := s.client(ctx, name)
	if err != nil {
		return nil, nil, sent{}, err
	}
	method := strings.ToUpper(req.Method)
	if method == "" {
		method = http.MethodGet
	}
	u, err := c.resolve(req.Path, req.Query)
	if err != nil {
		return nil, c, sent{method: method}, err
	}
	what := sent{method: method, path: u.Path}
	if ce := c.checkPolicy(c.currentPolicy()); ce != nil {
		return nil, c, what, ce
	}
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	var evidence *Evidence
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { evidence = c.evidenceFor(info.Conn) }}
	hreq, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, u.String(), body)
	if err != nil {
		return nil, c, what, &errs.Error{Kind: errs.Invalid, Code: "invalid_input", Field: "method", Message: err.Error(), Hint: "use an HTTP method such as GET or POST", Op: "connector"}
	}
	for k, vs := range req.Header {
		for _, v := range vs {
			hreq.Header.Add(k, v)
		}
	}
	for k, v := range c.headers {
		hreq.Header.Set(k, v)
	}
	if req.IdempotencyKey != "" {
		hreq.Header.Set("Idempotency-Key", req.IdempotencyKey)
	}
	if hreq.Header.Get("User-Agent") == "" {
		hreq.Header.Set("User-Agent", "trustflow")
	}
	applyAuth(hreq, c.conn.AuthType, c.settings, c.secrets)
	forms := c.secretForms
	if c.oauth != nil {
		tok, err := c.oauth.token(ctx)
		if err != nil {
			return nil, c, what, err
		}
		tok.SetAuthHeader(hreq)
		forms = c.formsWithToken(tok.AccessToken)
	}
	hresp, err := c.http.Do(hreq)
	if err != nil {
		return nil, c, what, c.withBudget(ctx, start, s.diagnoseCall(ctx, c, err, evidence))
	}
	// A client retired while this request was in flight closes the
	// connection it leaves idle (deferred first: it runs after the body's
	// Close).
	defer func() {
		if c.retired.Load() {
			c.transport.CloseIdleConnections()
		}
	}()
	defer hresp.Body.Close()
	limit := req.MaxResponseBytes
	if limit <= 0 {
		limit = DefaultMaxResponseBytes
	}
	data, err := io.ReadAll(io.LimitReader(hresp.Body, limit+1))
	if err != nil {
		return nil, c, what, c.diagnose(ctx, err, evidence)
	}
	// An upstream that echoes the request must not put a secret into
	// what is stored.
	data = redactResponse(forms, hresp.Header, data)
	resp := &Response{Status: hresp.StatusCode, Header: hresp.Header, Body: data, Evidence: evidence}
	if int64(len(data)) > limit {
		resp.Body, resp.Truncated = data[:limit], true
		// Drain a bounded amount more so the connection can be reused.
		_, _ = io.CopyN(io.Discard, hresp.Body, 1<<20)
	}
	if evidence == nil && hresp.TLS != nil {
		ev := (&connEvidence{}).finish(*hresp.TLS, s.clock.Now())
		resp.Evidence = ev
	}
	resp.Duration = s.clock.Now().Sub(start)
	return resp, c, what, nil
}

// diagnoseCall diagnoses a failed request. In TLS 1.3 the server judges
// our certificate after our side of the handshake is done, and its alert
// can be lost: to a reset when it closes with our request unread, or inside
// the HTTP/2 transport, which then reports only that the connection could
// not be established. A bare handshake, which sends nothing after it (as
// `connector test` does), reads the alert.
func (s *Service) diagnoseCall(ctx context.Context, c *client, err error, ev *Evidence) *CallError {
	ce := c.diagnose(ctx, err, ev)
	if (ce.Code != "connection_reset" && ce.Code != "call_failed") || ctx.Err() != nil {
		return ce
	}
	if probe := s.handshake(ctx, c); probe.Error != nil && strings.HasPrefix(probe.Error.Code, "server_rejected_") {
		return &CallError{Diagnosis: *probe.Error, Evidence: probe.Evidence, Err: err}
	}
	return ce
}

func (s *Service) auditCall(ctx context.Context, c *client, req Request, what sent, resp *Response, ce *CallError, d time.Duration) error {
	details := map[string]any{"connector": c.conn.Name, "method": what.method, "host": c.base.Host, "path": redactPath(what.path, req.Redact),
		"duration_ms": d.Milliseconds()}
	outcome := audit.OutcomeSuccess
	if resp != nil {
		details["status"] = resp.Status
		details["evidence"] = resp.Evidence
	}
	if ce != nil {
		outcome = audit.OutcomeFailure
		diag := ce.Diagnosis
		if req.Redact != nil {
			diag.Message, diag.Hint = req.Redact(diag.Message), req.Redact(diag.Hint)
		}
		details["error"] = diag
		if ce.Evidence != nil {
			details["evidence"] = ce.Evidence
		}
	}
	target := req.AuditTarget
	if target == "" {
		target = "connector/" + c.conn.Name
	}
	actor := req.Actor
	if actor.ID == "" {
		actor = audit.System
	}
	entry := audit.Entry{Actor: actor, Action: "connector.call", Target: target, Outcome: outcome, Details: details}
	if req.AuditTo != nil {
		req.AuditTo(entry)
		return nil
	}
	return s.audit.Record(ctx, entry)
}

// redactPath applies redact to each segment of a request path (a secret
// that is a whole segment is redacted, however short).
func redactPath(path string, redact func(string) string) string {
	if redact == nil {
		return path
	}
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		if seg != "" {
			segs[i] = redact(seg)
		}
	}
	return redact(strings.Join(segs, "/"))
}
