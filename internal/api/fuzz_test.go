package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// fuzzBodyLimit bounds fuzzed bodies so that the 413 path is reached.
const fuzzBodyLimit = 1024

// FuzzDecodeJSON drives the request decoder: it never panics, and every
// error it returns is the client's fault (4xx), never a 500.
func FuzzDecodeJSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		var req auth.CreateRequest
		err := api.DecodeJSONBody(http.MaxBytesReader(nil, io.NopCloser(bytes.NewReader(body)), fuzzBodyLimit), &req)
		if err == nil {
			return
		}
		e, status := api.PublicError(err)
		if status < 400 || status > 499 {
			t.Fatalf("body %q: error %v maps to status %d, want 4xx", body, err, status)
		}
		if e.Code == "" || e.Message == "" || e.Hint == "" {
			t.Fatalf("body %q: error %v maps to an incomplete public error %+v", body, err, e)
		}
	})
}

// FuzzCreateTokenRequest sends fuzzed bodies and Content-Types through the
// whole server: the answer is 201, 400, 413 or 415, never a 500, and its
// body is JSON.
func FuzzCreateTokenRequest(f *testing.F) {
	st := storetest.Open(f, store.SQLite)
	e := newEnv(f, st, api.Config{MaxBodyBytes: fuzzBodyLimit})
	handler := e.server.Handler()
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		req := httptest.NewRequest("POST", "/api/v1/tokens", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.admin)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusCreated:
			var created api.CreatedToken
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &created))
			require.Regexp(t, secretForm, created.Secret)
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
			var eb errorBody
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &eb), "body: %s", rec.Body)
			require.NotEmpty(t, eb.Error.Code)
			require.NotEmpty(t, eb.Error.Message)
		default:
			t.Fatalf("body %q, Content-Type %q: status %d: %s", body, contentType, rec.Code, rec.Body)
		}
		require.True(t, json.Valid(rec.Body.Bytes()), "answer is not JSON: %q", rec.Body)
	})
}
