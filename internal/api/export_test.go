package api

import "io"

// DecodeJSONBody exposes decodeJSONBody to the external tests.
func DecodeJSONBody(body io.Reader, v any) error { return decodeJSONBody(body, v) }

// PublicError exposes toAPIError to the external tests.
func PublicError(err error) *Error { return toAPIError(err) }
