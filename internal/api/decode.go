package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/trustflow/trustflow/internal/errs"
)

// decodeJSON reads exactly one JSON object from the request body into v,
// refusing unknown fields, trailing data and wrong types with an error that
// names the field.
func decodeJSON(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !isJSON(ct) {
		return &errs.Error{Kind: errs.Invalid, Code: codeUnsupportedMediaType, Message: fmt.Sprintf("Content-Type %q is not accepted here", ct), Hint: "send the body as application/json"}
	}
	return decodeJSONBody(r.Body, v)
}

// decodeJSONBody is decodeJSON without the header check; it is what the
// fuzz test drives.
func decodeJSONBody(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return err
		}
		return badRequest("invalid_json", "request body has data after the JSON object", "send exactly one JSON object")
	}
	return nil
}

func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return err
	case errors.Is(err, io.EOF):
		return badRequest("invalid_json", "request body is empty", "send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("invalid_json", "request body ends in the middle of the JSON", "send a complete JSON object")
	case errors.As(err, &syntax):
		return badRequest("invalid_json", fmt.Sprintf("request body is not valid JSON (at byte %d): %s", syntax.Offset, syntax.Error()), "check quoting and commas")
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return badRequest("invalid_json", fmt.Sprintf("request body must be a JSON object, not %s", typ.Value), "send a JSON object such as {\"name\": ...}")
		}
		return invalidField(field, fmt.Sprintf("must be %s, not %s", jsonKind(typ.Type.Kind().String()), typ.Value), "fix the field's type")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return invalidField(strings.Trim(name, `"`), "unknown field", "remove it; the API reference at /api/v1/openapi.json lists the fields")
	}
	return badRequest("invalid_json", "request body could not be decoded: "+err.Error(), "send a JSON object")
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "a " + k
}

// isJSON reports whether a Content-Type is application/json (parameters
// such as charset allowed).
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}
