package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/errs"
)

// RotateWebhookSecretRequest is the body of POST
// /api/v1/flows/{name}/webhook-secret/rotate.
type RotateWebhookSecretRequest struct {
	// Overlap is how long the replaced secret keeps verifying, as a Go
	// duration; defaults to 24h; "0s" forgets it at once.
	Overlap string `json:"overlap,omitempty"`
}

// HeaderDuplicate is set to "true" on the answer to a delivery whose
// X-Trustflow-Delivery id was seen before: the run is the one the first
// delivery started.
const HeaderDuplicate = "X-Trustflow-Duplicate"

// hookRoute is the webhook route, as refusals name it.
var hookRoute = Route{Method: "POST", Path: "/hooks/{flow}", Perm: auth.PermRunsWrite}

func (s *Server) hookRoutes() []Route {
	wait := []Param{{Name: "wait", Desc: "Go duration to wait for the run's output (at most --max-wait, " + s.cfg.MaxWait.String() + ")", Kind: ParamDuration, Max: int64(s.cfg.MaxWait)}}
	return []Route{
		{Method: "POST", Path: "/api/v1/flows/{name}/webhook-secret/rotate", Perm: auth.PermFlowsWrite, handler: s.rotateWebhookSecret,
			Doc: Operation{Summary: "Give a flow's webhook a new HMAC secret, shown once; the replaced one keeps verifying for the overlap (default 24h). Audited, without the secrets", Tag: "flows",
				Request:  obj(nil, map[string]any{"overlap": map[string]any{"type": "string", "description": "Go duration, 0s to 720h (default 24h)"}}),
				Response: obj([]string{"secret"}, map[string]any{"secret": str, "previous_valid_until": dateTime}), Errors: []int{409}}},
		{Method: "POST", Path: "/hooks/{flow}", Public: true, handler: s.hook,
			Doc: Operation{Summary: "Start a run of a flow with a webhook trigger, authenticated by a bearer token (operator, editor, admin) or, for auth: hmac, by " +
				engine.HeaderTimestamp + ": <unix seconds> and " + engine.HeaderSignature + `: v1=<hex HMAC-SHA256 of timestamp + "." + body> (within the server's window; a replay is refused with 409). ` +
				"An optional " + engine.HeaderDelivery + " id makes a retried delivery answer 200 with the run the first one started (" + HeaderDuplicate + ": true). The JSON body is the input",
				Tag: "runs", Request: map[string]any{"type": "object"}, Response: schemaRef("Run"), Status: 202, Errors: []int{400, 401, 403, 404, 409, 413}, NoAuth: true,
				Query: wait}},
	}
}

// hookUnauthenticated is the one answer to a webhook request without a
// valid credential, whatever the flow: it names no flow and no trigger.
func hookUnauthenticated(cause error) *errs.Error {
	return &errs.Error{Kind: errs.Unauthenticated, Code: "unauthenticated",
		Message: "a webhook needs a valid bearer token or a valid signature",
		Hint: "send Authorization: Bearer <token with role operator, editor or admin>, or sign the request: " + engine.HeaderTimestamp +
			`: <unix seconds> and ` + engine.HeaderSignature + `: v1=<hex HMAC-SHA256 of timestamp + "." + body under the flow's webhook secret>`,
		Err: cause}
}

// hook starts a run of a flow whose trigger is a webhook. It takes a bearer
// token with the runs:write permission, or a signature (engine.VerifyWebhook)
// that has not been accepted before. Until the caller is authenticated,
// every flow, known or not, gets the same answers after the same work; every
// refusal is audited.
func (s *Server) hook(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("flow")
	wait, err := parseWait(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	delivery := r.Header.Get(engine.HeaderDelivery)
	if err := engine.CheckDeliveryID(delivery); err != nil {
		return err
	}
	signer := audit.Actor{ID: "webhook", Name: "webhook:" + name, Role: "webhook"}
	var who audit.Actor
	var proof *engine.WebhookProof
	switch {
	case r.Header.Get("Authorization") != "":
		p, err := s.authenticate(r)
		if err != nil && !errors.Is(err, auth.ErrUnauthenticated) {
			return err
		}
		if err != nil {
			s.deny(r, hookRoute, audit.Actor{ID: "anonymous", Name: "anonymous"}, "unauthenticated", err)
			w.Header().Set("WWW-Authenticate", `Bearer realm="trustflow"`)
			return hookUnauthenticated(err)
		}
		if !p.Role.Can(auth.PermRunsWrite) {
			s.deny(r, hookRoute, auth.ActorOf(p), "forbidden", nil)
			return &errs.Error{Kind: errs.Forbidden, Code: "forbidden", Message: "role " + string(p.Role) + " may not start runs",
				Hint: "use a token with role operator, editor or admin"}
		}
		who = auth.ActorOf(p)
	case r.Header.Get(engine.HeaderSignature) != "" || r.Header.Get(engine.HeaderTimestamp) != "":
		proof, err = s.cfg.Engine.VerifyWebhook(r.Context(), engine.SignedWebhook{Flow: name,
			Timestamp: r.Header.Get(engine.HeaderTimestamp), Signature: r.Header.Get(engine.HeaderSignature), Body: body})
		if err != nil {
			if e, ok := errs.As(err); ok && e.Kind == errs.Unauthenticated {
				s.deny(r, hookRoute, audit.Actor{ID: "webhook", Name: "webhook:" + name}, strings.ReplaceAll(e.Code, "_", " "), nil)
				w.Header().Set("WWW-Authenticate", `Bearer realm="trustflow"`)
			}
			return err
		}
		who = signer
	default:
		cause := auth.Unauthenticated(auth.ReasonNoCredentials, "no Authorization header")
		s.deny(r, hookRoute, audit.Actor{ID: "anonymous", Name: "anonymous"}, "unauthenticated", cause)
		w.Header().Set("WWW-Authenticate", `Bearer realm="trustflow"`)
		return hookUnauthenticated(cause)
	}
	var input map[string]any
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &input); err != nil {
			return badRequest("invalid_json", "the webhook body must be a JSON object: "+err.Error(), "send the run's input as a JSON object")
		}
	}
	res, err := s.cfg.Engine.StartWebhookRun(r.Context(), engine.WebhookStart{Flow: name, Input: input, Actor: who, Proof: proof, Delivery: delivery})
	if err != nil {
		if errs.CodeOf(err) == "webhook_replayed" {
			s.deny(r, hookRoute, audit.Actor{ID: "webhook", Name: "webhook:" + name}, "webhook replayed", nil)
		}
		return err
	}
	status := http.StatusAccepted
	if res.Duplicate {
		w.Header().Set(HeaderDuplicate, "true")
		status = http.StatusOK
	}
	return s.answerRun(w, r, res.Run, status, wait)
}

func (s *Server) rotateWebhookSecret(w http.ResponseWriter, r *http.Request) error {
	var req RotateWebhookSecretRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			return err
		}
	}
	overlap := engine.DefaultWebhookOverlap
	if req.Overlap != "" {
		d, err := time.ParseDuration(req.Overlap)
		if err != nil {
			return invalidField("overlap", fmt.Sprintf("%q is not a duration", req.Overlap), "use e.g. 24h, 90m or 0s")
		}
		overlap = d
	}
	rot, err := s.cfg.Engine.RotateWebhookSecret(r.Context(), actor(r), r.PathValue("name"), overlap)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rot)
	return nil
}
