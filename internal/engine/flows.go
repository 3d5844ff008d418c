package engine

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/flow"
	"github.com/trustflow/trustflow/internal/store"
)

// Source is one flow document to apply.
type Source struct {
	Filename string `json:"filename"`
	Source   string `json:"source"`
}

// Applied reports what apply did to one flow.
type Applied struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	// Changed is false when the document equals the current version
	// (no new version is created).
	Changed  bool   `json:"changed"`
	Filename string `json:"filename"`
}

// applyError lists every problem found in the documents of an apply (an
// errs.Invalid error with code invalid_flow); none of them was stored.
func applyError(problems []flow.Problem) *errs.Error {
	first := problems[0]
	first.Hint = ""
	msg := first.String() + " (nothing was stored)"
	if len(problems) > 1 {
		msg = first.String() + fmt.Sprintf(" (and %d more; nothing was stored)", len(problems)-1)
	}
	return &errs.Error{Kind: errs.Invalid, Code: flow.CodeInvalidFlow, Message: msg, Hint: problems[0].Hint, Problems: problems, Op: "engine: apply"}
}

// Apply validates every document (syntax, kinds, ids, expressions, and
// references to connectors and sub-flows) before storing any; then stores
// a new version of each flow whose document changed, with its audit record,
// in one transaction.
func (e *Engine) Apply(ctx context.Context, actor audit.Actor, sources []Source) ([]Applied, error) {
	if len(sources) == 0 {
		return nil, applyError([]flow.Problem{{Message: "no flow documents were given", Hint: "pass -f FILE or -f DIR"}})
	}
	var problems []flow.Problem
	docs := make([]*flow.Document, len(sources))
	byName := map[string]int{}
	for i, src := range sources {
		d, err := flow.Parse(src.Filename, []byte(src.Source))
		if err != nil {
			if ve, ok := errs.As(err); ok && ve.Code == flow.CodeInvalidFlow {
				problems = append(problems, ve.Problems...)
				continue
			}
			return nil, err
		}
		if j, dup := byName[d.Name]; dup {
			problems = append(problems, flow.Problem{File: src.Filename, Line: 1, Column: 1, Path: "name",
				Message: fmt.Sprintf("flow %q is also defined in %s", d.Name, sources[j].Filename), Hint: "give each flow a unique name"})
			continue
		}
		byName[d.Name] = i
		docs[i] = d
	}
	for i, d := range docs {
		if d == nil {
			continue
		}
		problems = append(problems, e.checkRefs(ctx, sources[i].Filename, d, byName)...)
		problems = append(problems, e.checkLimits(sources[i].Filename, d)...)
	}
	files := make([]string, len(sources))
	for i, src := range sources {
		files[i] = src.Filename
	}
	cycles, cerr := e.checkCycles(ctx, files, docs)
	if cerr != nil {
		return nil, cerr
	}
	problems = append(problems, cycles...)
	if len(problems) > 0 {
		return nil, applyError(problems)
	}
	var out []Applied
	err := e.st.InTx(ctx, func(tx *store.Tx) error {
		out = out[:0]
		for i, d := range docs {
			a, err := e.applyOne(ctx, tx, actor, sources[i], d)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := e.SyncSchedules(ctx); err != nil {
		e.log.Warn("sync schedules after apply", "err", err)
	}
	return out, nil
}

// checkRefs reports connectors and sub-flows a document names that do not
// exist (sub-flows may be in the same apply).
func (e *Engine) checkRefs(ctx context.Context, file string, d *flow.Document, batch map[string]int) []flow.Problem {
	var out []flow.Problem
	limit := e.cfg.JobTimeout - e.cfg.Budget
	_ = d.Walk(func(path string, s *flow.Step) error { // the callback never fails
		if t := s.AttemptTimeout(); t > limit {
			out = append(out, flow.Problem{File: file, Line: s.Line, Column: s.Column, Path: path + ".timeout",
				Message: fmt.Sprintf("a timeout of %s is longer than one advance of a run may take on this server (%s)", t, limit),
				Hint:    "lower the step's timeout, or start the servers with a larger --job-timeout"})
		}
		switch {
		case s.Kind == flow.KindCall && s.Call != nil:
			if _, err := e.conns.Get(ctx, s.Call.Connector); err != nil {
				out = append(out, flow.Problem{File: file, Line: s.Line, Column: s.Column, Path: path + ".call.connector",
					Message: fmt.Sprintf("there is no connector named %q", s.Call.Connector),
					Hint:    "create it with `trustflow connector create " + s.Call.Connector + " --url ...`, or fix the name (see `trustflow connector list`)"})
			}
		case s.Kind == flow.KindFlowRun:
			if _, inBatch := batch[s.SubFlow]; inBatch {
				return nil
			}
			if _, err := e.st.FlowByName(ctx, s.SubFlow); err != nil {
				out = append(out, flow.Problem{File: file, Line: s.Line, Column: s.Column, Path: path + ".flow",
					Message: fmt.Sprintf("there is no flow named %q", s.SubFlow), Hint: "apply it first (or in the same `flow apply`), or fix the name"})
			}
		}
		return nil
	})
	return out
}

func triggerKey(t flow.Trigger) string {
	switch t.Kind {
	case "event":
		return "event:" + t.EventType
	case "webhook":
		return "webhook:" + t.WebhookAuth
	}
	return t.Kind
}

func (e *Engine) applyOne(ctx context.Context, tx *store.Tx, actor audit.Actor, src Source, d *flow.Document) (Applied, error) {
	now := e.clock.Now().UTC().Truncate(time.Microsecond)
	head, err := tx.FlowByName(ctx, d.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// A flow applied again after its removal continues the numbering:
		// the old versions are kept for their runs.
		last, err := tx.LastFlowVersion(ctx, d.Name)
		if err != nil {
			return Applied{}, err
		}
		head = store.Flow{Name: d.Name, CurrentVersion: last + 1, TriggerKind: triggerKey(d.Trigger), CreatedAt: now, UpdatedAt: now}
		if d.Trigger.Kind == "webhook" && d.Trigger.WebhookAuth == "hmac" {
			if err := e.newWebhookSecret(&head); err != nil {
				return Applied{}, err
			}
		}
		if err := tx.InsertFlow(ctx, head); err != nil {
			return Applied{}, err
		}
	case err != nil:
		return Applied{}, err
	default:
		cur, err := e.st.FlowVersion(ctx, d.Name, head.CurrentVersion)
		if err != nil {
			return Applied{}, err
		}
		if cur.Digest == d.Digest {
			return Applied{Name: d.Name, Version: head.CurrentVersion, Changed: false, Filename: src.Filename}, nil
		}
		head.CurrentVersion++
		head.TriggerKind = triggerKey(d.Trigger)
		head.UpdatedAt = now
		if d.Trigger.Kind == "webhook" && d.Trigger.WebhookAuth == "hmac" && len(head.WebhookSecret) == 0 {
			if err := e.newWebhookSecret(&head); err != nil {
				return Applied{}, err
			}
		}
		if err := tx.UpdateFlow(ctx, head); err != nil {
			return Applied{}, err
		}
	}
	v := store.FlowVersion{FlowName: d.Name, Version: head.CurrentVersion, Digest: d.Digest, Filename: src.Filename, Source: src.Source, CreatedAt: now, CreatedBy: actor.ID}
	if err := tx.InsertFlowVersion(ctx, v); err != nil {
		return Applied{}, err
	}
	if _, err := e.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "flow.apply", Target: "flow/" + d.Name,
		Details: map[string]any{"version": v.Version, "digest": d.Digest, "filename": src.Filename, "trigger": head.TriggerKind}}); err != nil {
		return Applied{}, err
	}
	return Applied{Name: d.Name, Version: v.Version, Changed: true, Filename: src.Filename}, nil
}

// FlowView is a flow's public view.
type FlowView struct {
	Name        string        `json:"name"`
	Description string        `json:"description"`
	Version     int           `json:"version"`
	Trigger     TriggerView   `json:"trigger"`
	Inputs      []InputView   `json:"inputs"`
	Source      string        `json:"source,omitempty"`
	Filename    string        `json:"filename"`
	Digest      string        `json:"digest"`
	Versions    []VersionView `json:"versions,omitempty"`
	CreatedAt   time.Time     `json:"created_at"`
	UpdatedAt   time.Time     `json:"updated_at"`
}

// TriggerView is a flow's trigger.
type TriggerView struct {
	Kind        string `json:"kind"`
	Cron        string `json:"cron,omitempty"`
	Timezone    string `json:"timezone,omitempty"`
	WebhookAuth string `json:"webhook_auth,omitempty"`
	EventType   string `json:"event_type,omitempty"`
}

// InputView declares one input field of a flow.
type InputView struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Required    bool   `json:"required"`
	Default     any    `json:"default,omitempty"`
	Description string `json:"description,omitempty"`
	Secret      bool   `json:"secret"`
}

// VersionView is one stored version of a flow.
type VersionView struct {
	Version   int       `json:"version"`
	Digest    string    `json:"digest"`
	Filename  string    `json:"filename"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// notFound says that the kind ("flow", "run") named name does not exist;
// it matches store.ErrNotFound.
func notFound(kind, name string) *errs.Error {
	e := errs.NotFoundNamed(kind, name, "see `trustflow "+kind+" list`")
	e.Op = "engine"
	return e
}

// GetFlow returns a flow's current version with its source and history.
func (e *Engine) GetFlow(ctx context.Context, name string) (FlowView, error) {
	head, err := e.st.FlowByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return FlowView{}, notFound("flow", name)
	} else if err != nil {
		return FlowView{}, err
	}
	v, err := e.st.FlowVersion(ctx, name, head.CurrentVersion)
	if err != nil {
		return FlowView{}, err
	}
	d, err := e.document(ctx, name, head.CurrentVersion)
	if err != nil {
		return FlowView{}, err
	}
	view := flowView(head, v, d)
	view.Source = v.Source
	versions, err := e.st.FlowVersions(ctx, name)
	if err != nil {
		return FlowView{}, err
	}
	for _, fv := range versions {
		view.Versions = append(view.Versions, VersionView{Version: fv.Version, Digest: fv.Digest, Filename: fv.Filename, CreatedAt: fv.CreatedAt, CreatedBy: fv.CreatedBy})
	}
	return view, nil
}

func flowView(head store.Flow, v store.FlowVersion, d *flow.Document) FlowView {
	inputs := []InputView{}
	for _, in := range d.Inputs {
		iv := InputView{Name: in.Name, Type: in.Type, Required: in.Required, Description: in.Description, Secret: in.Secret}
		if in.HasDefault && !in.Secret {
			iv.Default = in.Default
		}
		inputs = append(inputs, iv)
	}
	t := d.Trigger
	trig := TriggerView{Kind: t.Kind, Cron: t.Cron, Timezone: t.Timezone, WebhookAuth: t.WebhookAuth, EventType: t.EventType}
	return FlowView{Name: head.Name, Description: d.Description, Version: head.CurrentVersion, Trigger: trig, Inputs: inputs,
		Filename: v.Filename, Digest: v.Digest, CreatedAt: head.CreatedAt, UpdatedAt: head.UpdatedAt}
}

// ListFlows returns every flow's current version (without sources).
func (e *Engine) ListFlows(ctx context.Context) ([]FlowView, error) {
	heads, err := e.st.ListFlows(ctx)
	if err != nil {
		return nil, err
	}
	out := []FlowView{}
	for _, h := range heads {
		v, err := e.st.FlowVersion(ctx, h.Name, h.CurrentVersion)
		if err != nil {
			return nil, err
		}
		d, err := e.document(ctx, h.Name, h.CurrentVersion)
		if err != nil {
			return nil, err
		}
		out = append(out, flowView(h, v, d))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RemoveFlow deletes a flow; its versions are kept for its runs (and a
// flow applied later under the same name continues their numbering).
func (e *Engine) RemoveFlow(ctx context.Context, actor audit.Actor, name string) error {
	return e.st.InTx(ctx, func(tx *store.Tx) error {
		head, err := tx.FlowByName(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("flow", name)
		} else if err != nil {
			return err
		}
		if err := tx.DeleteFlow(ctx, name); err != nil {
			return err
		}
		_, err = e.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "flow.remove", Target: "flow/" + name, Details: map[string]any{"versions": head.CurrentVersion}})
		return err
	})
}
