package bench_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

var pointDuration = flag.Duration("webhook.duration", 5*time.Second, "how long BenchmarkWebhook drives each target at each concurrency")

// concurrencies are the closed-loop client counts of every target.
var concurrencies = []int{1, 16}

// upstreamBody is what the mTLS upstream answers; every target must hand it back.
const upstreamBody = `{"ok":true,"user":{"id":"u-42","active":true,"groups":["a","b"]}}`

const benchFlow = `apiVersion: trustflow/v1
kind: Flow
name: bench
trigger: {webhook: {auth: token}}
steps:
  - id: get
    call: {connector: up, method: GET, path: /x}
output: ${steps.get.body}
`

// benchFastFlow is benchFlow with durability: none: the run is in memory
// until it ends, then recorded (run, step, audit records) in one commit.
const benchFastFlow = `apiVersion: trustflow/v1
kind: Flow
name: bench-fast
trigger: {webhook: {auth: token}}
settings: {durability: none}
steps:
  - id: get
    call: {connector: up, method: GET, path: /x}
output: ${steps.get.body}
`

// target is one server under load.
type target struct {
	name   string
	url    string // POST here
	bearer string // Authorization: Bearer, if any
	pid    int
	// postgres targets also count PostgreSQL's CPU.
	postgres bool
	// durable targets answer the run (its output is the upstream's JSON);
	// the reference answers the upstream's JSON itself.
	durable bool
}

// point is one measurement: a target at one concurrency.
type point struct {
	Target   string  `json:"target"`
	C        int     `json:"c"`
	Requests int     `json:"requests"`
	Seconds  float64 `json:"seconds"`
	ReqPerS  float64 `json:"req_per_s"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	CPUus    float64 `json:"cpu_us_per_req"`
	RSSMiB   float64 `json:"rss_mib"`
	// DBCPUus is the CPU per request of the PostgreSQL backends serving the
	// target's connections (PostgreSQL targets only).
	DBCPUus  float64 `json:"db_cpu_us_per_req,omitempty"`
	Ratio    float64 `json:"ratio_to_reference"`
	Failures int     `json:"failures"`
	// FirstFailure describes the first answer that was not the upstream's JSON.
	FirstFailure string `json:"first_failure,omitempty"`
}

// TestWebhookBenchmarkShort runs every target at every concurrency for one
// second and checks that the harness works: every answer is a 200 with the
// upstream's JSON, and every ratio is computed. It asserts no speed.
func TestWebhookBenchmarkShort(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	targets := setUp(t)
	points := measure(t, targets, time.Second)
	for _, p := range points {
		require.Zero(t, p.Failures, "%s c=%d: %s", p.Target, p.C, p.FirstFailure)
		require.Positive(t, p.Requests, "%s c=%d", p.Target, p.C)
		require.Positive(t, p.Ratio, "%s c=%d", p.Target, p.C)
		require.Positive(t, p.RSSMiB, "%s c=%d", p.Target, p.C)
	}
	t.Log("\n" + table(points))
}

// BenchmarkWebhook is the full run: -webhook.duration (5s) per target and
// concurrency. It prints the table and writes it as JSON to $BENCH_OUT if set.
func BenchmarkWebhook(b *testing.B) {
	targets := setUp(b)
	b.ResetTimer()
	points := measure(b, targets, *pointDuration)
	b.StopTimer()
	for _, p := range points {
		if p.Failures > 0 {
			b.Fatalf("%s c=%d: %d failures, first: %s", p.Target, p.C, p.Failures, p.FirstFailure)
		}
		prefix := fmt.Sprintf("%s/c=%d-", p.Target, p.C)
		b.ReportMetric(p.ReqPerS, prefix+"req/s")
		b.ReportMetric(p.Ratio, prefix+"ratio")
	}
	fmt.Fprintf(os.Stdout, "\n%s\n", table(points))
}

// measure drives every target at every concurrency for d, in order (the
// reference first), and sets each point's ratio to the reference's req/s at
// the same concurrency.
func measure(tb testing.TB, targets []target, d time.Duration) []point {
	tb.Helper()
	var points []point
	ref := map[int]float64{}
	for _, tg := range targets {
		for _, c := range concurrencies {
			p := drive(tb, tg, c, d)
			if tg.name == "reference" {
				ref[c] = p.ReqPerS
			}
			if ref[c] > 0 {
				p.Ratio = p.ReqPerS / ref[c]
			}
			points = append(points, p)
		}
	}
	if out := os.Getenv("BENCH_OUT"); out != "" {
		b, err := json.MarshalIndent(map[string]any{
			"date":       time.Now().UTC().Format(time.RFC3339),
			"cpus":       runtime.NumCPU(),
			"loadavg":    loadavg(),
			"duration_s": d.Seconds(),
			"points":     points,
		}, "", "  ")
		require.NoError(tb, err)
		require.NoError(tb, os.WriteFile(out, append(b, '\n'), 0o644))
	}
	return points
}

// table formats points for a terminal, with the machine's load average.
func table(points []point) string {
	var buf bytes.Buffer
	w := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "target\tc\treq/s\tp50 ms\tp99 ms\tCPU µs/req\tPostgreSQL CPU µs/req\tRSS MiB\tratio\t")
	for _, p := range points {
		db := "-"
		if p.DBCPUus > 0 {
			db = fmt.Sprintf("%.0f", p.DBCPUus)
		}
		fmt.Fprintf(w, "%s\t%d\t%.0f\t%.2f\t%.2f\t%.0f\t%s\t%.1f\t%.3f\t\n", p.Target, p.C, p.ReqPerS, p.P50ms, p.P99ms, p.CPUus, db, p.RSSMiB, p.Ratio)
	}
	w.Flush()
	return buf.String() + "load average: " + loadavg() + "\n"
}

// drive runs a closed loop of c clients against tg for d after a short
// warm-up and measures the target process's CPU and RSS over it.
func drive(tb testing.TB, tg target, c int, d time.Duration) point {
	tb.Helper()
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: c, MaxConnsPerHost: c},
		Timeout:   40 * time.Second,
	}
	defer client.CloseIdleConnections()
	for range 3 * c { // warm-up: connections, pools, caches
		if err := post(client, tg); err != nil {
			tb.Fatalf("%s: warm-up: %v", tg.name, err)
		}
	}

	type worker struct {
		lat      []time.Duration
		failures int
		first    string
	}
	workers := make([]worker, c)
	cpu0, db0 := cpuTime(tb, tg.pid), postgresCPU(tg)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t0 := time.Now()
				err := post(client, tg)
				w.lat = append(w.lat, time.Since(t0))
				if err != nil {
					if w.failures == 0 {
						w.first = err.Error()
					}
					w.failures++
				}
			}
		}(&workers[i])
	}
	// Backends of connections that close during the point would be lost
	// to one reading at its end: sample them every 100ms.
	dbLatest := map[int]time.Duration{}
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for time.Now().Before(deadline) {
			maps.Copy(dbLatest, postgresCPU(tg))
			time.Sleep(100 * time.Millisecond) // a sampling period, not a wait for an event
		}
	}()
	wg.Wait()
	<-sampled
	elapsed := time.Since(start)
	maps.Copy(dbLatest, postgresCPU(tg))
	cpu, db := cpuTime(tb, tg.pid)-cpu0, cpuSince(db0, dbLatest)

	p := point{Target: tg.name, C: c, Seconds: elapsed.Seconds(), RSSMiB: rssMiB(tb, tg.pid)}
	var lat []time.Duration
	for _, w := range workers {
		lat = append(lat, w.lat...)
		p.Failures += w.failures
		if p.FirstFailure == "" {
			p.FirstFailure = w.first
		}
	}
	p.Requests = len(lat)
	if p.Requests == 0 {
		return p
	}
	slices.Sort(lat)
	p.ReqPerS = float64(p.Requests) / elapsed.Seconds()
	p.P50ms = ms(lat[len(lat)*50/100])
	p.P99ms = ms(lat[min(len(lat)-1, len(lat)*99/100)])
	p.CPUus = float64(cpu.Microseconds()) / float64(p.Requests)
	p.DBCPUus = float64(db.Microseconds()) / float64(p.Requests)
	return p
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// post makes one webhook request and checks that its answer carries the
// upstream's JSON.
func post(client *http.Client, tg target) error {
	req, err := http.NewRequest(http.MethodPost, tg.url, strings.NewReader("{}"))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if tg.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+tg.bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %.300s", resp.StatusCode, body)
	}
	var got any
	if tg.durable {
		var run apiclient.Run
		if err := json.Unmarshal(body, &run); err != nil {
			return fmt.Errorf("decode run: %w: %.300s", err, body)
		}
		if run.Status != "succeeded" {
			return fmt.Errorf("run %s: %.300s", run.Status, body)
		}
		got = run.Output
	} else if err := json.Unmarshal(body, &got); err != nil {
		return fmt.Errorf("decode: %w: %.300s", err, body)
	}
	var want any
	if err := json.Unmarshal([]byte(upstreamBody), &want); err != nil {
		return err
	}
	if !equalJSON(got, want) {
		return fmt.Errorf("answer %.300s, want the upstream's %s", body, upstreamBody)
	}
	return nil
}

func equalJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// setUp starts the upstream, the reference proxy and trustflow on SQLite
// (and on PostgreSQL when TRUSTFLOW_TEST_DATABASE_URL is set), each set up
// for the webhook workload, and returns them with the reference first.
func setUp(tb testing.TB) []target {
	tb.Helper()
	ca := truststoretest.NewCA(tb)
	serverLeaf := ca.IssueServer(tb)
	clientLeaf := ca.IssueClient(tb, "trustflow-bench")

	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, upstreamBody)
	}))
	up.TLS = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{serverLeaf.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	}
	up.StartTLS()
	tb.Cleanup(up.Close)

	dir := tb.TempDir()
	files := map[string][]byte{"ca.pem": ca.CertPEM(), "client.pem": clientLeaf.CertPEM(), "client.key": clientLeaf.KeyPEM()}
	for name, data := range files {
		require.NoError(tb, os.WriteFile(filepath.Join(dir, name), data, 0o600))
	}
	bins := build(tb)

	refURL, refPID := start(tb, "reference", exec.Command(filepath.Join(bins, "refproxy"),
		"-upstream", up.URL+"/x",
		"-ca", filepath.Join(dir, "ca.pem"), "-cert", filepath.Join(dir, "client.pem"), "-key", filepath.Join(dir, "client.key")),
		regexp.MustCompile(`refproxy listening (\S+)`), true)
	targets := []target{{name: "reference", url: refURL + "/", pid: refPID}}

	// storetest.Dialects fails in CI without PostgreSQL, and skips it elsewhere.
	for _, d := range storetest.Dialects(tb) {
		name := "trustflow-" + string(d)
		dataDir := filepath.Join(tb.TempDir(), "data")
		args := []string{"serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-format", "text"}
		if dir := os.Getenv("BENCH_CPU_PROFILE_DIR"); dir != "" {
			args = append(args, "--cpu-profile", filepath.Join(dir, name+".prof"))
		}
		if d == store.Postgres {
			args = append(args, "--db", storetest.DatabaseURL(tb, d))
		}
		addr, pid := start(tb, name, exec.Command(filepath.Join(bins, "trustflow"), args...),
			regexp.MustCompile(`msg="trustflow serving" addr=(\S+)`), false)
		bearer := configure(tb, addr, dataDir, up.URL, ca, clientLeaf)
		targets = append(targets, target{name: name, url: addr + "/hooks/bench?wait=30s", bearer: bearer, pid: pid, durable: true, postgres: d == store.Postgres})
		if d == store.SQLite {
			targets = append(targets, target{name: name + "-none", url: addr + "/hooks/bench-fast?wait=30s", bearer: bearer, pid: pid, durable: true})
		}
	}
	return targets
}

// configure sets trustflow up for the workload through its API: the
// upstream's port in the egress policy, its CA, the client identity, the
// connector, the flow and an operator token for the webhook, whose secret it
// returns.
func configure(tb testing.TB, addr, dataDir, upstream string, ca *truststoretest.CA, leaf *truststoretest.Leaf) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	require.NoError(tb, err)
	c, err := apiclient.New(addr, strings.TrimSpace(string(admin)), nil)
	require.NoError(tb, err)
	u, err := url.Parse(upstream)
	require.NoError(tb, err)
	require.NoError(tb, c.Do(ctx, http.MethodPost, "/api/v1/policy/allow", nil, map[string]string{"host": u.Hostname(), "ports": u.Port()}, nil))
	_, err = c.AddCA(ctx, apiclient.CARequest{Name: "bench-ca", Data: ca.CertPEM()})
	require.NoError(tb, err)
	_, err = c.ImportIdentity(ctx, apiclient.ImportIdentityRequest{Name: "bench-client", Material: apiclient.Material{Cert: leaf.CertPEM(), Key: leaf.KeyPEM()}})
	require.NoError(tb, err)
	_, err = c.CreateConnector(ctx, apiclient.ConnectorSpec{Name: "up", URL: upstream, Auth: "mtls", Identity: "bench-client", CAs: []string{"bench-ca"}})
	require.NoError(tb, err)
	_, err = c.ApplyFlows(ctx, []apiclient.FlowSource{{Filename: "bench.yaml", Source: benchFlow}, {Filename: "bench-fast.yaml", Source: benchFastFlow}})
	require.NoError(tb, err)
	tok, err := c.CreateToken(ctx, apiclient.CreateTokenRequest{Name: "bench-webhook", Role: "operator"})
	require.NoError(tb, err)
	return tok.Token
}

// build builds trustflow and the reference proxy into one folder.
func build(tb testing.TB) string {
	tb.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	require.NoError(tb, err)
	gomod := strings.TrimSpace(string(out))
	require.NotEmpty(tb, gomod, "not inside the trustflow module")
	dir := tb.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/trustflow", "./bench/cmd/refproxy")
	cmd.Dir = filepath.Dir(gomod)
	b, err := cmd.CombinedOutput()
	require.NoError(tb, err, "go build: %s", b)
	return dir
}

// start runs cmd without TRUSTFLOW_* variables, waits for the line addrRe
// finds its address in (on stdout if fromStdout, else stderr), and stops
// the process at cleanup. It returns the address and the process id.
func start(tb testing.TB, name string, cmd *exec.Cmd, addrRe *regexp.Regexp, fromStdout bool) (string, int) {
	tb.Helper()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TRUSTFLOW_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out io.ReadCloser
	var err error
	if fromStdout {
		out, err = cmd.StdoutPipe()
	} else {
		out, err = cmd.StderrPipe()
	}
	require.NoError(tb, err)
	require.NoError(tb, cmd.Start())
	exited := make(chan string, 1)
	addrCh := make(chan string, 1)
	go func() {
		var head strings.Builder
		sc := bufio.NewScanner(out)
		found := false
		for sc.Scan() {
			if head.Len() < 64<<10 {
				head.WriteString(sc.Text() + "\n")
			}
			if m := addrRe.FindStringSubmatch(sc.Text()); m != nil && !found {
				found = true
				addrCh <- m[1]
			}
		}
		err := cmd.Wait()
		exited <- fmt.Sprintf("%v\n%s", err, head.String())
	}()
	tb.Cleanup(func() {
		// A stop lets a profiling server write its profile; Kill fails only
		// if the process has already exited, which Wait reports.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			return
		case <-time.After(10 * time.Second):
		}
		_ = cmd.Process.Kill()
		<-exited
	})
	select {
	case addr := <-addrCh:
		return addr, cmd.Process.Pid
	case logs := <-exited:
		exited <- logs
		tb.Fatalf("%s exited before listening: %s", name, logs)
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s did not start listening within 30s", name)
	}
	return "", 0
}

// postgresCPU is, per process id, the CPU time used so far by the
// PostgreSQL backends that serve tg's open connections (none unless tg runs
// on PostgreSQL). It runs in a sampling goroutine, so it skips what it
// cannot read instead of failing the test. PostgreSQL's shared processes (WAL writer, checkpointer)
// are not counted.
func postgresCPU(tg target) map[int]time.Duration {
	cpu := map[int]time.Duration{}
	if !tg.postgres {
		return cpu
	}
	ports := postgresClientPorts(tg.pid)
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline") // the pattern is valid
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.HasPrefix(b, []byte("postgres: ")) {
			continue // gone, or not a backend
		}
		m := regexp.MustCompile(`\((\d+)\)`).FindSubmatch(b)
		if m == nil || !ports[string(m[1])] {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(filepath.Dir(f), "stat"))
		if err != nil {
			continue // the backend just ended
		}
		if d, err := statCPU(stat); err == nil {
			cpu[pid] = d
		}
	}
	return cpu
}

// cpuSince is the CPU the processes of now used since then; a process new
// in now counts whole.
func cpuSince(then, now map[int]time.Duration) time.Duration {
	var total time.Duration
	for pid, d := range now {
		total += d - then[pid]
	}
	return total
}

// postgresClientPorts are the local ports of process pid's TCP connections
// to PostgreSQL's port (from $TRUSTFLOW_TEST_DATABASE_URL, 5432 by default).
func postgresClientPorts(pid int) map[string]bool {
	pgPort := 5432
	if u, err := url.Parse(os.Getenv(storetest.EnvPostgresURL)); err == nil {
		if n, err := strconv.Atoi(u.Port()); err == nil {
			pgPort = n
		}
	}
	inodes := map[string]bool{}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid)) // the pattern is valid
	for _, fd := range fds {
		if link, err := os.Readlink(fd); err == nil {
			if inode, ok := strings.CutPrefix(link, "socket:["); ok {
				inodes[strings.TrimSuffix(inode, "]")] = true
			}
		}
	}
	ports := map[string]bool{}
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue // no IPv6
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			f := strings.Fields(line)
			if len(f) < 10 || !inodes[f[9]] {
				continue
			}
			_, remPort, _ := strings.Cut(f[2], ":")
			_, locPort, _ := strings.Cut(f[1], ":")
			rp, err1 := strconv.ParseInt(remPort, 16, 32)
			lp, err2 := strconv.ParseInt(locPort, 16, 32)
			if err1 == nil && err2 == nil && int(rp) == pgPort {
				ports[strconv.FormatInt(lp, 10)] = true
			}
		}
	}
	return ports
}

// cpuTime is the user and system CPU time process pid has used, from
// /proc/PID/stat (in clock ticks of 1/100 s, the Linux USER_HZ).
func cpuTime(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(tb, err)
	d, err := statCPU(b)
	require.NoError(tb, err)
	return d
}

// statCPU reads utime + stime out of the text of a /proc/PID/stat file.
func statCPU(b []byte) (time.Duration, error) {
	// The command name may hold spaces; the fields after it are space-separated.
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name", len(fields))
	}
	// utime and stime are fields 14 and 15 of stat; the slice starts at field 3.
	utime, err := strconv.ParseInt(fields[14-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat utime: %w", err)
	}
	stime, err := strconv.ParseInt(fields[15-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat stime: %w", err)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// rssMiB is process pid's resident set size (VmRSS) in MiB.
func rssMiB(tb testing.TB, pid int) float64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(tb, err)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			require.NoError(tb, err)
			return kb / 1024
		}
	}
	tb.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}
