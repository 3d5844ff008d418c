package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
)

// The API's errors are *errs.Error values, from the domain packages or made
// here; kindStatus is the one table that gives each Kind its HTTP status.
// Anything else is internal: 500, with the details only in the log.
var kindStatus = map[errs.Kind]int{
	errs.Internal:        http.StatusInternalServerError,
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

// protocolStatus gives the HTTP-protocol refusals of this package (by code)
// the statuses HTTP has for them.
var protocolStatus = map[string]int{
	codeMethodNotAllowed:     http.StatusMethodNotAllowed,
	codeUnsupportedMediaType: http.StatusUnsupportedMediaType,
	codeNotAvailable:         http.StatusNotImplemented,
}

const (
	codeMethodNotAllowed     = "method_not_allowed"
	codeUnsupportedMediaType = "unsupported_media_type"
	codeNotAvailable         = "not_available"
)

// errorBody is the wire form: {"error": {"code", "message", "hint", ...}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string           `json:"code"`
	Message   string           `json:"message"`
	Hint      string           `json:"hint,omitempty"`
	Field     string           `json:"field,omitempty"`
	RequestID string           `json:"request_id,omitempty"`
	Problems  []map[string]any `json:"problems,omitempty"`
	UsedBy    []string         `json:"used_by,omitempty"`
}

// Constructors for the common cases.

func badRequest(code, msg, hint string) *errs.Error {
	return errs.E(errs.Invalid, code, msg, hint)
}

func invalidField(field, msg, hint string) *errs.Error {
	return errs.InvalidField(field, msg, hint)
}

func notFound(what string) *errs.Error {
	return errs.E(errs.NotFound, "not_found", what+" does not exist", "check the name or id; list what exists with the matching list command")
}

// publicError is an error's public form and status.
type publicError struct {
	*errs.Error
	Status int
}

// toAPIError maps any error a handler returns to its public form.
func toAPIError(err error) publicError {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return publicError{&errs.Error{Kind: errs.TooLarge, Code: "body_too_large",
			Message: fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit),
			Hint:    "send a smaller body; split a large certificate bundle into several", Err: err}, http.StatusRequestEntityTooLarge}
	}
	e, ok := errs.As(err)
	if !ok || (e.Kind == errs.Internal && e.Code == "") {
		return publicError{&errs.Error{Kind: errs.Internal, Code: "internal", Message: "internal error",
			Hint: "the server log has the details under this request id", Err: err}, http.StatusInternalServerError}
	}
	status, ok := protocolStatus[e.Code]
	if !ok {
		status = kindStatus[e.Kind]
	}
	if status == 0 {
		status = http.StatusInternalServerError
	}
	return publicError{e, status}
}

// wireProblems is the problems' wire form, every key present.
func wireProblems(ps []errs.Problem) []map[string]any {
	if len(ps) == 0 {
		return nil
	}
	out := make([]map[string]any, 0, len(ps))
	for _, p := range ps {
		out = append(out, map[string]any{"file": p.File, "line": p.Line, "column": p.Column, "path": p.Path, "message": p.Message, "hint": p.Hint})
	}
	return out
}

// retryAfter is the Retry-After value of d, in whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return fmt.Sprint(s)
}

func errUnauthenticated(cause error) *errs.Error {
	return &errs.Error{Kind: errs.Unauthenticated, Code: "unauthenticated",
		Message: "a valid API token is required",
		Hint:    "send Authorization: Bearer <token>; create one with `trustflow token create`, or use the admin token printed at first start", Err: cause}
}
