// Package quickstart owns `trustflow quickstart`, the newcomer's first
// command: it starts a demo HTTPS endpoint on loopback that requires a
// client certificate, starts the embedded trustflow server, and uses the
// API (as any client would) to add the demo CA, create an identity whose key
// never leaves trustflow, have it signed, create a connector, and make a
// real mutual-TLS call through it, printing the handshake evidence.
package quickstart

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/app"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/tlsconfig"
)

// Names of what the quickstart creates.
const (
	CAName        = "quickstart-ca"
	IdentityName  = "quickstart"
	ConnectorName = "quickstart-directory"
	FlowName      = "quickstart-offboard"
)

// SampleFlow is the flow the quickstart applies and runs: look a user up,
// disable them, and remove them from their groups, every call over mutual
// TLS through the demo connector.
const SampleFlow = `apiVersion: trustflow/v1
kind: Flow
name: quickstart-offboard
description: Disable a departed user in the demo directory, over mutual TLS
trigger: {manual: {}}
input:
  user_id: {type: string, required: true}
steps:
  - id: lookup
    call: {connector: quickstart-directory, method: GET, path: "/users/${input.user_id}", headers: {Accept: application/json}}
    retry: {max_attempts: 3, initial_backoff: 200ms}
  - id: decide
    if: ${steps.lookup.body.active}
    then:
      - id: disable
        call: {connector: quickstart-directory, method: POST, path: /disable, body: {login: "${steps.lookup.body.login}"}}
  - id: groups
    foreach: ${steps.lookup.body.groups}
    as: group
    concurrency: 2
    steps:
      - id: remove
        call: {connector: quickstart-directory, method: DELETE, path: "/groups/${group}/members/${input.user_id}"}
output:
  login: ${steps.lookup.body.login}
  disabled: ${steps.disable.body.disabled}
  presented_serial: ${steps.lookup.tls.client_certificate.serial}
`

// Options configure a quickstart run.
type Options struct {
	// Config is the embedded server's configuration (data dir, listen address).
	Config config.Config
	Build  api.BuildInfo
	// Logger receives the server's logs. Defaults to warnings only on Stderr.
	Logger *slog.Logger
	Stdout io.Writer
	Stderr io.Writer
	// Exit returns once the demo is done instead of serving until ctx ends.
	Exit bool
	// KeyStore, when a pkcs11: URI, generates the demo identity's key in
	// that token instead of sealing it. Defaults to sealed.
	KeyStore string
}

// Result is what the quickstart did, for scripts (-o json).
type Result struct {
	Server      string                  `json:"server"`
	DataDir     string                  `json:"data_dir"`
	TokenFile   string                  `json:"token_file"`
	Endpoint    string                  `json:"endpoint"`
	Connector   string                  `json:"connector"`
	Identity    apiclient.Identity      `json:"identity"`
	Test        apiclient.ConnectorTest `json:"test"`
	Call        apiclient.CallResponse  `json:"call"`
	Run         apiclient.Run           `json:"run"`
	IdempotKeys []string                `json:"idempotency_keys_seen,omitempty"`
}

// Run runs the quickstart.
func Run(ctx context.Context, opts Options) (Result, error) {
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(opts.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	cfg := opts.Config.WithDefaults()
	now := time.Now()
	say := func(format string, args ...any) { fmt.Fprintf(opts.Stdout, format+"\n", args...) }

	ca, err := newDemoCA(now)
	if err != nil {
		return Result{}, err
	}
	endpoint, err := startEndpoint(ca, now)
	if err != nil {
		return Result{}, err
	}
	defer endpoint.close()
	say("1. Started a demo directory API at %s that accepts only client certificates issued by %q.", endpoint.url, ca.cert.Subject.CommonName)

	a, err := app.New(ctx, cfg, app.Options{Logger: opts.Logger, Build: opts.Build, Stderr: opts.Stderr})
	if err != nil {
		return Result{}, err
	}
	if err := a.Start(ctx); err != nil {
		a.Stop()
		return Result{}, fmt.Errorf("%w (another trustflow may be running: stop it, or pass --listen 127.0.0.1:0)", err)
	}
	defer a.Stop()
	tokenFile := filepath.Join(cfg.DataDir, config.AdminTokenFile)
	token := a.AdminToken
	if token == "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return Result{}, fmt.Errorf("quickstart: this data dir was initialised before and its admin token file %s cannot be read (%w); run the quickstart with a fresh --data-dir", tokenFile, err)
		}
		token = strings.TrimSpace(string(b))
	}
	c, err := apiclient.New(a.URL(), token, nil)
	if err != nil {
		return Result{}, err
	}
	say("2. Started trustflow at %s (data in %s, admin token in %s).", a.URL(), cfg.DataDir, tokenFile)

	res := Result{Server: a.URL(), DataDir: cfg.DataDir, TokenFile: tokenFile, Endpoint: endpoint.url, Connector: ConnectorName}
	if err := ensureCA(ctx, c, ca); err != nil {
		return res, err
	}
	say("3. Added the demo CA to the trust store as %q.", CAName)

	ident, err := ensureIdentity(ctx, c, ca, now, opts.KeyStore)
	if err != nil {
		return res, err
	}
	res.Identity = ident
	if v, ok := ident.Active(); ok {
		say("4. Generated identity %q inside trustflow (its private key never left it), had the demo CA sign its CSR,", IdentityName)
		say("   and installed the certificate: version %d, serial %s.", v.Version, v.Serial)
	}

	rule, err := allowEndpoint(ctx, c, endpoint.url)
	if err != nil {
		return res, err
	}
	if err := ensureConnector(ctx, c, endpoint.url); err != nil {
		return res, err
	}
	say("5. Created connector %q: %s, auth mtls, presenting %q, trusting %q.", ConnectorName, endpoint.url, IdentityName, CAName)
	say("   The egress policy denies loopback addresses, so the quickstart allowed its own endpoint: %s ports %s", rule.Host, rule.Ports)
	say("   (`trustflow policy show` lists it; `trustflow policy disallow --host %s --ports %s` removes it).", rule.Host, rule.Ports)

	test, err := c.TestConnector(ctx, ConnectorName, "")
	if err != nil {
		return res, err
	}
	res.Test = test
	if !test.OK {
		return res, fmt.Errorf("quickstart: connector test failed: %s (%s)", test.Error.Message, test.Error.Hint)
	}
	call, err := c.CallConnector(ctx, ConnectorName, apiclient.CallRequest{Method: "GET", Path: "/users/42", Headers: map[string]string{"Accept": "application/json"}})
	if err != nil {
		return res, err
	}
	res.Call = call
	res.IdempotKeys = endpoint.keys()
	body, _ := json.Marshal(call.Body) // a decoded JSON value always re-encodes
	say("6. Called GET /users/42 through the connector over mutual TLS: status %d, body %s", call.Status, body)
	printEvidence(opts.Stdout, call.Evidence)

	if _, err := c.ApplyFlows(ctx, []apiclient.FlowSource{{Filename: "quickstart-offboard.yaml", Source: SampleFlow}}); err != nil {
		return res, fmt.Errorf("quickstart: apply the sample flow: %w", err)
	}
	run, err := c.StartRun(ctx, FlowName, map[string]any{"user_id": "42"}, time.Minute)
	if err != nil {
		return res, fmt.Errorf("quickstart: run the sample flow: %w", err)
	}
	if run.Status != "succeeded" {
		full, gerr := c.GetRun(ctx, run.ID)
		if gerr == nil {
			run = full
		}
		if run.Error != nil {
			return res, fmt.Errorf("quickstart: the sample flow's run %s ended %s: %s", run.ID, run.Status, run.Error.Message)
		}
		return res, fmt.Errorf("quickstart: the sample flow's run %s is still %s after a minute", run.ID, run.Status)
	}
	if full, err := c.GetRun(ctx, run.ID); err == nil {
		run = full
	}
	res.Run = run
	res.IdempotKeys = endpoint.keys()
	out, _ := json.Marshal(run.Output) // a decoded JSON value always re-encodes
	say("7. Applied flow %q and ran it (run %s): %s, output %s", FlowName, run.ID, run.Status, out)
	for _, st := range run.Steps {
		line := fmt.Sprintf("     %-22s %-8s %-9s", st.Path, st.Kind, st.Status)
		if ev, ok := st.Evidence.(map[string]any); ok {
			if cc, ok := ev["client_certificate"].(map[string]any); ok {
				line += fmt.Sprintf(" %v, presented %v v%v", ev["tls_version"], cc["identity"], cc["version"])
			}
		}
		say("%s", line)
	}
	say("   Every call carried Idempotency-Key <run id>/<step path>, e.g. %s/lookup.", run.ID)
	say("")
	say("The console is at %s/ (sign in with the admin token in %s).", a.URL(), tokenFile)
	say("The API is at %s (OpenAPI: %s/api/v1/openapi.json). Try:", a.URL(), a.URL())
	say("  trustflow --server %s run show %s", a.URL(), run.ID)
	say("  trustflow --server %s connector show %s", a.URL(), ConnectorName)
	say("  trustflow --server %s identity show %s", a.URL(), IdentityName)
	say("  trustflow --server %s audit list", a.URL())
	if opts.Exit {
		return res, nil
	}
	say("")
	say("Serving until Ctrl-C.")
	<-ctx.Done()
	return res, nil
}

func printEvidence(w io.Writer, ev *apiclient.Evidence) {
	if ev == nil {
		return
	}
	fmt.Fprintf(w, "   Handshake evidence: %s, %s\n", ev.TLSVersion, ev.CipherSuite)
	fmt.Fprintf(w, "     server asked for a client certificate: %v (acceptable CAs: %s)\n", ev.ServerRequestedClientCert, strings.Join(ev.AcceptableCAs, "; "))
	if cc := ev.ClientCertificate; cc != nil {
		fmt.Fprintf(w, "     presented: identity %s version %d, serial %s\n", cc.Identity, cc.Version, cc.Serial)
		fmt.Fprintf(w, "                sha256 %s\n", cc.FingerprintSHA256)
	}
	for i, c := range ev.ServerChain {
		fmt.Fprintf(w, "     server chain[%d]: %s (issued by %s)\n", i, c.Subject, c.Issuer)
	}
	fmt.Fprintf(w, "     resumed: %v\n", ev.Resumed)
}

func ensureCA(ctx context.Context, c *apiclient.Client, ca *demoCA) error {
	req := apiclient.CARequest{Name: CAName, Description: "trustflow quickstart demo CA", Data: ca.certPEM()}
	_, err := c.AddCA(ctx, req)
	if apiclient.IsStatus(err, http.StatusConflict) {
		_, err = c.UpdateCA(ctx, CAName, req)
	}
	if err != nil {
		return fmt.Errorf("quickstart: add the demo CA: %w", err)
	}
	return nil
}

// ensureIdentity creates the identity (or rotates it, on a second run) with
// a key generated inside trustflow, and installs the certificate the demo
// CA issues for its CSR.
func ensureIdentity(ctx context.Context, c *apiclient.Client, ca *demoCA, now time.Time, keyStore string) (apiclient.Identity, error) {
	gen := apiclient.GenerateRequest{Subject: "CN=trustflow-quickstart,O=trustflow quickstart", KeyType: "ecdsa-p256", KeyStore: keyStore}
	var csr string
	created, err := c.CreateIdentity(ctx, apiclient.CreateIdentityRequest{Name: IdentityName, Description: "trustflow quickstart client identity", GenerateRequest: gen})
	switch {
	case err == nil:
		csr = created.CSR
	case apiclient.IsStatus(err, http.StatusConflict):
		rot, rerr := c.RotateIdentity(ctx, IdentityName, apiclient.RotateRequest{Generate: &gen})
		if rerr != nil {
			return apiclient.Identity{}, fmt.Errorf("quickstart: rotate the demo identity: %w", rerr)
		}
		csr = rot.CSR
	default:
		return apiclient.Identity{}, fmt.Errorf("quickstart: create the demo identity: %w", err)
	}
	cert, err := ca.signClientCSR([]byte(csr), now)
	if err != nil {
		return apiclient.Identity{}, err
	}
	ident, err := c.InstallCert(ctx, IdentityName, apiclient.InstallCertRequest{Cert: cert})
	if err != nil {
		return apiclient.Identity{}, fmt.Errorf("quickstart: install the demo identity's certificate: %w", err)
	}
	return ident, nil
}

// allowEndpoint adds the egress rule that opens the demo endpoint, which
// listens on loopback, a destination the policy denies by default.
func allowEndpoint(ctx context.Context, c *apiclient.Client, endpoint string) (policy.Rule, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return policy.Rule{}, fmt.Errorf("quickstart: the demo endpoint's URL: %w", err)
	}
	rule := policy.Rule{Host: u.Hostname(), Ports: u.Port()}
	if _, err := c.AllowEgress(ctx, rule); err != nil {
		return policy.Rule{}, fmt.Errorf("quickstart: allow the demo endpoint in the egress policy: %w", err)
	}
	return rule, nil
}

func ensureConnector(ctx context.Context, c *apiclient.Client, url string) error {
	spec := apiclient.ConnectorSpec{Name: ConnectorName, Description: "trustflow quickstart demo directory", URL: url, Auth: "mtls",
		Identity: IdentityName, CAs: []string{CAName}, Timeout: "10s"}
	_, err := c.CreateConnector(ctx, spec)
	if apiclient.IsStatus(err, http.StatusConflict) {
		_, err = c.UpdateConnector(ctx, spec)
	}
	if err != nil {
		return fmt.Errorf("quickstart: create the demo connector: %w", err)
	}
	return nil
}

// endpoint is the demo directory API: HTTPS on loopback, client
// certificates required.
type endpoint struct {
	url  string
	srv  *http.Server
	mu   sync.Mutex
	seen []string
}

func startEndpoint(ca *demoCA, now time.Time) (*endpoint, error) {
	cert, err := ca.serverCertificate(now)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("quickstart: listen for the demo endpoint: %w", err)
	}
	e := &endpoint{url: "https://" + ln.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		e.record(r)
		writeDemoJSON(w, http.StatusOK, map[string]any{"id": r.PathValue("id"), "login": "jdoe", "active": true, "groups": []string{"vpn", "payroll"},
			"seen_client": r.TLS.PeerCertificates[0].Subject.CommonName})
	})
	mux.HandleFunc("POST /disable", func(w http.ResponseWriter, r *http.Request) {
		e.record(r)
		writeDemoJSON(w, http.StatusOK, map[string]any{"disabled": true})
	})
	mux.HandleFunc("DELETE /groups/{group}/members/{id}", func(w http.ResponseWriter, r *http.Request) {
		e.record(r)
		w.WriteHeader(http.StatusNoContent)
	})
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: tlsconfig.Server(tlsconfig.ServerOptions{Certificates: []tls.Certificate{cert}, RequireClientCert: true, ClientCAs: ca.pool()})}
	go func() {
		if err := e.srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "quickstart: demo endpoint:", err)
		}
	}()
	return e, nil
}

func (e *endpoint) record(r *http.Request) {
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		e.mu.Lock()
		e.seen = append(e.seen, k)
		e.mu.Unlock()
	}
}

func (e *endpoint) keys() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.seen...)
}

func (e *endpoint) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = e.srv.Shutdown(ctx) // the demo endpoint holds nothing worth waiting for
}

func writeDemoJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client going away is not the demo's problem
}
