package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

const echoFlow = `apiVersion: trustflow/v1
kind: Flow
name: echo-all
trigger: {manual: {}}
steps:
  - id: bearer
    call: {connector: echo-bearer, method: GET, path: /echo}
  - id: apikey
    call: {connector: echo-apikey, method: GET, path: /echo}
  - id: basic
    call: {connector: echo-basic, method: GET, path: /echo}
output:
  bearer: ${steps.bearer.body}
  basic: ${steps.basic.headers}
`

// TestNoConnectorSecretIsStored: an upstream that echoes every request
// header back (raw, base64 and URL-encoded, in its body and its headers)
// is called by a flow through bearer, API-key and basic connectors; then
// the whole database, the server's log and the audit export are scanned
// for each secret in each usual form: none is found, on either database.
func TestNoConnectorSecretIsStored(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			var logs kekLog
			a := newKEKApp(t, kekConfig(t, d), &logs)
			require.NoError(t, a.Start(ctx))
			c := newAPIClient(t, a.URL(), a.AdminToken)

			ca := truststoretest.NewCA(t)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var b strings.Builder
				_ = r.Header.Write(&b)
				all := b.String()
				w.Header().Set("X-Echo", strings.ReplaceAll(all, "\r\n", " | "))
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(map[string]string{"raw": all, "b64": base64.StdEncoding.EncodeToString([]byte(all)), "q": url.QueryEscape(all)})
			}))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.IssueServer(t, "127.0.0.1").TLSCertificate()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
			srv.StartTLS()
			t.Cleanup(srv.Close)
			su, err := url.Parse(srv.URL)
			require.NoError(t, err)
			require.NoError(t, c.Do(ctx, http.MethodPost, "/api/v1/policy/allow", nil, map[string]string{"host": su.Hostname(), "ports": su.Port()}, nil))
			_, err = c.AddCA(ctx, apiclient.CARequest{Name: "echo-ca", Data: ca.CertPEM()})
			require.NoError(t, err)
			leaf := ca.IssueClient(t, "trustflow")
			_, err = c.ImportIdentity(ctx, apiclient.ImportIdentityRequest{Name: "echo-client", Material: apiclient.Material{Cert: leaf.CertPEM(), Key: leaf.KeyPEM()}})
			require.NoError(t, err)

			const bearer, key, pass = "bearer-Tok+en/0123456789==", "api-key-\"quoted\"-456789", "basic pa$$ word"
			spec := func(name, authType string) apiclient.ConnectorSpec {
				return apiclient.ConnectorSpec{Name: name, URL: srv.URL, Auth: authType, Identity: "echo-client", CAs: []string{"echo-ca"}}
			}
			b := spec("echo-bearer", "bearer")
			b.Secrets.Token = bearer
			k := spec("echo-apikey", "api-key")
			k.AuthSettings.HeaderName = "X-API-Key"
			k.Secrets.APIKey = key
			p := spec("echo-basic", "basic")
			p.AuthSettings.Username = "svc-user"
			p.Secrets.Password = pass
			for _, s := range []apiclient.ConnectorSpec{b, k, p} {
				_, err := c.CreateConnector(ctx, s)
				require.NoError(t, err, s.Name)
			}
			_, err = c.ApplyFlows(ctx, []apiclient.FlowSource{{Filename: "echo.yaml", Source: echoFlow}})
			require.NoError(t, err)
			run, err := c.StartRun(ctx, "echo-all", nil, 20*time.Second)
			require.NoError(t, err)
			require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)
			res, err := c.CallConnector(ctx, "echo-bearer", apiclient.CallRequest{Method: "GET", Path: "/echo"})
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, res.Status)

			var forms []string
			for _, s := range []string{bearer, key, pass} {
				js, _ := json.Marshal(s)
				forms = append(forms, s, url.QueryEscape(s), string(js[1:len(js)-1]), base64.StdEncoding.EncodeToString([]byte(s)))
			}
			forms = append(forms, base64.StdEncoding.EncodeToString([]byte("svc-user:"+pass)))

			// Everything stored: every column of every table.
			var stored bytes.Buffer
			inv := scanDatabase(t, a.Store, map[string]bool{})
			require.NotEmpty(t, inv.tables)
			dumpDatabase(t, a, &stored)
			var exported bytes.Buffer
			_, err = a.Audit.Export(ctx, &exported, audit.Filter{})
			require.NoError(t, err)
			require.Contains(t, stored.String(), "[redacted]", "the echoed secrets were stored redacted")
			for _, f := range forms {
				require.NotContains(t, stored.String(), f, "the database holds a form of a secret")
				require.NotContains(t, logs.String(), f, "the log holds a form of a secret")
				require.NotContains(t, exported.String(), f, "the audit export holds a form of a secret")
				require.NotContains(t, fmt.Sprint(res.Body, res.Headers), f, "connector call answered a form of a secret")
			}
		})
	}
}

// dumpDatabase writes every value of every table to w, as text.
func dumpDatabase(t *testing.T, a *App, w *bytes.Buffer) {
	t.Helper()
	ctx := context.Background()
	inv := scanDatabase(t, a.Store, map[string]bool{})
	for _, table := range inv.tables {
		rows, err := a.Store.DB().QueryContext(ctx, `SELECT * FROM "`+table+`"`)
		require.NoError(t, err)
		cols, err := rows.Columns()
		require.NoError(t, err)
		vals := make([]any, len(cols))
		dest := make([]any, len(cols))
		for i := range vals {
			dest[i] = &vals[i]
		}
		for rows.Next() {
			require.NoError(t, rows.Scan(dest...))
			for _, v := range vals {
				switch v := v.(type) {
				case []byte:
					w.Write(v)
				default:
					fmt.Fprint(w, v)
				}
				w.WriteByte('\n')
			}
		}
		require.NoError(t, rows.Err())
		require.NoError(t, rows.Close())
	}
}
