package app_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// The process tests of key custody run `trustflow serve` as a real process,
// kill it with SIGKILL in the middle of a rotation, and run several on one
// PostgreSQL database. Their helpers carry a kekProc prefix.

var kekProcServingRe = regexp.MustCompile(`msg="trustflow serving" addr=(\S+)`)

// kekProcNode is where one node keeps its state: its data dir (admin token,
// kek file, and the SQLite database when db is empty), its --db, its --kek
// (empty: the data dir's kek file), and how often it re-reads the active
// KEK id (--kek-refresh; 2s in production).
type kekProcNode struct {
	dataDir string
	db      string
	kek     string
	refresh time.Duration
}

// kekPath is the data dir's kek file: the node's source when kek is empty.
func (n kekProcNode) kekPath() string { return filepath.Join(n.dataDir, config.KEKFileName) }

// kekProcServer is one `trustflow serve` process.
type kekProcServer struct {
	cmd    *exec.Cmd
	addr   string // set once it serves
	mu     sync.Mutex
	logs   strings.Builder
	exited chan struct{} // closed once the process has exited
	// killOn, when set, has the process killed with SIGKILL as soon as a
	// log line matches it.
	killOn atomic.Pointer[regexp.Regexp]
	// killed says the test killed the process (rather than it exiting).
	killed atomic.Bool
}

// kekProcStart starts `trustflow serve` for node and returns once it serves,
// or once it exited after killOn (when not nil) matched a log line: the
// process is then killed with SIGKILL as soon as the line is read.
func kekProcStart(t *testing.T, bin string, node kekProcNode, killOn *regexp.Regexp) *kekProcServer {
	t.Helper()
	args := []string{"serve", "--data-dir", node.dataDir, "--listen", "127.0.0.1:0", "--log-format", "text",
		"--kek-refresh", node.refresh.String()}
	if node.db != "" {
		args = append(args, "--db", node.db)
	}
	if node.kek != "" {
		args = append(args, "--kek", node.kek)
	}
	p := &kekProcServer{cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	p.cmd.Env = hermeticEnv()
	p.killOn.Store(killOn)
	stderr, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	t.Cleanup(p.kill)
	addrCh := make(chan string, 1)
	go func() {
		defer close(p.exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if re := p.killOn.Load(); re != nil && re.MatchString(line) && !p.killed.Swap(true) {
				// Signal fails only once the process is gone.
				_ = p.cmd.Process.Signal(syscall.SIGKILL)
			}
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			if m := kekProcServingRe.FindStringSubmatch(line); m != nil {
				addrCh <- m[1]
			}
		}
		// The exit status is that of a killed process or of a test that
		// ended; the logs say why it stopped.
		_ = p.cmd.Wait()
	}()
	select {
	case p.addr = <-addrCh:
	case <-p.exited:
		require.True(t, p.killed.Load(), "trustflow serve exited before serving:\n%s", p.Logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("trustflow serve did not serve within 30s:\n%s", p.Logs())
	}
	return p
}

// Logs returns everything the process logged so far.
func (p *kekProcServer) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// kill sends SIGKILL (unless the process exited already) and waits for the
// exit.
func (p *kekProcServer) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.killed.Store(true)
	_ = p.cmd.Process.Signal(syscall.SIGKILL) // fails only once it is gone
	<-p.exited
}

// stop sends SIGTERM and waits for a clean exit.
func (p *kekProcServer) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.exited:
	case <-time.After(config.DefaultShutdownAfter + 5*time.Second):
		t.Fatalf("trustflow serve did not stop after SIGTERM:\n%s", p.Logs())
	}
	require.Equal(t, 0, p.cmd.ProcessState.ExitCode(), "log:\n%s", p.Logs())
}

// client returns an API client of the server with the admin token the
// first start wrote to dataDir.
func (p *kekProcServer) client(t *testing.T, dataDir string) *apiclient.Client {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(dataDir, config.AdminTokenFile))
	require.NoError(t, err)
	c, err := apiclient.New(p.addr, strings.TrimSpace(string(tok)), nil)
	require.NoError(t, err)
	return c
}

// kekProcSealed is what a stopped node's database and kek source hold.
type kekProcSealed struct {
	// States maps each recorded KEK id to its state.
	States map[string]string
	// Wraps counts the sealed values (of every registered column) by the
	// KEK that wraps them.
	Wraps map[string]int
	// Next is the id of the KEK staged in kek.next, or "".
	Next string
}

// kekProcOpenAll opens the node's database while no process serves it,
// loads the keys its file:// source holds (kek, and kek.next if a rotation
// staged one), and requires that every sealed value of every registered
// column opens under them with its own bound data.
func kekProcOpenAll(t *testing.T, node kekProcNode) kekProcSealed {
	t.Helper()
	ctx := context.Background()
	dbc, err := config.ParseDatabaseURL(node.db, node.dataDir)
	require.NoError(t, err)
	st, err := store.Open(ctx, store.Config{Dialect: store.Dialect(dbc.Dialect), DSN: dbc.DSN})
	require.NoError(t, err)
	defer st.Close()
	src := seal.FileSource{Path: node.kekPath()}
	keks, err := src.Load(ctx)
	require.NoError(t, err)
	out := kekProcSealed{States: map[string]string{}, Wraps: map[string]int{}}
	if next, err := seal.LoadKEKFile(src.NextPath()); err == nil {
		out.Next = next.ID()
	} else {
		require.ErrorIs(t, err, os.ErrNotExist)
	}
	kr := seal.NewKeyring(nil, keks...)
	for _, c := range store.SealedColumns() {
		var after []any
		for {
			page, err := st.SealedPage(ctx, nil, c, "", after, 500)
			require.NoError(t, err)
			for _, b := range page {
				plain, err := kr.Open(b.Blob, c.AAD(b.Key))
				require.NoError(t, err, "the %s %v (wrapped by %s) does not open under the keys of %s", c.Name, b.Key, b.KEKID, src)
				clear(plain)
				out.Wraps[b.KEKID]++
			}
			if len(page) < 500 {
				break
			}
			after = page[len(page)-1].Key
		}
	}
	recs, err := st.KEKs(ctx)
	require.NoError(t, err)
	for _, r := range recs {
		out.States[r.ID] = r.State
	}
	return out
}

// kekProcWait polls cond every 10ms, in the test's goroutine, until it
// holds; another process gives no signal to wait on.
func kekProcWait(t *testing.T, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		<-tick.C
	}
}

// kekProcFileID returns the id of the KEK in a kek file.
func kekProcFileID(t *testing.T, path string) string {
	t.Helper()
	k, err := seal.LoadKEKFile(path)
	require.NoError(t, err)
	return k.ID()
}

// kekProcTokenFor is the bearer token of the seeded connector name.
func kekProcTokenFor(name string) string { return "token-for-" + name }

// kekProcTarget is the endpoint the seeded connectors call: GET
// /check/NAME answers 204 when the bearer token is NAME's, else 401.
func kekProcTarget(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, "/check/")
		if !ok || r.Header.Get("Authorization") != "Bearer "+kekProcTokenFor(name) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// kekProcAllow opens the loopback address of a test endpoint in the egress
// policy, which denies loopback by default.
func kekProcAllow(t *testing.T, c *apiclient.Client, endpoint string) {
	t.Helper()
	u, err := url.Parse(endpoint)
	require.NoError(t, err)
	_, err = c.AllowEgress(context.Background(), policy.Rule{Host: u.Hostname(), Ports: u.Port()})
	require.NoError(t, err)
}

func kekProcConnectorName(i int) string { return fmt.Sprintf("conn-%04d", i) }

// kekProcSeed creates n connectors with a sealed bearer token each,
// through the API, a few requests at a time.
func kekProcSeed(t *testing.T, c *apiclient.Client, target string, n int) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := atomic.Int64{}
	for range 4 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				name := kekProcConnectorName(i)
				_, err := c.CreateConnector(ctx, apiclient.ConnectorSpec{Name: name, URL: target, Auth: "bearer", AllowPlaintext: true,
					Secrets: apiclient.ConnectorSecrets{Token: kekProcTokenFor(name)}})
				if err != nil {
					errs <- fmt.Errorf("create connector %s: %w", name, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// kekProcCall requires that the connectors numbered in idx authenticate to
// the target with their sealed tokens.
func kekProcCall(t *testing.T, c *apiclient.Client, idx ...int) {
	t.Helper()
	for _, i := range idx {
		name := kekProcConnectorName(i)
		resp, err := c.CallConnector(context.Background(), name, apiclient.CallRequest{Method: http.MethodGet, Path: "/check/" + name})
		require.NoError(t, err, "call through %s", name)
		require.Equal(t, http.StatusNoContent, resp.Status, "the target accepts %s's sealed token", name)
	}
}

// kekProcRequireRotated requires that a serving node finished the rotation
// to want: want is the only active KEK, every other recorded KEK is
// retired, every sealed value is wrapped by want, and the kek file holds
// want alone.
func kekProcRequireRotated(t *testing.T, c *apiclient.Client, node kekProcNode, want string, sealed int) {
	t.Helper()
	st, err := c.KEKStatus(context.Background())
	require.NoError(t, err)
	require.True(t, st.Ready, st.Problem)
	require.Equal(t, want, st.ActiveKEK)
	for _, k := range st.KEKs {
		if k.ID == want {
			require.Equal(t, store.KEKActive, k.State)
		} else {
			require.Equal(t, store.KEKRetired, k.State, "kek %s", k.ID)
		}
	}
	require.Equal(t, map[string]int{want: sealed}, st.Sealed["connectors.sealed_secret"])
	require.Equal(t, want, kekProcFileID(t, node.kekPath()))
	_, err = os.Stat(node.kekPath() + ".next")
	require.ErrorIs(t, err, os.ErrNotExist, "the staged key was committed")
}

// TestKEKRotationSurvivesKill9 kills `trustflow serve` with SIGKILL at
// several points of a rotation of 1000 sealed connector secrets (five
// re-wrap batches): right after the rotation began, after the first batch,
// while it waits to verify, and while a restart finishes the interrupted
// rotation. After each kill every sealed value opens under the old or the
// new KEK (both in the source), and the next start finishes the rotation by
// itself: no second `kek rotate` is needed.
func TestKEKRotationSurvivesKill9(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildTrustflow(t)
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			const sealed = 1000
			// A rotation waits twice the refresh interval before it
			// verifies: the "killed while it waits to verify" window is 1s.
			node := kekProcNode{dataDir: filepath.Join(t.TempDir(), "data"), refresh: 500 * time.Millisecond}
			if d == store.Postgres {
				node.db = storetest.DatabaseURL(t, d)
			}
			target := kekProcTarget(t)
			begin := time.Now()
			p := kekProcStart(t, bin, node, nil)
			t.Logf("first start in %s", time.Since(begin).Round(time.Millisecond))
			c := p.client(t, node.dataDir)
			kekProcAllow(t, c, target.URL)
			begin = time.Now()
			kekProcSeed(t, c, target.URL, sealed)
			t.Logf("seeded %d connector secrets in %s", sealed, time.Since(begin).Round(time.Millisecond))
			kekProcCall(t, c, 0, sealed-1)
			first := kekProcFileID(t, node.kekPath())
			retired := map[string]string{}

			// restart starts the node again after a kill: the start finishes
			// the interrupted rotation from -> to before it serves.
			restart := func(from, to string) {
				t.Helper()
				begin := time.Now()
				p = kekProcStart(t, bin, node, nil)
				t.Logf("the restart finished the rotation to %s and served after %s", to, time.Since(begin).Round(time.Millisecond))
				retired[from] = store.KEKRetired
				require.Contains(t, p.Logs(), "finishing an interrupted key-encryption key rotation")
				require.Contains(t, p.Logs(), `msg="rotated the key-encryption key" to=`+to)
				c = p.client(t, node.dataDir)
				kekProcRequireRotated(t, c, node, to, sealed)
				kekProcCall(t, c, 0, 499, sealed-1)
			}
			// interrupted checks what a kill left: the rotation from -> to
			// not finished, both keys in the source, every value opening
			// under one of them.
			interrupted := func(from string) (string, map[string]int) {
				t.Helper()
				got := kekProcOpenAll(t, node)
				require.NotEmpty(t, got.Next, "the new key waits in kek.next")
				require.Equal(t, from, kekProcFileID(t, node.kekPath()), "the old key stays in the kek file")
				want := map[string]string{from: store.KEKRetiring, got.Next: store.KEKActive}
				for id, s := range retired {
					want[id] = s
				}
				require.Equal(t, want, got.States)
				n := 0
				for id, k := range got.Wraps {
					require.Contains(t, []string{from, got.Next}, id)
					n += k
				}
				require.Equal(t, sealed, n)
				return got.Next, got.Wraps
			}

			// 1. Killed right after the rotation became active in the
			// database (the server logs it before the first batch).
			p.killOn.Store(regexp.MustCompile(`msg="rotating the key-encryption key"`))
			_, err := c.RotateKEK(context.Background(), nil)
			require.Error(t, err, "the server died before it answered")
			<-p.exited
			second, wraps := interrupted(first)
			t.Logf("killed after the rotation began: %d values under the old key, %d under the new", wraps[first], wraps[second])
			restart(first, second)

			// 2. Killed after the first batch of 200 was re-wrapped.
			_, err = c.RotateKEK(context.Background(), func(done, total int) {
				if p.killed.CompareAndSwap(false, true) {
					// Signal fails only once the process is gone.
					_ = p.cmd.Process.Signal(syscall.SIGKILL)
				}
			})
			require.Error(t, err, "the server died before it answered")
			<-p.exited
			third, wraps := interrupted(second)
			require.GreaterOrEqual(t, wraps[third], 200, "the first batch committed")
			t.Logf("killed after the first batch: %d values under the old key, %d under the new", wraps[second], wraps[third])
			restart(second, third)

			// 3. Killed while the rotation waits (twice the refresh
			// interval) for other nodes before it verifies: every value is
			// re-wrapped, the old key not yet dropped. Through the CLI.
			cli := exec.Command(bin, "kek", "rotate", "--server", p.addr, "--data-dir", node.dataDir)
			cli.Env = hermeticEnv()
			cliErr, err := cli.StderrPipe()
			require.NoError(t, err)
			require.NoError(t, cli.Start())
			var cliLog strings.Builder
			sc := bufio.NewScanner(cliErr)
			for sc.Scan() {
				cliLog.WriteString(sc.Text() + "\n")
				if sc.Text() == fmt.Sprintf("rewrapped %d of %d", sealed, sealed) {
					p.kill()
				}
			}
			require.Error(t, cli.Wait())
			require.Equal(t, 1, cli.ProcessState.ExitCode())
			require.Contains(t, cliLog.String(), "the server's answer ended before the result (the rotation goes on, or finishes at the server's next start")
			require.True(t, p.killed.Load(), "the CLI reported every value re-wrapped:\n%s", cliLog.String())
			fourth, wraps := interrupted(third)
			require.Equal(t, map[string]int{fourth: sealed}, wraps, "every value was re-wrapped before the kill")

			// 4. Killed while the next start finishes that rotation.
			p = kekProcStart(t, bin, node, regexp.MustCompile(`msg="finishing an interrupted key-encryption key rotation"`))
			<-p.exited
			require.Empty(t, p.addr, "killed before it served")
			_, wraps = interrupted(third)
			require.Equal(t, map[string]int{fourth: sealed}, wraps)

			// 5. The next start finishes it. Every 25th connector calls the
			// target with its secret (an audited call costs a few ms; the
			// check below opens all of them).
			restart(third, fourth)
			var sample []int
			for i := 0; i < sealed; i += 25 {
				sample = append(sample, i)
			}
			kekProcCall(t, c, append(sample, sealed-1)...)
			p.stop(t)
			got := kekProcOpenAll(t, node)
			require.Equal(t, kekProcSealed{States: map[string]string{first: store.KEKRetired, second: store.KEKRetired,
				third: store.KEKRetired, fourth: store.KEKActive}, Wraps: map[string]int{fourth: sealed}}, got)
			src, err := seal.FileSource{Path: node.kekPath()}.Load(context.Background())
			require.NoError(t, err)
			require.Len(t, src, 1, "the source holds the new key alone")
		})
	}
}

// kekProcCopyKey copies a key file as an operator would, atomically, mode
// 0600.
func kekProcCopyKey(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	tmp := to + ".tmp"
	require.NoError(t, os.WriteFile(tmp, b, 0o600))
	require.NoError(t, os.Rename(tmp, to))
}

// kekProcReady answers a node's /readyz: its status and error code.
func kekProcReady(t *testing.T, addr string) (int, string) {
	t.Helper()
	resp, err := http.Get(addr + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if resp.StatusCode != http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	}
	return resp.StatusCode, body.Error.Code + ": " + body.Error.Message
}

// TestTwoNodesFollowARotation runs `trustflow serve` processes on one
// PostgreSQL database and rotates the KEK on node A while runs that need
// three sealed values (the identity's key for the mTLS handshake, the
// connector's bearer token, the run's secret input) start through every
// node. Node B has its own data dir and its own copy of the kek file: it
// answers /readyz 503 and takes no run until the operator copies A's kek
// file to it (docs/keys.md "Several nodes"), then it is ready again without
// a restart. Node C reads A's kek file (a shared mount): it loads the new
// key by itself and stays ready. Every run succeeds.
func TestTwoNodesFollowARotation(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	db := storetest.DatabaseURL(t, store.Postgres) // skips without PostgreSQL
	bin := buildTrustflow(t)
	ctx := context.Background()

	ca := truststoretest.NewCA(t)
	serverLeaf := ca.IssueServer(t, "127.0.0.1")
	clientLeaf := ca.IssueClient(t, "trustflow-runs")
	var calls atomic.Int64
	target := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strings.CutPrefix(r.URL.Path, "/ping/")
		switch {
		case len(r.TLS.PeerCertificates) == 0 || !r.TLS.PeerCertificates[0].Equal(clientLeaf.Cert):
			http.Error(w, "wrong client certificate", http.StatusForbidden)
		case r.Header.Get("Authorization") != "Bearer connector-secret":
			http.Error(w, "wrong connector token", http.StatusUnauthorized)
		case r.Header.Get("X-Run-Token") != "run-secret-"+n:
			http.Error(w, "wrong secret input", http.StatusUnauthorized)
		default:
			calls.Add(1)
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	target.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{serverLeaf.TLSCertificate()},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
	target.StartTLS()
	t.Cleanup(target.Close)

	// Every node re-reads the active KEK id every 500ms; A's rotation waits
	// 1s for them before it verifies.
	const refresh = 500 * time.Millisecond
	nodeA := kekProcNode{dataDir: filepath.Join(t.TempDir(), "a"), db: db, refresh: refresh}
	nodeB := kekProcNode{dataDir: filepath.Join(t.TempDir(), "b"), db: db, refresh: refresh}
	nodeC := kekProcNode{dataDir: filepath.Join(t.TempDir(), "c"), db: db, kek: "file://" + nodeA.kekPath(), refresh: refresh}
	a := kekProcStart(t, bin, nodeA, nil)
	first := kekProcFileID(t, nodeA.kekPath())
	// The first start created the database's admin token, in A's data dir.
	ac := a.client(t, nodeA.dataDir)
	// Before B and C start, so that they load the policy with the rule
	// (another node's change reaches a running one within a second).
	kekProcAllow(t, ac, target.URL)
	// B and C serve the same audit chain: they get A's audit key. B gets a
	// copy of A's kek file; C reads A's.
	for _, n := range []kekProcNode{nodeB, nodeC} {
		require.NoError(t, os.Mkdir(n.dataDir, 0o700))
		kekProcCopyKey(t, filepath.Join(nodeA.dataDir, config.AuditKeyFileName), filepath.Join(n.dataDir, config.AuditKeyFileName))
	}
	kekProcCopyKey(t, nodeA.kekPath(), nodeB.kekPath())
	b := kekProcStart(t, bin, nodeB, nil)
	c := kekProcStart(t, bin, nodeC, nil)
	bc, cc := b.client(t, nodeA.dataDir), c.client(t, nodeA.dataDir)

	_, err := ac.AddCA(ctx, apiclient.CARequest{Name: "runs-ca", Data: ca.CertPEM()})
	require.NoError(t, err)
	_, err = ac.ImportIdentity(ctx, apiclient.ImportIdentityRequest{Name: "runs-client", Material: apiclient.Material{Cert: clientLeaf.CertPEM(), Key: clientLeaf.KeyPEM()}})
	require.NoError(t, err)
	_, err = ac.CreateConnector(ctx, apiclient.ConnectorSpec{Name: "target", URL: target.URL, Auth: "bearer", Identity: "runs-client",
		CAs: []string{"runs-ca"}, Secrets: apiclient.ConnectorSecrets{Token: "connector-secret"}})
	require.NoError(t, err)
	_, err = ac.ApplyFlows(ctx, []apiclient.FlowSource{{Filename: "ping.yaml", Source: `apiVersion: trustflow/v1
kind: Flow
name: ping
trigger: {manual: {}}
input:
  n: {type: string, required: true}
  token: {type: string, required: true, secret: true}
steps:
  - id: call
    call: {connector: target, method: GET, path: "/ping/${input.n}", headers: {X-Run-Token: "${input.token}"}}
`}})
	require.NoError(t, err)

	// The stream: a run every 40ms, through A, B and C in turn. A node that
	// answers 503 kek_unavailable is skipped for the next, as a load
	// balancer that follows /readyz would.
	type started struct {
		id   string
		node string
	}
	var (
		mu       sync.Mutex
		runs     []started
		refused  = map[string]int{}
		startErr []error
	)
	startedThrough := func(node string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range runs {
			if r.node == node {
				n++
			}
		}
		return n
	}
	stop := make(chan struct{})
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		nodes := []struct {
			name string
			c    *apiclient.Client
		}{{"a", ac}, {"b", bc}, {"c", cc}}
		tick := time.NewTicker(40 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			n := fmt.Sprint(i)
			input := map[string]any{"n": n, "token": "run-secret-" + n}
			for try := 0; ; try++ {
				if try == len(nodes) {
					mu.Lock()
					startErr = append(startErr, fmt.Errorf("start run %s: every node refused", n))
					mu.Unlock()
					break
				}
				node := nodes[(i+try)%len(nodes)]
				run, err := node.c.StartRun(ctx, "ping", input, 0)
				var apiErr *apiclient.Error
				if errors.As(err, &apiErr) && apiErr.Status == http.StatusServiceUnavailable && apiErr.Code == "kek_unavailable" {
					mu.Lock()
					refused[node.name]++
					mu.Unlock()
					continue
				}
				mu.Lock()
				if err != nil {
					startErr = append(startErr, fmt.Errorf("start run %s through %s: %w", n, node.name, err))
				} else {
					runs = append(runs, started{id: run.ID, node: node.name})
				}
				mu.Unlock()
				break
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-streamDone
	})
	kekProcWait(t, 10*time.Second, func() bool {
		return startedThrough("a") >= 3 && startedThrough("b") >= 3 && startedThrough("c") >= 3
	}, "runs through every node")

	// Rotate on A. B learns of the new key within its refresh interval,
	// and its file lacks it: not ready. C finds it in A's file.
	type rotation struct {
		res apiclient.KEKRotation
		err error
	}
	rotated := make(chan rotation, 1)
	rotateStart := time.Now()
	go func() {
		res, err := ac.RotateKEK(ctx, nil)
		rotated <- rotation{res, err}
	}()
	var notReady string
	kekProcWait(t, 10*time.Second, func() bool {
		code, msg := kekProcReady(t, b.addr)
		notReady = msg
		return code == http.StatusServiceUnavailable
	}, "node B not ready")
	t.Logf("node B not ready %s after the rotation began: %s", time.Since(rotateStart).Round(time.Millisecond), notReady)
	require.True(t, strings.HasPrefix(notReady, "kek_unavailable: "), notReady)
	for _, n := range []*kekProcServer{a, c} {
		code, msg := kekProcReady(t, n.addr)
		require.Equal(t, http.StatusOK, code, "nodes A and C hold the new key: %s", msg)
	}

	r := <-rotated
	require.NoError(t, r.err)
	second := r.res.ToKEK
	require.Equal(t, []string{first}, r.res.FromKEKs)
	require.Equal(t, second, kekProcFileID(t, nodeA.kekPath()))
	require.Contains(t, notReady, "the database's active key-encryption key is "+second+", but this node's source file://"+nodeB.kekPath()+" holds "+first)
	t.Logf("rotation on A: %+v, %s", r.res, time.Since(rotateStart).Round(time.Millisecond))

	// B stays out while its file lacks the key; the runs go on through A
	// and C.
	stB, err := bc.KEKStatus(ctx)
	require.NoError(t, err)
	require.False(t, stB.Ready)
	require.Equal(t, second, stB.ActiveKEK)
	beforeA, beforeC := startedThrough("a"), startedThrough("c")
	kekProcWait(t, 10*time.Second, func() bool { return startedThrough("a") >= beforeA+3 && startedThrough("c") >= beforeC+3 },
		"runs through A and C while B is not ready")
	code, _ := kekProcReady(t, b.addr)
	require.Equal(t, http.StatusServiceUnavailable, code)

	// The operator copies A's kek file to B: B is ready again, no restart.
	kekProcCopyKey(t, nodeA.kekPath(), nodeB.kekPath())
	copied := time.Now()
	kekProcWait(t, 10*time.Second, func() bool { code, _ := kekProcReady(t, b.addr); return code == http.StatusOK }, "node B ready again")
	t.Logf("node B ready %s after the copy", time.Since(copied).Round(time.Millisecond))
	require.Contains(t, b.Logs(), "this node holds the active key-encryption key again")
	beforeB := startedThrough("b")
	kekProcWait(t, 10*time.Second, func() bool { return startedThrough("b") >= beforeB+3 }, "runs through B again")
	close(stop)
	<-streamDone

	// Every run succeeded, whichever node started or ran it.
	require.Empty(t, startErr)
	for _, s := range runs {
		var run apiclient.Run
		kekProcWait(t, 30*time.Second, func() bool {
			run, err = ac.GetRun(ctx, s.id)
			require.NoError(t, err)
			return run.FinishedAt != nil
		}, "run "+s.id+" to finish")
		require.Equal(t, "succeeded", run.Status, "run %s started through %s: %+v", s.id, s.node, run.Error)
	}
	require.Equal(t, int64(len(runs)), calls.Load(), "each run called the target once")
	t.Logf("%d runs succeeded (%d through A, %d through B, %d through C); refused while lacking the key: %v",
		len(runs), startedThrough("a"), startedThrough("b"), startedThrough("c"), refused)
	require.Positive(t, refused["b"], "runs were offered to B while it was not ready")
	require.Equal(t, map[string]int{"b": refused["b"]}, refused, "only B refused")

	for _, n := range []*kekProcServer{a, b, c} {
		select {
		case <-n.exited:
			t.Fatalf("a node exited:\n%s", n.Logs())
		default: // every node ran throughout, none was restarted
		}
	}
	for _, cl := range []*apiclient.Client{ac, bc, cc} {
		st, err := cl.KEKStatus(ctx)
		require.NoError(t, err)
		require.True(t, st.Ready, st.Problem)
		require.Equal(t, second, st.ActiveKEK)
		for col, byKEK := range st.Sealed {
			for id := range byKEK {
				require.Equal(t, second, id, "%s holds values under %s", col, id)
			}
		}
		states := map[string]string{}
		for _, k := range st.KEKs {
			states[k.ID] = k.State
		}
		require.Equal(t, map[string]string{first: store.KEKRetired, second: store.KEKActive}, states)
	}
}
