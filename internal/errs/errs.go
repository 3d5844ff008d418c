// Package errs is trustflow's one public error type. Every domain package
// returns an *Error for a failure the caller can act on: it has a Kind (what
// sort of failure, which the API and the console each map to a status in one
// table), a stable Code, the Field at fault, a Message and a Hint that are
// safe to show, the Problems of a document, and an internal cause that is
// logged but never shown.
//
// Anything that is not an *Error is internal: the API answers 500 with a
// request id and logs it.
package errs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Kind says what sort of failure an Error is. The zero Kind is Internal.
type Kind uint8

// The kinds of failure.
const (
	// Internal is a fault of trustflow or what it runs on; only the log has
	// the details.
	Internal Kind = iota
	// Invalid means the request or document is wrong: Field and Problems say
	// where, Hint says what to write instead.
	Invalid
	// NotFound means the named resource does not exist.
	NotFound
	// Conflict means the current state refuses the change: a name taken, a
	// resource still in use, a version in the wrong state.
	Conflict
	// Unauthenticated means no valid credential was presented.
	Unauthenticated
	// Forbidden means the credential is valid but lacks the permission.
	Forbidden
	// TooLarge means the request body or an uploaded file is over its limit.
	TooLarge
	// Limit means a named limit of the server or the flow was reached (runs
	// in flight, sub-flow depth, items, sizes). Code names the limit.
	Limit
	// RateLimited means the caller sent too many requests; RetryAfter says
	// when to try again.
	RateLimited
	// Unavailable means something this node needs is not available now (a
	// PKCS#11 token, the key-encryption key); trying again later may work.
	Unavailable
	// Upstream means an outside system failed or refused: a connector's
	// server, a token endpoint.
	Upstream
)

var kindNames = [...]string{
	Internal: "internal", Invalid: "invalid", NotFound: "not_found", Conflict: "conflict",
	Unauthenticated: "unauthenticated", Forbidden: "forbidden", TooLarge: "too_large",
	Limit: "limit", RateLimited: "rate_limited", Unavailable: "unavailable", Upstream: "upstream",
}

// String names the kind: "invalid", "not_found", ...
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Problem is one thing wrong with a document or an input, with its place.
type Problem struct {
	// File is the file name the document came from; empty for run input.
	File string `json:"file,omitempty"`
	// Line and Column (1-based, columns counted in characters) point at the
	// offending key or value; 0 when the problem has no position.
	Line   int `json:"line,omitempty"`
	Column int `json:"column,omitempty"`
	// Path names the field, e.g. steps[1].call.method or input.user_id.
	Path string `json:"path,omitempty"`
	// Message says what is wrong. It is safe to show.
	Message string `json:"message"`
	// Hint says what to write instead. It is safe to show.
	Hint string `json:"hint,omitempty"`
}

// String formats the problem as "file:line:col: path: message (hint)",
// leaving out the parts that are empty.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteString(":")
	}
	if p.Line > 0 {
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteString(":")
		if p.Column > 0 {
			b.WriteString(strconv.Itoa(p.Column))
			b.WriteString(":")
		}
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	if p.Hint != "" {
		b.WriteString(" (")
		b.WriteString(p.Hint)
		b.WriteString(")")
	}
	return b.String()
}

// Error is a failure the caller can act on.
type Error struct {
	Kind Kind
	// Code is a stable machine code: "invalid_input", "name_taken", ...
	Code string
	// Field names the request field at fault; empty when none is.
	Field string
	// Message says what is wrong; it is safe to show and does not repeat
	// Field (see Public).
	Message string
	// Hint says how to fix it; safe to show; may be empty.
	Hint string
	// Problems lists each problem of a document or an input.
	Problems []Problem
	// UsedBy names the resources that still use the one a change refers to.
	UsedBy []string
	// RetryAfter says when to try again, for RateLimited and some Limit and
	// Unavailable errors; 0 when unknown.
	RetryAfter time.Duration
	// Op says what was being done, for the log: "truststore: add ca".
	Op string
	// Err is the internal cause: logged, never shown.
	Err error
}

// Error formats op, field, message and cause for logs and the CLI.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	b.WriteString(e.Public())
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Public is the message shown to a user: "field: message", or the message
// alone when no field is at fault.
func (e *Error) Public() string {
	if e.Field == "" || strings.HasPrefix(e.Message, e.Field+":") {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, target) hold when target is an *Error of the
// same kind and, if target has a code, the same code: a sentinel such as
// store.ErrNotFound matches every not-found error with its code, wrapped or
// copied.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return t == e || (t.Kind == e.Kind && (t.Code == "" || t.Code == e.Code))
}

// As returns the first *Error in err's chain.
func As(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// KindOf returns the kind of the first *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	if e, ok := As(err); ok {
		return e.Kind
	}
	return Internal
}

// CodeOf returns the code of the first *Error in err's chain, or "".
func CodeOf(err error) string {
	if e, ok := As(err); ok {
		return e.Code
	}
	return ""
}

// E builds an Error of kind with code, message and hint.
func E(kind Kind, code, msg, hint string) *Error {
	return &Error{Kind: kind, Code: code, Message: msg, Hint: hint}
}

// InvalidField is a bad value in field: code "invalid_input" unless code is
// given.
func InvalidField(field, msg, hint string) *Error {
	return &Error{Kind: Invalid, Code: "invalid_input", Field: field, Message: msg, Hint: hint}
}

// NotFoundNamed says that the resource of kind what (e.g. "connector") named
// name does not exist.
func NotFoundNamed(what, name, hint string) *Error {
	return &Error{Kind: NotFound, Code: "not_found", Message: fmt.Sprintf("%s %q does not exist", what, name), Hint: hint}
}

// ConflictWith is a change the current state refuses.
func ConflictWith(code, msg, hint string) *Error {
	return &Error{Kind: Conflict, Code: code, Message: msg, Hint: hint}
}

// LimitReached says that the limit named code (e.g. "subflow_depth") of
// value limit was reached; the message names the limit and its value.
func LimitReached(code string, limit int64, msg, hint string) *Error {
	return &Error{Kind: Limit, Code: code, Message: fmt.Sprintf("%s (limit %s: %d)", msg, code, limit), Hint: hint}
}

// Wrap returns an Error like e with op and cause set, leaving e unchanged:
// for sentinels and shared values.
func (e *Error) Wrap(op string, cause error) *Error {
	c := *e
	c.Op, c.Err = op, cause
	return &c
}

// WithField returns a copy of e naming field.
func (e *Error) WithField(field string) *Error {
	c := *e
	c.Field = field
	return &c
}
