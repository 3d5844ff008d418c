package apiclient_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/custody"
	"github.com/trustflow/trustflow/internal/truststore"
)

// fill sets every field of v, recursively, to a distinct non-zero value.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", *n))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte{byte(*n), 0xff, 0x00})
			return
		}
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fill(s.Index(i), n)
		}
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), n)
		v.Set(p)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 3, 1, 9, 0, *n, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, n)
		fill(e, n)
		m.SetMapIndex(k, e)
		v.Set(m)
	default:
		panic("fill: unhandled kind " + v.Kind().String())
	}
}

func filled[T any]() T {
	var v T
	n := 0
	fill(reflect.ValueOf(&v).Elem(), &n)
	return v
}

// roundTrip encodes from, decodes it into to (refusing fields to lacks)
// and requires to to encode to the same JSON.
func roundTrip(t *testing.T, from, to any) {
	t.Helper()
	a, err := json.Marshal(from)
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(a))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(to), "%T into %T: %s", from, to, a)
	b, err := json.Marshal(to)
	require.NoError(t, err)
	require.JSONEq(t, string(a), string(b), "%T and %T", from, to)
}

// The client's types carry exactly the API's JSON, field for field, both
// ways: every field set, and none set.
func TestTrustStoreTypesMirrorTheAPI(t *testing.T) {
	t.Parallel()
	answers := []struct{ server, client any }{
		{filled[truststore.CA](), &apiclient.CA{}},
		{truststore.CA{}, &apiclient.CA{}},
		{filled[truststore.Identity](), &apiclient.Identity{}},
		{truststore.Identity{}, &apiclient.Identity{}},
		{filled[truststore.Verification](), &apiclient.Verification{}},
		{truststore.Verification{}, &apiclient.Verification{}},
		{filled[truststore.RotateResult](), &apiclient.RotateResult{}},
		{truststore.RotateResult{}, &apiclient.RotateResult{}},
		{filled[custody.Result](), &apiclient.KEKRotation{}},
		{custody.Result{}, &apiclient.KEKRotation{}},
		{filled[api.CreatedIdentity](), &apiclient.CreatedIdentity{}},
		{api.CreatedIdentity{}, &apiclient.CreatedIdentity{}},
		{filled[api.PruneResult](), &apiclient.PruneResult{}},
		{api.PruneResult{}, &apiclient.PruneResult{}},
	}
	for _, a := range answers {
		roundTrip(t, a.server, a.client)
	}

	requests := []struct{ client, server any }{
		{filled[apiclient.CARequest](), &api.CARequest{}},
		{filled[apiclient.VerifyRequest](), &api.VerifyRequest{}},
		{filled[apiclient.ImportIdentityRequest](), &api.ImportIdentityRequest{}},
		{filled[apiclient.CreateIdentityRequest](), &api.CreateIdentityRequest{}},
		{filled[apiclient.InstallCertRequest](), &api.InstallCertRequest{}},
		{filled[apiclient.RotateRequest](), &api.RotateRequest{}},
		{apiclient.RotateRequest{}, &api.RotateRequest{}},
		// And the other way: the client can send every field the API takes.
		{filled[api.CARequest](), &apiclient.CARequest{}},
		{filled[api.VerifyRequest](), &apiclient.VerifyRequest{}},
		{filled[api.ImportIdentityRequest](), &apiclient.ImportIdentityRequest{}},
		{filled[api.CreateIdentityRequest](), &apiclient.CreateIdentityRequest{}},
		{filled[api.InstallCertRequest](), &apiclient.InstallCertRequest{}},
		{filled[api.RotateRequest](), &apiclient.RotateRequest{}},
		{filled[api.ActivateRequest](), &struct {
			Version int `json:"version"`
		}{}},
	}
	for _, r := range requests {
		roundTrip(t, r.client, r.server)
	}
}

// call is one request the fake server saw.
type call struct {
	Pattern string
	Query   string
	Body    string
}

// apiRoutes serves the API's own route patterns, records each request and
// answers it as the API does: 204 with no body for DELETE, else status and
// body.
func apiRoutes(t *testing.T, status int, body string) (*apiclient.Client, *[]call) {
	t.Helper()
	srv := api.New(api.Config{Trust: new(truststore.Service), RotateKEK: func(context.Context, audit.Actor, custody.Progress) (custody.Result, error) {
		return custody.Result{}, nil
	}})
	var calls []call
	mux := http.NewServeMux()
	for _, rt := range srv.Routes() {
		mux.HandleFunc(rt.Method+" "+rt.Path, func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			require.NoError(t, err)
			calls = append(calls, call{Pattern: r.Pattern, Query: r.URL.RawQuery, Body: string(b)})
			if r.Method == http.MethodDelete && status < 400 {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, body)
		})
	}
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	c, err := apiclient.New(hs.URL, "tok", nil)
	require.NoError(t, err)
	return c, &calls
}

// Every call goes to the API route it is meant for, with the body and
// query the route takes.
func TestTrustStoreCallsReachTheirRoutes(t *testing.T) {
	t.Parallel()
	c, calls := apiRoutes(t, http.StatusOK, "{}")
	ctx := t.Context()
	steps := []struct {
		do   func() error
		want call
	}{
		{func() error { _, err := c.AddCA(ctx, apiclient.CARequest{Name: "hr", Data: []byte("pem")}); return err },
			call{Pattern: "POST /api/v1/cas", Body: `{"name":"hr","data":"cGVt"}`}},
		{func() error { _, err := c.ListCAs(ctx); return err }, call{Pattern: "GET /api/v1/cas"}},
		{func() error { _, err := c.GetCA(ctx, "hr"); return err }, call{Pattern: "GET /api/v1/cas/{name}"}},
		{func() error {
			_, err := c.UpdateCA(ctx, "hr", apiclient.CARequest{Name: "ignored", Data: []byte("pem"), AllowExpired: true})
			return err
		}, call{Pattern: "PUT /api/v1/cas/{name}", Body: `{"data":"cGVt","allow_expired":true}`}},
		{func() error { return c.RemoveCA(ctx, "hr") }, call{Pattern: "DELETE /api/v1/cas/{name}"}},
		{func() error {
			_, err := c.VerifyCA(ctx, "hr", apiclient.VerifyRequest{Leaf: []byte("x"), Purpose: "client"})
			return err
		},
			call{Pattern: "POST /api/v1/cas/{name}/verify", Body: `{"leaf":"eA==","purpose":"client"}`}},
		{func() error {
			_, err := c.ImportIdentity(ctx, apiclient.ImportIdentityRequest{Name: "id", Material: apiclient.Material{PKCS12: []byte("p"), PKCS12Password: "pw"}})
			return err
		}, call{Pattern: "POST /api/v1/identities/import", Body: `{"name":"id","pkcs12":"cA==","pkcs12_password":"pw"}`}},
		{func() error {
			_, err := c.CreateIdentity(ctx, apiclient.CreateIdentityRequest{Name: "id", GenerateRequest: apiclient.GenerateRequest{Subject: "CN=x", DNSNames: []string{"a"}}})
			return err
		}, call{Pattern: "POST /api/v1/identities", Body: `{"name":"id","subject":"CN=x","dns_names":["a"]}`}},
		{func() error { _, err := c.ListIdentities(ctx, ""); return err }, call{Pattern: "GET /api/v1/identities"}},
		{func() error { _, err := c.ListIdentities(ctx, "720h"); return err }, call{Pattern: "GET /api/v1/identities", Query: "expiring=720h"}},
		{func() error { _, err := c.GetIdentity(ctx, "id"); return err }, call{Pattern: "GET /api/v1/identities/{name}"}},
		{func() error { return c.RemoveIdentity(ctx, "id") }, call{Pattern: "DELETE /api/v1/identities/{name}"}},
		{func() error {
			_, err := c.InstallCert(ctx, "id", apiclient.InstallCertRequest{Cert: []byte("c")})
			return err
		},
			call{Pattern: "POST /api/v1/identities/{name}/certificate", Body: `{"cert":"Yw=="}`}},
		{func() error {
			_, err := c.RotateIdentity(ctx, "id", apiclient.RotateRequest{Generate: &apiclient.GenerateRequest{Subject: "CN=x"}, Stage: true})
			return err
		}, call{Pattern: "POST /api/v1/identities/{name}/rotate", Body: `{"generate":{"subject":"CN=x"},"stage":true}`}},
		{func() error { _, err := c.ActivateIdentity(ctx, "id", 2); return err },
			call{Pattern: "POST /api/v1/identities/{name}/activate", Body: `{"version":2}`}},
		{func() error { _, err := c.PruneIdentity(ctx, "id"); return err }, call{Pattern: "POST /api/v1/identities/{name}/prune"}},
		{func() error { _, err := c.RotateKEK(ctx, nil); return err }, call{Pattern: "POST /api/v1/kek/rotate", Query: "progress=true"}},
	}
	for i, s := range steps {
		require.NoError(t, s.do(), s.want.Pattern)
		require.Len(t, *calls, i+1, s.want.Pattern)
		require.Equal(t, s.want, (*calls)[i])
	}
}

func TestTrustStoreErrorsCarryTheAPIError(t *testing.T) {
	t.Parallel()
	c, _ := apiRoutes(t, http.StatusConflict, `{"error":{"code":"in_use","message":"CA \"hr\" is still used by connectors: a","hint":"remove it from those connectors first"}}`)
	err := c.RemoveCA(t.Context(), "hr")
	var apiErr *apiclient.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, apiclient.Error{Status: http.StatusConflict, Code: "in_use", Message: `CA "hr" is still used by connectors: a`, Hint: "remove it from those connectors first"}, *apiErr)

	_, err = c.VerifyCA(t.Context(), "hr", apiclient.VerifyRequest{Leaf: []byte("x")})
	require.True(t, apiclient.IsStatus(err, http.StatusConflict))
}
