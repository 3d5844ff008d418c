package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/flow"
)

// view is what every page template receives.
type view struct {
	Title     string
	Principal *auth.Principal
	CSRF      string
	Flash     string
	Nav       []navItem
	// Refresh reloads the page after this many seconds when > 0.
	Refresh int
	Page    any
}

// Can reports whether the signed-in principal holds perm; templates use it
// to offer only the actions the role may take.
func (v view) Can(perm string) bool {
	return v.Principal != nil && v.Principal.Role.Can(auth.Permission(perm))
}

type navItem struct {
	Href, Label string
	Current     bool
}

var navigation = []struct {
	href, label string
	perm        auth.Permission
}{
	{"/ui/", "Dashboard", auth.PermSystemRead},
	{"/ui/cas", "CAs", auth.PermCAsRead},
	{"/ui/identities", "Identities", auth.PermIdentitiesRead},
	{"/ui/connectors", "Connectors", auth.PermConnectorsRead},
	{"/ui/flows", "Flows", auth.PermFlowsRead},
	{"/ui/runs", "Runs", auth.PermRunsRead},
	{"/ui/audit", "Audit", auth.PermAuditRead},
	{"/ui/tokens", "Tokens", auth.PermTokensWrite},
}

func navFor(p auth.Principal, current string) []navItem {
	var out []navItem
	for _, n := range navigation {
		if !p.Role.Can(n.perm) {
			continue
		}
		cur := current == n.href || (n.href != "/ui/" && strings.HasPrefix(current, n.href))
		out = append(out, navItem{Href: n.href, Label: n.label, Current: cur})
	}
	return out
}

var funcs = template.FuncMap{
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		case *time.Time:
			if v == nil || v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		}
		return "—"
	},
	"json": func(v any) string {
		if v == nil {
			return ""
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	},
	"rawjson": func(b json.RawMessage) string {
		var buf bytes.Buffer
		if err := json.Indent(&buf, b, "", "  "); err != nil {
			return string(b)
		}
		return buf.String()
	},
	"join":  strings.Join,
	"short": func(s string) string { return shortHex(s) },
	"ms":    func(n int64) string { return (time.Duration(n) * time.Millisecond).String() },
	"deref": func(b *bool) bool { return b != nil && *b },
	"isnil": func(b *bool) bool { return b == nil },
	// fieldIs reports whether a refused form's error names field.
	"fieldIs": func(fe *formError, field string) bool { return fe != nil && fe.Field == field },
}

// shortHex abbreviates a long fingerprint for tables.
func shortHex(s string) string {
	if len(s) <= 16 {
		return s
	}
	return s[:16] + "…"
}

// parsePages parses the layout with each page template.
func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("web: parse layout: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("web: list templates: %w", err)
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		if path.Base(n) == "layout.html" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, fmt.Errorf("web: parse %s: %w", n, err)
		}
		pages[strings.TrimSuffix(path.Base(n), ".html")] = t
	}
	return pages, nil
}

// renderPage renders page name inside the layout. rq is nil on pages shown
// before sign-in.
func (c *Console) renderPage(w http.ResponseWriter, r *http.Request, rq *request, status int, name, title string, data any) {
	v := view{Title: title, Page: data}
	if rq != nil {
		p := rq.p
		v.Principal = &p
		v.CSRF = rq.sess.csrf
		v.Flash = rq.sess.takeFlash()
		v.Nav = navFor(p, r.URL.Path)
	}
	if rf, ok := data.(interface{ refresh() int }); ok {
		v.Refresh = rf.refresh()
	}
	t, ok := c.pages[name]
	if !ok {
		c.log.Error("console page template missing", "page", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		c.log.Error("render console page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // the status is sent; a failed write means the browser left
}

// errorPage is a refusal or failure shown on its own page.
type errorPage struct {
	Message, Hint string
}

// renderStatus shows a message page, signed in or not.
func (c *Console) renderStatus(w http.ResponseWriter, r *http.Request, status int, title, msg string) {
	var rq *request
	if sess, _ := c.liveSession(w, r); sess != nil { // a session that cannot be checked shows the page signed out
		rq = &request{p: sess.principal, sess: sess}
	}
	w.Header().Set("Cache-Control", "no-store")
	c.renderPage(w, r, rq, status, "error", title, errorPage{Message: msg})
}

// renderError shows err on its own page with its public message.
func (c *Console) renderError(w http.ResponseWriter, r *http.Request, rq *request, err error) {
	fe := c.formError(r, err)
	c.renderPage(w, r, rq, fe.Status, "error", http.StatusText(fe.Status), errorPage{Message: fe.Message, Hint: fe.Hint})
}

// formError is an error's public form: what went wrong, how to fix it, and
// each problem of a flow document or run input. The internal cause is
// logged, never shown.
type formError struct {
	Status   int
	Field    string
	Message  string
	Hint     string
	Problems []flow.Problem
}

// kindStatus is the console's one table from an error's Kind to the page's
// status; it agrees with the API's.
var kindStatus = map[errs.Kind]int{
	errs.Invalid:         http.StatusBadRequest,
	errs.NotFound:        http.StatusNotFound,
	errs.Conflict:        http.StatusConflict,
	errs.Unauthenticated: http.StatusUnauthorized,
	errs.Forbidden:       http.StatusForbidden,
	errs.TooLarge:        http.StatusRequestEntityTooLarge,
	errs.Limit:           http.StatusTooManyRequests,
	errs.RateLimited:     http.StatusTooManyRequests,
	errs.Unavailable:     http.StatusServiceUnavailable,
	errs.Upstream:        http.StatusBadGateway,
}

func (c *Console) formError(r *http.Request, err error) *formError {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &formError{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("the form is larger than %d bytes", tooBig.Limit), Hint: "upload a smaller file"}
	}
	if e, ok := errs.As(err); ok && (e.Kind != errs.Internal || e.Code != "") {
		status, ok := kindStatus[e.Kind]
		if !ok {
			c.log.Error("console request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			status = http.StatusInternalServerError
		}
		return &formError{Status: status, Field: e.Field, Message: e.Public(), Hint: e.Hint, Problems: e.Problems}
	}
	c.log.Error("console request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	return &formError{Status: http.StatusInternalServerError, Message: "internal error", Hint: "the server log has the details"}
}

// seeOther redirects after a successful change, leaving msg for the next
// page.
func seeOther(w http.ResponseWriter, r *http.Request, rq *request, to, msg string) {
	if msg != "" {
		rq.sess.setFlash(msg)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}
