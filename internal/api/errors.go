package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/store"
)

// Error is an API error: a public code, message and hint, the HTTP status,
// and an internal cause that is logged but never sent.
type Error struct {
	Status  int
	Code    string
	Message string
	Hint    string
	Cause   error
	// Problems lists every problem of a flow document or a run's input,
	// each with file, line, column, path, message and hint.
	Problems []map[string]any
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("api: %s: %s: %v", e.Code, e.Message, e.Cause)
	}
	return fmt.Sprintf("api: %s: %s", e.Code, e.Message)
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Cause }

// errorBody is the wire form: {"error": {"code", "message", "hint"}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string           `json:"code"`
	Message   string           `json:"message"`
	Hint      string           `json:"hint,omitempty"`
	RequestID string           `json:"request_id,omitempty"`
	Problems  []map[string]any `json:"problems,omitempty"`
}

// Constructors for the common cases.

func badRequest(code, msg, hint string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: code, Message: msg, Hint: hint}
}

func invalidField(field, msg, hint string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "invalid_input", Message: field + ": " + msg, Hint: hint}
}

func notFound(what string) *Error {
	return &Error{Status: http.StatusNotFound, Code: "not_found", Message: what + " does not exist", Hint: "check the name or id; list what exists with the matching list command"}
}

// toAPIError maps any error a handler returns to its public form.
func toAPIError(err error) *Error {
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr
	}
	var inv *auth.InvalidError
	if errors.As(err, &inv) {
		return &Error{Status: http.StatusBadRequest, Code: "invalid_input", Message: inv.Field + ": " + inv.Msg, Hint: inv.Hint, Cause: err}
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large",
			Message: fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit),
			Hint:    "send a smaller body; split a large certificate bundle into several", Cause: err}
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: "not_found", Message: "the resource does not exist", Hint: "check the name or id", Cause: err}
	case errors.Is(err, store.ErrConflict):
		return &Error{Status: http.StatusConflict, Code: "conflict", Message: "the change conflicts with the current state", Hint: "reload the resource and try again", Cause: err}
	case errors.Is(err, auth.ErrUnauthenticated):
		return errUnauthenticated(err)
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error", Hint: "the server log has the details under this request id", Cause: err}
}

func errUnauthenticated(cause error) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: "unauthenticated",
		Message: "a valid API token is required",
		Hint:    "send Authorization: Bearer <token>; create one with `trustflow token create`, or use the admin token printed at first start", Cause: cause}
}
