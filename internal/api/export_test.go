package api

import (
	"io"

	"github.com/trustflow/trustflow/internal/errs"
)

// DecodeJSONBody exposes decodeJSONBody to the external tests.
func DecodeJSONBody(body io.Reader, v any) error { return decodeJSONBody(body, v) }

// PublicError exposes toAPIError to the external tests.
func PublicError(err error) (*errs.Error, int) {
	e := toAPIError(err)
	return e.Error, e.Status
}
