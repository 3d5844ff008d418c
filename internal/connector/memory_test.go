package connector_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/truststore"
)

// memConnectors is how many connectors the memory tests create.
const memConnectors = 1000

// countingServer is a loopback HTTP/2 mTLS server that counts the
// connections open on it.
type countingServer struct {
	*httptest.Server
	open, opened atomic.Int64
}

func startCountingServer(t testing.TB, e *env) *countingServer {
	t.Helper()
	cs := &countingServer{Server: httptest.NewUnstartedServer(okHandler)}
	cs.EnableHTTP2 = true
	cs.TLS = serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool())
	cs.Config.ErrorLog = log.New(io.Discard, "", 0)
	cs.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			cs.open.Add(1)
			cs.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			cs.open.Add(-1)
		}
	}
	cs.StartTLS()
	t.Cleanup(cs.Close)
	return cs
}

// useEach calls every connector once through s and returns the heap in
// use afterwards, less the heap before.
func useEach(t testing.TB, s *connector.Service) int64 {
	t.Helper()
	before := heapInUse()
	for i := range memConnectors {
		require.NoError(t, connectorGet(s, fmt.Sprintf("c%04d", i)))
	}
	after := heapInUse()
	runtime.KeepAlive(s)
	return int64(after) - int64(before)
}

// TestConnectorMemoryAfterUse creates 1,000 connectors against one server
// and calls each once, through a service with the default bound on idle
// connectors and through one without a bound, as before it existed. Each
// connector may keep an idle connection only under the second: the heap a
// used connector costs under the bound must be a small fraction of what it
// costs with its idle connection (both ends of it, the server runs here),
// measured in the same run.
func TestConnectorMemoryAfterUse(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("creates 1,000 connectors to measure the heap (not under -short or -race)")
	}
	ctx := context.Background()
	e := sqliteEnv(t, withoutCallAudit())
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	srv := startCountingServer(t, e)
	for i := range memConnectors {
		e.create(t, connector.Spec{Name: fmt.Sprintf("c%04d", i), URL: srv.URL, Identity: "svc", CAs: []string{"demo"}})
	}
	off := false
	e.create(t, connector.Spec{Name: "hot", URL: srv.URL, Identity: "svc", CAs: []string{"demo"}})
	service := func(idle int) *connector.Service {
		s, err := connector.New(connector.Config{Store: e.st, Audit: e.log, Trust: e.trust, AuditCalls: &off, IdleConnectors: idle})
		require.NoError(t, err)
		// Warm up what is built once per process (HTTP/2, TLS tables).
		require.NoError(t, connectorGet(s, "hot"))
		return s
	}

	bounded := service(connector.DefaultIdleConnectors)
	boundedGrowth := useEach(t, bounded)
	require.LessOrEqual(t, srv.open.Load(), int64(connector.DefaultIdleConnectors+1), "at most the bound of connectors keep a connection")

	unbounded := service(-1)
	unboundedGrowth := useEach(t, unbounded)
	require.GreaterOrEqual(t, srv.open.Load(), int64(memConnectors), "without a bound every connector keeps its connection")

	perBounded, perUnbounded := float64(boundedGrowth)/memConnectors, float64(unboundedGrowth)/memConnectors
	ratio := perBounded / perUnbounded
	t.Logf("heap per used connector: %.0f B under the bound of %d, %.0f B each keeping its idle connection (ratio %.2f)",
		perBounded, connector.DefaultIdleConnectors, perUnbounded, ratio)
	require.Less(t, ratio, 0.33, "a used connector costs %.0f B of heap, its idle connection included %.0f B", perBounded, perUnbounded)

	// A connector evicted from the idle set resumes its TLS session.
	resp, err := bounded.Do(ctx, "c0000", connector.Request{Path: "/"})
	require.NoError(t, err)
	require.True(t, resp.Evidence.Resumed, "a connector whose idle connection was closed resumes its session")

	// The hot path: a connector called in a loop, among fewer others than
	// the bound, keeps its one kept-alive connection.
	require.NoError(t, connectorGet(bounded, "hot"))
	for i := range 32 {
		require.NoError(t, connectorGet(bounded, fmt.Sprintf("c%04d", 100+i)))
	}
	opened := srv.opened.Load()
	for i := range 200 {
		require.NoError(t, connectorGet(bounded, "hot"))
		require.NoError(t, connectorGet(bounded, fmt.Sprintf("c%04d", 100+i%32)))
	}
	require.Equal(t, opened, srv.opened.Load(), "connectors called in turn, fewer than the bound, keep their connections")
}

// rssFigures are what the RSS child reports, in bytes.
type rssFigures struct {
	Created int64 `json:"created"`
	Used    int64 `json:"used"`
}

// TestConnectorRSS measures the resident set of a process holding 1,000
// connectors, created and then each used once against a server in this
// process, the way `ps` would show it for trustflow: the connectors live in
// a child process (this test binary run again) that reports its VmRSS.
// It runs the child with the default bound on idle connectors and without
// a bound, and requires the growth under the bound to be well under half.
func TestConnectorRSS(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("runs child processes with 1,000 connectors to measure their memory (not under -short or -race)")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc/self/status to read the resident set from")
	}
	e := sqliteEnv(t, withoutCallAudit())
	srv := startCountingServer(t, e)
	leaf := e.ca.IssueClient(t, "trustflow svc")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.pem"), e.ca.CertPEM(), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cert.pem"), leaf.CertPEM(), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "key.pem"), leaf.KeyPEM(), 0o600))
	run := func(idle int) rssFigures {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestConnectorRSSChild$", "-test.v")
		cmd.Env = append(os.Environ(), "TRUSTFLOW_RSS_CHILD="+dir, "TRUSTFLOW_RSS_URL="+srv.URL, "TRUSTFLOW_RSS_IDLE="+strconv.Itoa(idle))
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			if line, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "rss: "); ok {
				var f rssFigures
				require.NoError(t, json.Unmarshal([]byte(line), &f))
				return f
			}
		}
		t.Fatalf("the child reported no figures:\n%s", out)
		return rssFigures{}
	}
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	bounded, unbounded := run(connector.DefaultIdleConnectors), run(-1)
	t.Logf("RSS of %d connectors: created %.1f MiB; each used once %.1f MiB (bound %d), %.1f MiB (no bound, created %.1f MiB)",
		memConnectors, mib(bounded.Created), mib(bounded.Used), connector.DefaultIdleConnectors, mib(unbounded.Used), mib(unbounded.Created))
	require.Less(t, float64(bounded.Used-bounded.Created), 0.5*float64(unbounded.Used-unbounded.Created),
		"the resident set grows by %.1f MiB when each connector is used once, %.1f MiB when each keeps its connection",
		mib(bounded.Used-bounded.Created), mib(unbounded.Used-unbounded.Created))
}

// TestConnectorRSSChild is TestConnectorRSS's child process.
func TestConnectorRSSChild(t *testing.T) {
	dir := os.Getenv("TRUSTFLOW_RSS_CHILD")
	if dir == "" {
		t.Skip("run by TestConnectorRSS")
	}
	ctx := context.Background()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		return b
	}
	idle, err := strconv.Atoi(os.Getenv("TRUSTFLOW_RSS_IDLE"))
	require.NoError(t, err)
	e := sqliteEnv(t, withoutCallAudit())
	_, err = e.trust.AddCA(ctx, admin, truststore.CARequest{Name: "demo", Data: read("ca.pem")})
	require.NoError(t, err)
	_, err = e.trust.Import(ctx, admin, truststore.ImportRequest{Name: "svc", Material: truststore.Material{Cert: read("cert.pem"), Key: read("key.pem")}})
	require.NoError(t, err)
	off := false
	s, err := connector.New(connector.Config{Store: e.st, Audit: e.log, Trust: e.trust, AuditCalls: &off, IdleConnectors: idle})
	require.NoError(t, err)
	url := os.Getenv("TRUSTFLOW_RSS_URL")
	for i := range memConnectors {
		_, err := s.Create(ctx, admin, connector.Spec{Name: fmt.Sprintf("c%04d", i), URL: url, Identity: "svc", CAs: []string{"demo"}})
		require.NoError(t, err)
	}
	var f rssFigures
	f.Created = residentSet(t)
	for i := range memConnectors {
		require.NoError(t, connectorGet(s, fmt.Sprintf("c%04d", i)))
	}
	f.Used = residentSet(t)
	runtime.KeepAlive(s)
	b, err := json.Marshal(f)
	require.NoError(t, err)
	fmt.Printf("rss: %s\n", b)
}

// residentSet is the process's VmRSS after a collection that returns the
// freed memory to the system.
func residentSet(t testing.TB) int64 {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// TestReleasedConnectorResumes checks what a connector released for the
// bound on idle connectors keeps: its next call makes a new connection,
// resumed from its TLS session, with the OAuth2 token it already had.
func TestReleasedConnectorResumes(t *testing.T) {
	ctx := context.Background()
	e := sqliteEnv(t, withoutCallAudit())
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	api := startServer(t, okHandler, serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), true)
	var te tokenEndpoint
	idp := startServer(t, &te, serverConfig(e.ca.IssueServer(t, "127.0.0.1"), nil), false)
	sp := mtlsSpec("oauth", api)
	sp.Auth = connector.AuthOAuth2
	sp.AuthSettings = connector.AuthSettings{TokenURL: idp.URL + "/oauth2/token", ClientID: "trustflow"}
	sp.Secrets = connector.Secrets{ClientSecret: "s3cret"}
	e.create(t, sp)
	e.create(t, mtlsSpec("other", api))
	off := false
	s, err := connector.New(connector.Config{Store: e.st, Audit: e.log, Trust: e.trust, AuditCalls: &off, IdleConnectors: 1})
	require.NoError(t, err)

	resp, err := s.Do(ctx, "oauth", connector.Request{Path: "/"})
	require.NoError(t, err)
	require.False(t, resp.Evidence.Resumed)
	for range 3 {
		before := api.newConns.Load()
		require.NoError(t, connectorGet(s, "other")) // releases "oauth"
		resp, err = s.Do(ctx, "oauth", connector.Request{Path: "/"})
		require.NoError(t, err)
		require.Equal(t, before+2, api.newConns.Load(), "each connector, released in turn, connects again")
		require.True(t, resp.Evidence.Resumed, "a released connector resumes its TLS session")
		require.NotNil(t, resp.Evidence.ClientCertificate, "the resumed connection reports the identity of the full handshake")
	}
	require.Equal(t, int64(1), te.hits.Load(), "a released connector keeps its OAuth2 token")

	// A change to the connector starts afresh.
	up, err := e.conns.Spec(ctx, "oauth")
	require.NoError(t, err)
	up.Description = "changed"
	up.Secrets = connector.Secrets{ClientSecret: "s3cret"}
	_, err = e.conns.Update(ctx, admin, up)
	require.NoError(t, err)
	require.NoError(t, connectorGet(s, "other"))
	_, err = s.Do(ctx, "oauth", connector.Request{Path: "/"})
	require.NoError(t, err)
	require.Equal(t, int64(2), te.hits.Load(), "a changed connector fetches a new token")
}

// TestReleaseUnderLoad calls more connectors than the bound on idle
// connectors from several goroutines at once, so that clients are released
// while requests are in flight on them: every call must succeed.
func TestReleaseUnderLoad(t *testing.T) {
	e := sqliteEnv(t, withoutCallAudit())
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	srv := startCountingServer(t, e)
	const connectors = 8
	for i := range connectors {
		e.create(t, connector.Spec{Name: fmt.Sprintf("c%04d", i), URL: srv.URL, Identity: "svc", CAs: []string{"demo"}})
	}
	off := false
	s, err := connector.New(connector.Config{Store: e.st, Audit: e.log, Trust: e.trust, AuditCalls: &off, IdleConnectors: 3})
	require.NoError(t, err)
	_, err = batch(8, 400, func() error {
		return connectorGet(s, fmt.Sprintf("c%04d", rand.IntN(connectors)))
	})
	require.NoError(t, err)
	require.NoError(t, connectorGet(s, "c0000"))
	require.Eventually(t, func() bool { return srv.open.Load() <= 3+1 }, 5*time.Second, 10*time.Millisecond,
		"released clients close the connections their last requests leave idle (%d open)", srv.open.Load())
}
