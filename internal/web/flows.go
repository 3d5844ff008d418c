package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/engine"
)

func (c *Console) flowRoutes() []route {
	return []route{
		{pattern: "GET /ui/flows", perm: auth.PermFlowsRead, handle: c.flowList},
		{pattern: "GET /ui/flows/{name}", perm: auth.PermFlowsRead, handle: c.flowDetail},
		{pattern: "POST /ui/flows/{name}/runs", perm: auth.PermRunsWrite, handle: c.flowRun},
		{pattern: "POST /ui/flows/{name}/remove", perm: auth.PermFlowsWrite, handle: c.flowRemove},
		{pattern: "GET /ui/editor", perm: auth.PermFlowsWrite, handle: c.editorForm},
		{pattern: "POST /ui/editor", perm: auth.PermFlowsWrite, handle: c.editorApply},
		{pattern: "GET /ui/runs", perm: auth.PermRunsRead, handle: c.runList},
		{pattern: "GET /ui/runs/{id}", perm: auth.PermRunsRead, handle: c.runDetail},
		{pattern: "POST /ui/runs/{id}/cancel", perm: auth.PermRunsWrite, handle: c.runCancel},
		{pattern: "POST /ui/runs/{id}/retry", perm: auth.PermRunsWrite, handle: c.runRetry},
	}
}

func (c *Console) flowList(w http.ResponseWriter, r *http.Request, rq *request) {
	flows, err := c.cfg.Engine.ListFlows(r.Context())
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	c.renderPage(w, r, rq, http.StatusOK, "flows", "Flows", flows)
}

type flowPage struct {
	Flow engine.FlowView
	Err  *formError
	Form formValues
}

func (c *Console) flowDetail(w http.ResponseWriter, r *http.Request, rq *request) {
	c.showFlow(w, r, rq, http.StatusOK, nil, formValues{})
}

func (c *Console) showFlow(w http.ResponseWriter, r *http.Request, rq *request, status int, fe *formError, form formValues) {
	f, err := c.cfg.Engine.GetFlow(r.Context(), r.PathValue("name"))
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	c.renderPage(w, r, rq, status, "flow", "Flow "+f.Name, flowPage{Flow: f, Err: fe, Form: form})
}

// inputValue converts a run form field to the flow input's type. A value
// that does not convert is passed on as text, so that the engine names the
// problem.
func inputValue(typ, raw string) any {
	switch typ {
	case "integer":
		if n, err := strconv.ParseInt(raw, 10, 64); err == nil {
			return n
		}
	case "number":
		if f, err := strconv.ParseFloat(raw, 64); err == nil {
			return f
		}
	case "boolean":
		return raw == "true" || raw == "on"
	case "object", "array":
		var v any
		if err := json.Unmarshal([]byte(raw), &v); err == nil {
			return v
		}
	}
	return raw
}

func (c *Console) flowRun(w http.ResponseWriter, r *http.Request, rq *request) {
	name := r.PathValue("name")
	f, err := c.cfg.Engine.GetFlow(r.Context(), name)
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	input := map[string]any{}
	form := formValues{}
	for _, in := range f.Inputs {
		raw := r.PostFormValue("in." + in.Name)
		if !in.Secret {
			form[in.Name] = raw
		}
		if in.Type == "boolean" {
			input[in.Name] = inputValue(in.Type, raw)
			continue
		}
		if raw == "" {
			continue
		}
		input[in.Name] = inputValue(in.Type, raw)
	}
	run, err := c.cfg.Engine.StartRun(r.Context(), engine.StartRequest{Flow: name, Input: input, Trigger: "manual", Actor: rq.actor()})
	if err != nil {
		fe := c.formError(r, err)
		c.showFlow(w, r, rq, fe.Status, fe, form)
		return
	}
	seeOther(w, r, rq, "/ui/runs/"+run.ID, "Run "+run.ID+" started.")
}

type editorPage struct {
	Source   string
	Filename string
	Err      *formError
}

const newFlowTemplate = `apiVersion: trustflow/v1
kind: Flow
name: my-flow
description: What this flow does
trigger: {manual: {}}
input:
  user_id: {type: string, required: true}
steps:
  - id: greet
    set: {message: "hello ${input.user_id}"}
`

func (c *Console) editorForm(w http.ResponseWriter, r *http.Request, rq *request) {
	page := editorPage{Source: newFlowTemplate, Filename: "flow.yaml"}
	if name := r.URL.Query().Get("flow"); name != "" {
		f, err := c.cfg.Engine.GetFlow(r.Context(), name)
		if err != nil {
			c.renderError(w, r, rq, err)
			return
		}
		page.Source, page.Filename = f.Source, f.Filename
	}
	c.renderPage(w, r, rq, http.StatusOK, "editor", "Flow editor", page)
}

// editorApply validates and applies the document; with problems, nothing is
// stored and each problem is shown at its line and column.
func (c *Console) editorApply(w http.ResponseWriter, r *http.Request, rq *request) {
	src := r.PostFormValue("source")
	filename := strings.TrimSpace(r.PostFormValue("filename"))
	if filename == "" {
		filename = "flow.yaml"
	}
	applied, err := c.cfg.Engine.Apply(r.Context(), rq.actor(), []engine.Source{{Filename: filename, Source: src}})
	if err != nil {
		fe := c.formError(r, err)
		c.renderPage(w, r, rq, fe.Status, "editor", "Flow editor", editorPage{Source: src, Filename: filename, Err: fe})
		return
	}
	a := applied[0]
	msg := "Flow " + a.Name + " is unchanged (version " + strconv.Itoa(a.Version) + ")."
	if a.Changed {
		msg = "Flow " + a.Name + " applied as version " + strconv.Itoa(a.Version) + "."
	}
	seeOther(w, r, rq, "/ui/flows/"+a.Name, msg)
}

type runsPage struct {
	Runs          []engine.RunView
	Flow, Status  string
	Since, Until  string // YYYY-MM-DD, UTC days (until is inclusive)
	Statuses      []string
	FilterApplied bool
	Err           string
}

func (c *Console) runList(w http.ResponseWriter, r *http.Request, rq *request) {
	q := r.URL.Query()
	page := runsPage{Flow: q.Get("flow"), Status: q.Get("status"),
		Statuses: []string{engine.StatusQueued, engine.StatusRunning, engine.StatusSleeping, engine.StatusSucceeded, engine.StatusFailed, engine.StatusCancelled}}
	page.Since, page.Until = q.Get("since"), q.Get("until")
	page.FilterApplied = page.Flow != "" || page.Status != "" || page.Since != "" || page.Until != ""
	f := engine.RunFilter{Flow: page.Flow, Status: page.Status, Limit: 100}
	if page.Since != "" {
		if d, err := time.Parse(time.DateOnly, page.Since); err == nil {
			f.Since = d
		} else {
			page.Err = "From: " + page.Since + " is not a date (YYYY-MM-DD)"
		}
	}
	if page.Until != "" {
		if d, err := time.Parse(time.DateOnly, page.Until); err == nil {
			f.Until = d.Add(24 * time.Hour)
		} else {
			page.Err = "To: " + page.Until + " is not a date (YYYY-MM-DD)"
		}
	}
	runs, err := c.cfg.Engine.ListRuns(r.Context(), f)
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	page.Runs = runs
	c.renderPage(w, r, rq, http.StatusOK, "runs", "Runs", page)
}

type runPage struct {
	Run engine.RunView
}

// Active reports whether the run may still change.
func (p runPage) Active() bool {
	switch p.Run.Status {
	case engine.StatusSucceeded, engine.StatusFailed, engine.StatusCancelled:
		return false
	}
	return true
}

// refresh reloads an active run's page every two seconds.
func (p runPage) refresh() int {
	if p.Active() {
		return 2
	}
	return 0
}

func (c *Console) runDetail(w http.ResponseWriter, r *http.Request, rq *request) {
	run, err := c.cfg.Engine.GetRun(r.Context(), r.PathValue("id"))
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	c.renderPage(w, r, rq, http.StatusOK, "run", "Run "+run.ID, runPage{Run: run})
}

func (c *Console) runCancel(w http.ResponseWriter, r *http.Request, rq *request) {
	id := r.PathValue("id")
	if _, err := c.cfg.Engine.Cancel(r.Context(), rq.actor(), id); err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	seeOther(w, r, rq, "/ui/runs/"+url.PathEscape(id), "Cancellation requested.")
}

func (c *Console) runRetry(w http.ResponseWriter, r *http.Request, rq *request) {
	id := r.PathValue("id")
	if _, err := c.cfg.Engine.Retry(r.Context(), rq.actor(), id); err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	seeOther(w, r, rq, "/ui/runs/"+url.PathEscape(id), "Run retried from its failed step.")
}

// flowRemove deletes a flow and its versions; its runs are kept.
func (c *Console) flowRemove(w http.ResponseWriter, r *http.Request, rq *request) {
	name := r.PathValue("name")
	if r.PostFormValue("confirm") != "on" {
		c.showFlow(w, r, rq, http.StatusBadRequest, &formError{Status: http.StatusBadRequest, Message: "confirm: tick the box to confirm the removal", Hint: "removal cannot be undone; the flow's runs are kept"}, formValues{})
		return
	}
	if err := c.cfg.Engine.RemoveFlow(r.Context(), rq.actor(), name); err != nil {
		fe := c.formError(r, err)
		c.showFlow(w, r, rq, fe.Status, fe, formValues{})
		return
	}
	seeOther(w, r, rq, "/ui/flows", "Flow "+name+" removed; its runs are kept.")
}
