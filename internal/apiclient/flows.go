package apiclient

import (
	"context"
	"net/url"
	"strconv"
	"time"
)

// FlowSource is one flow document to apply.
type FlowSource struct {
	Filename string `json:"filename"`
	Source   string `json:"source"`
}

// AppliedFlow reports what apply did to one flow.
type AppliedFlow struct {
	Name     string `json:"name"`
	Version  int    `json:"version"`
	Changed  bool   `json:"changed"`
	Filename string `json:"filename"`
}

// Problem is one problem of a flow document or a run's input.
type Problem struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Path    string `json:"path"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// FlowTrigger says what starts a flow's runs.
type FlowTrigger struct {
	Kind        string `json:"kind"`
	Cron        string `json:"cron,omitempty"`
	Timezone    string `json:"timezone,omitempty"`
	WebhookAuth string `json:"webhook_auth,omitempty"`
	EventType   string `json:"event_type,omitempty"`
}

// FlowInput declares one input field.
type FlowInput struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Required    bool   `json:"required"`
	Default     any    `json:"default,omitempty"`
	Description string `json:"description,omitempty"`
	Secret      bool   `json:"secret"`
}

// FlowVersion is one stored version.
type FlowVersion struct {
	Version   int       `json:"version"`
	Digest    string    `json:"digest"`
	Filename  string    `json:"filename"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// Flow is a flow's public view.
type Flow struct {
	Name        string        `json:"name"`
	Description string        `json:"description"`
	Version     int           `json:"version"`
	Trigger     FlowTrigger   `json:"trigger"`
	Inputs      []FlowInput   `json:"inputs"`
	Source      string        `json:"source,omitempty"`
	Filename    string        `json:"filename"`
	Digest      string        `json:"digest"`
	Versions    []FlowVersion `json:"versions,omitempty"`
	CreatedAt   time.Time     `json:"created_at"`
	UpdatedAt   time.Time     `json:"updated_at"`
}

// RunError is why a run or step failed.
type RunError struct {
	Step    string `json:"step,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
	Status  int    `json:"status,omitempty"`
}

// RunStep is one step of a run.
type RunStep struct {
	Path        string     `json:"path"`
	ID          string     `json:"id"`
	Kind        string     `json:"kind"`
	Status      string     `json:"status"`
	Attempts    int        `json:"attempts"`
	Output      any        `json:"output,omitempty"`
	Evidence    any        `json:"evidence,omitempty"`
	Error       *RunError  `json:"error,omitempty"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	DurationMS  int64      `json:"duration_ms"`
	NextAttempt *time.Time `json:"next_attempt_at,omitempty"`
}

// Run is a run's public view.
type Run struct {
	ID          string         `json:"id"`
	Flow        string         `json:"flow"`
	FlowVersion int            `json:"flow_version"`
	Status      string         `json:"status"`
	Trigger     string         `json:"trigger"`
	Input       map[string]any `json:"input"`
	Output      any            `json:"output"`
	Error       *RunError      `json:"error,omitempty"`
	ParentRun   string         `json:"parent_run,omitempty"`
	ParentStep  string         `json:"parent_step,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
	StartedAt   *time.Time     `json:"started_at,omitempty"`
	FinishedAt  *time.Time     `json:"finished_at,omitempty"`
	Steps       []RunStep      `json:"steps,omitempty"`
}

// ApplyFlows applies flow documents.
func (c *Client) ApplyFlows(ctx context.Context, docs []FlowSource) ([]AppliedFlow, error) {
	var out struct {
		Flows []AppliedFlow `json:"flows"`
	}
	err := c.Do(ctx, "POST", "/api/v1/flows", nil, map[string]any{"documents": docs}, &out)
	return out.Flows, err
}

// ListFlows lists flows.
func (c *Client) ListFlows(ctx context.Context) ([]Flow, error) {
	var out struct {
		Flows []Flow `json:"flows"`
	}
	err := c.Do(ctx, "GET", "/api/v1/flows", nil, nil, &out)
	return out.Flows, err
}

// GetFlow shows a flow.
func (c *Client) GetFlow(ctx context.Context, name string) (Flow, error) {
	var out Flow
	err := c.Do(ctx, "GET", "/api/v1/flows/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// RemoveFlow removes a flow.
func (c *Client) RemoveFlow(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", "/api/v1/flows/"+url.PathEscape(name), nil, nil, nil)
}

// StartRun starts a run; wait > 0 waits for it to end.
func (c *Client) StartRun(ctx context.Context, flow string, input map[string]any, wait time.Duration) (Run, error) {
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	var out Run
	err := c.Do(ctx, "POST", "/api/v1/flows/"+url.PathEscape(flow)+"/runs", q, map[string]any{"input": input}, &out)
	return out, err
}

// RunQuery filters runs.
type RunQuery struct {
	Flow, Status, Since, Until string
	Limit                      int
}

// ListRuns lists runs, newest first.
func (c *Client) ListRuns(ctx context.Context, rq RunQuery) ([]Run, error) {
	q := url.Values{}
	for k, v := range map[string]string{"flow": rq.Flow, "status": rq.Status, "since": rq.Since, "until": rq.Until} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if rq.Limit > 0 {
		q.Set("limit", strconv.Itoa(rq.Limit))
	}
	var out struct {
		Runs []Run `json:"runs"`
	}
	err := c.Do(ctx, "GET", "/api/v1/runs", q, nil, &out)
	return out.Runs, err
}

// GetRun shows a run with its steps.
func (c *Client) GetRun(ctx context.Context, id string) (Run, error) {
	var out Run
	err := c.Do(ctx, "GET", "/api/v1/runs/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// CancelRun cancels a run.
func (c *Client) CancelRun(ctx context.Context, id string) (Run, error) {
	var out Run
	err := c.Do(ctx, "POST", "/api/v1/runs/"+url.PathEscape(id)+"/cancel", nil, nil, &out)
	return out, err
}

// RetryRun restarts a failed run from its failed step.
func (c *Client) RetryRun(ctx context.Context, id string) (Run, error) {
	var out Run
	err := c.Do(ctx, "POST", "/api/v1/runs/"+url.PathEscape(id)+"/retry", nil, nil, &out)
	return out, err
}
