package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// The process tests run `trustflow serve` as a real process and kill it
// with SIGKILL: nothing in the process gets a chance to clean up.
const (
	procWorkers     = 4
	procJobTimeout  = 2 * time.Second
	procRescueAfter = 4 * time.Second
)

// binary builds cmd/trustflow once for every process test.
var binary = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	dir, err := os.MkdirTemp("", "trustflow-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "trustflow")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/trustflow")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := binary(); err == nil && bin != "" {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin, err := binary()
	require.NoError(t, err)
	return bin
}

// node is one `trustflow serve` process.
type node struct {
	t       *testing.T
	bin     string
	dataDir string
	db      string
	addr    string
	logPath string

	// defaults, when set, starts the node with the server's default
	// --job-timeout and --rescue-after.
	defaults bool

	cmd  *exec.Cmd
	done chan struct{}
}

func newNode(t *testing.T, bin, dataDir, db string) *node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	n := &node{t: t, bin: bin, dataDir: dataDir, db: db, addr: addr, logPath: filepath.Join(t.TempDir(), "serve.log")}
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			if b, err := os.ReadFile(n.logPath); err == nil {
				t.Logf("log of node %s (last 8 KiB):\n%s", n.addr, tail(b, 8<<10))
			}
		}
	})
	return n
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// start starts the process and waits (at most 60s) until it answers.
func (n *node) start() {
	n.t.Helper()
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(n.t, err)
	defer logf.Close()
	args := []string{"serve", "--data-dir", n.dataDir, "--listen", n.addr, "--log-level", "warn", "--workers", fmt.Sprint(procWorkers)}
	if !n.defaults {
		args = append(args, "--job-timeout", procJobTimeout.String(), "--rescue-after", procRescueAfter.String())
	}
	if n.db != "" {
		args = append(args, "--db", n.db)
	}
	cmd := exec.Command(n.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "TRUSTFLOW_DATABASE_URL=")
	require.NoError(n.t, cmd.Start())
	n.cmd, n.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		cmd.Wait() //nolint:errcheck // a killed process exits with an error
		close(done)
	}(n.done)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + n.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-n.done:
			n.t.Fatalf("trustflow serve exited at start; see %s", n.logPath)
		default:
		}
		require.True(n.t, time.Now().Before(deadline), "trustflow serve did not answer in 60s")
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *node) kill() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Kill() //nolint:errcheck // it may have exited already
	<-n.done
	n.cmd = nil
}

// client is an admin API client of the node.
func (n *node) client() *apiclient.Client {
	n.t.Helper()
	tok, err := os.ReadFile(filepath.Join(n.dataDir, "admin.token"))
	require.NoError(n.t, err)
	c, err := apiclient.New("http://"+n.addr, strings.TrimSpace(string(tok)), &http.Client{Timeout: 30 * time.Second})
	require.NoError(n.t, err)
	return c
}

// setupRemote creates, through the API, the CA, identity and connector
// "remote" that reach dir over mutual TLS.
func setupRemote(t *testing.T, c *apiclient.Client, ca *truststoretest.CA, dir *directory) {
	t.Helper()
	ctx := context.Background()
	// The directory listens on loopback, which the egress policy opens only
	// by an explicit rule.
	u, err := url.Parse(dir.srv.URL)
	require.NoError(t, err)
	_, err = c.AllowEgress(ctx, policy.Rule{Host: u.Hostname(), Ports: u.Port()})
	require.NoError(t, err)
	// Every other node applies a policy change within a second (its
	// revalidation interval): wait that out, so no node calls with the old
	// policy.
	time.Sleep(1200 * time.Millisecond)
	_, err = c.AddCA(ctx, apiclient.CARequest{Name: "remote-ca", Data: ca.CertPEM()})
	require.NoError(t, err)
	leaf := ca.IssueClient(t, "trustflow")
	_, err = c.ImportIdentity(ctx, apiclient.ImportIdentityRequest{Name: "svc", Material: apiclient.Material{Cert: leaf.CertPEM(), Key: leaf.KeyPEM()}})
	require.NoError(t, err)
	_, err = c.CreateConnector(ctx, apiclient.ConnectorSpec{Name: "remote", URL: dir.srv.URL, Auth: "none", Identity: "svc", CAs: []string{"remote-ca"}})
	require.NoError(t, err)
}

const crashFlow = `apiVersion: trustflow/v1
kind: Flow
name: crashy
trigger: {manual: {}}
input:
  n: {type: integer, required: true}
steps:
  - id: first
    call: {connector: remote, method: POST, path: /ok/first, body: {n: "${input.n}"}}
    timeout: 900ms # under an advance on these servers (--job-timeout 2s)
    retry: {max_attempts: 3, initial_backoff: 100ms}
  - id: pause
    sleep: 300ms
  - id: each
    foreach: ${[0, 1, 2]}
    concurrency: 2
    steps:
      - id: item
        call: {connector: remote, method: POST, path: "/ok/item/${item}", body: {n: "${input.n}"}}
        timeout: 900ms # under an advance on these servers (--job-timeout 2s)
        retry: {max_attempts: 3, initial_backoff: 100ms}
  - id: last
    call: {connector: remote, method: POST, path: /ok/last, body: {n: "${input.n}"}}
    timeout: 900ms # under an advance on these servers (--job-timeout 2s)
    retry: {max_attempts: 3, initial_backoff: 100ms}
output: {n: "${input.n}"}
`

// crashCalls are the call steps of crashFlow; crashPaths every step path.
var (
	crashCalls = []string{"first", "each[0].item", "each[1].item", "each[2].item", "last"}
	crashPaths = append([]string{"pause", "each"}, crashCalls...)
)

// waitTerminal polls the runs of flow (every 200ms, at most limit) until
// every one of ids has ended, and returns them with their steps.
func waitTerminal(t *testing.T, c *apiclient.Client, ids []string, limit time.Duration) map[string]apiclient.Run {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(limit)
	out := map[string]apiclient.Run{}
	for {
		for _, id := range ids {
			if _, ok := out[id]; ok {
				continue
			}
			r, err := c.GetRun(ctx, id)
			if err != nil {
				continue // the node may be busy restarting a connection; ask again
			}
			switch r.Status {
			case "succeeded", "failed", "cancelled":
				out[id] = r
			}
		}
		if len(out) == len(ids) {
			return out
		}
		if time.Now().After(deadline) {
			var open []string
			for _, id := range ids {
				if _, ok := out[id]; !ok {
					open = append(open, id)
				}
			}
			t.Fatalf("%d of %d runs did not end within %s: %v", len(open), len(ids), limit, open)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCrashRecovery is the durability acceptance test: runs survive their
// node being killed with SIGKILL at random moments, each completed step
// ran once, and re-executed steps carried the same Idempotency-Key.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills trustflow processes")
	}
	bin := buildBinary(t)
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) { crashRecovery(t, bin, d) })
	}
}

func crashRecovery(t *testing.T, bin string, d store.Dialect) {
	ctx := context.Background()
	began := time.Now()
	ca := truststoretest.NewCA(t)
	dir := newDirectory(t, ca)
	dir.delay = func() time.Duration { return time.Duration(10+rand.IntN(70)) * time.Millisecond }
	n := newNode(t, bin, t.TempDir(), storetest.DatabaseURL(t, d))
	n.start()
	c := n.client()
	setupRemote(t, c, ca, dir)
	_, err := c.ApplyFlows(ctx, []apiclient.FlowSource{{Filename: "crashy.yaml", Source: crashFlow}})
	require.NoError(t, err)

	const runs = 60
	kills := 3 + rand.IntN(3)
	var ids []string
	startRuns := func(count int) {
		for range count {
			r, err := c.StartRun(ctx, "crashy", map[string]any{"n": len(ids)}, 0)
			require.NoError(t, err)
			ids = append(ids, r.ID)
		}
	}
	interrupted := 0
	for k := range kills {
		startRuns(runs / (kills + 1))
		// Let the node get into the work, then kill it at a random moment.
		time.Sleep(time.Duration(100+rand.IntN(800)) * time.Millisecond)
		open := 0
		for _, status := range []string{"queued", "running", "sleeping"} {
			rs, err := c.ListRuns(ctx, apiclient.RunQuery{Flow: "crashy", Status: status, Limit: 1000})
			require.NoError(t, err)
			open += len(rs)
		}
		n.kill()
		interrupted += open
		t.Logf("kill %d: %d runs started, %d open (%s)", k+1, len(ids), open, time.Since(began).Round(time.Millisecond))
		n.start()
	}
	require.Positive(t, interrupted, "the kills hit runs in progress")
	startRuns(runs - len(ids))
	require.Len(t, ids, runs)

	done := waitTerminal(t, c, ids, 3*time.Minute)
	seen := dir.snapshot()
	want := map[string]bool{}
	for _, id := range ids {
		r := done[id]
		require.Equal(t, "succeeded", r.Status, "run %s: %+v", id, r.Error)
		byPath := map[string]apiclient.RunStep{}
		for _, s := range r.Steps {
			require.NotContains(t, byPath, s.Path, "run %s has two checkpoints for %s", id, s.Path)
			byPath[s.Path] = s
		}
		require.Len(t, byPath, len(crashPaths), "run %s: %v", id, byPath)
		for _, p := range crashPaths {
			s, ok := byPath[p]
			require.True(t, ok, "run %s has no checkpoint for %s", id, p)
			require.Equal(t, "succeeded", s.Status, "run %s step %s", id, p)
			require.NotNil(t, s.FinishedAt, "run %s step %s", id, p)
		}
		for _, p := range crashCalls {
			key := id + "/" + p
			want[key] = true
			hits := seen[key]
			require.NotEmpty(t, hits, "the endpoint never saw %s", key)
			// No completed step ran again: every request for the step
			// arrived before its checkpoint was written.
			for _, h := range hits {
				require.False(t, h.At.After(*byPath[p].FinishedAt), "%s: a request arrived at %s, after the step's checkpoint at %s",
					key, h.At.Format(time.RFC3339Nano), byPath[p].FinishedAt.Format(time.RFC3339Nano))
			}
		}
	}
	duplicates := 0
	var again []string
	for key, hits := range seen {
		require.True(t, want[key], "the endpoint saw an Idempotency-Key no step owns: %q", key)
		duplicates += len(hits) - 1
		if len(hits) > 1 {
			again = append(again, fmt.Sprintf("%s×%d", key[strings.Index(key, "/")+1:], len(hits)))
		}
	}
	slices.Sort(again)
	t.Logf("steps that ran again: %v", again)
	// Only a step in flight when its node died runs again: at most every
	// worker's calls, two at a time inside the foreach, per kill.
	bound := kills * procWorkers * 2
	require.LessOrEqual(t, duplicates, bound, "duplicate requests")
	t.Logf("%s: %d runs, %d kills, %d duplicate requests (bound %d) over %d keys, %s", d, runs, kills, duplicates, bound, len(seen),
		time.Since(began).Round(time.Millisecond))
}

const twoNodeFlow = `apiVersion: trustflow/v1
kind: Flow
name: long-haul
trigger: {manual: {}}
input:
  n: {type: integer, required: true}
steps:
  - id: first
    call: {connector: remote, method: POST, path: /ok/first}
    timeout: 900ms # under an advance on these servers (--job-timeout 2s)
  - id: nap
    sleep: 1s
  - id: second
    call: {connector: remote, method: POST, path: /ok/second}
    timeout: 900ms # under an advance on these servers (--job-timeout 2s)
  - id: doze
    sleep: 500ms
  - id: third
    call: {connector: remote, method: POST, path: /ok/third}
    timeout: 900ms # under an advance on these servers (--job-timeout 2s)
output: {n: "${input.n}"}
`

// failoverBound is how soon, at the server's default settings, a run that
// a killed node was advancing makes progress on another: the lease outlives
// its last renewal by --rescue-after (10s), and the other node looks for
// expired leases every second.
const failoverBound = 15 * time.Second

// TestTwoNodesShareTheWork kills one of two nodes on one PostgreSQL in the
// middle of its runs, both at the server's default settings: the other
// finishes every one, and every run the dead node held makes progress
// again within failoverBound.
func TestTwoNodesShareTheWork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills trustflow processes")
	}
	bin := buildBinary(t)
	ctx := context.Background()
	db := storetest.DatabaseURL(t, store.Postgres)
	ca := truststoretest.NewCA(t)
	dir := newDirectory(t, ca)
	dir.delay = func() time.Duration { return time.Duration(5+rand.IntN(20)) * time.Millisecond }
	// Both nodes read the same key-encryption key (the data dir's).
	data := t.TempDir()
	a := newNode(t, bin, data, db)
	a.defaults = true
	a.start()
	b := newNode(t, bin, data, db)
	b.defaults = true
	b.start()
	ca1 := a.client()
	setupRemote(t, ca1, ca, dir)
	_, err := ca1.ApplyFlows(ctx, []apiclient.FlowSource{{Filename: "long-haul.yaml", Source: twoNodeFlow}})
	require.NoError(t, err)

	var ids []string
	for i := range 24 {
		r, err := ca1.StartRun(ctx, "long-haul", map[string]any{"n": i}, 0)
		require.NoError(t, err)
		ids = append(ids, r.ID)
	}
	// Kill node a once the runs are under way, none finished.
	deadline := time.Now().Add(30 * time.Second)
	for {
		rs, err := ca1.ListRuns(ctx, apiclient.RunQuery{Flow: "long-haul", Status: "sleeping", Limit: 100})
		require.NoError(t, err)
		if len(rs) > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "no run started sleeping")
		time.Sleep(20 * time.Millisecond)
	}
	killed := time.Now()
	a.kill()
	cb := b.client()
	open := 0
	var openIDs []string
	for _, id := range ids {
		r, err := cb.GetRun(ctx, id)
		require.NoError(t, err)
		if r.Status != "succeeded" {
			open++
			openIDs = append(openIDs, id)
		}
	}
	require.Positive(t, open, "the runs were under way when node a died")
	began := time.Now()
	done := waitTerminal(t, cb, ids, 90*time.Second)
	for _, id := range ids {
		r := done[id]
		require.Equal(t, "succeeded", r.Status, "run %s: %+v", id, r.Error)
		for _, s := range r.Steps {
			require.Equal(t, "succeeded", s.Status, "run %s step %s", id, s.Path)
		}
		require.Len(t, r.Steps, 5)
		for _, p := range []string{"first", "second", "third"} {
			require.NotZero(t, dir.count(id+"/"+p), "run %s step %s", id, p)
		}
	}
	// Every open run resumed after the kill (a step started or finished)
	// within the bound: those node a held, once their leases expired; the
	// others (sleeping, with no lease) when due.
	var slowest time.Duration
	for _, id := range openIDs {
		var next time.Time
		for _, s := range done[id].Steps {
			for _, at := range []*time.Time{s.StartedAt, s.FinishedAt} {
				if at != nil && at.After(killed) && (next.IsZero() || at.Before(next)) {
					next = *at
				}
			}
		}
		require.False(t, next.IsZero(), "run %s made no progress after the kill", id)
		slowest = max(slowest, next.Sub(killed))
	}
	t.Logf("node b finished %d open runs %s after node a died; the slowest resumed %s after the kill (bound %s)",
		open, time.Since(began).Round(time.Millisecond), slowest.Round(time.Millisecond), failoverBound)
	require.LessOrEqual(t, slowest, failoverBound, "a run of the dead node waited longer than the lease allows")
}
