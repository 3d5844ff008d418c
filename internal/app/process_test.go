package app_test

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/config"
)

// TestProcessShutsDownGracefullyOnSIGTERM builds the trustflow binary, runs
// `trustflow serve`, waits until it is ready, sends SIGTERM and expects a
// clean exit within the shutdown timeout.
func TestProcessShutsDownGracefullyOnSIGTERM(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildTrustflow(t)

	dataDir := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(bin, "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-format", "text")
	cmd.Env = hermeticEnv()
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	type exit struct {
		logs string
		err  error
	}
	exited := make(chan exit, 1)
	waited := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-waited:
		default:
			_ = cmd.Process.Kill() // the test failed before the process exited
			<-waited
		}
	})

	// The server logs its address once it listens.
	servingRe := regexp.MustCompile(`msg="trustflow serving" addr=(\S+)`)
	addrCh := make(chan string, 1)
	go func() {
		defer close(waited)
		var all strings.Builder
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			if m := servingRe.FindStringSubmatch(sc.Text()); m != nil {
				addrCh <- m[1]
			}
		}
		exited <- exit{logs: all.String(), err: cmd.Wait()}
	}()
	var addr string
	select {
	case addr = <-addrCh:
	case e := <-exited:
		t.Fatalf("trustflow serve exited before listening: %v\n%s", e.err, e.logs)
	case <-time.After(30 * time.Second):
		t.Fatal("trustflow serve did not start listening within 30s")
	}

	resp, err := http.Get(addr + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case e := <-exited:
		require.NoError(t, e.err, "exit status; log:\n%s", e.logs)
		require.Equal(t, 0, cmd.ProcessState.ExitCode())
		require.Contains(t, e.logs, "shutting down")
	case <-time.After(config.DefaultShutdownAfter + 5*time.Second):
		t.Fatalf("trustflow serve did not exit within the %s shutdown timeout after SIGTERM", config.DefaultShutdownAfter)
	}
	_, err = http.Get(addr + "/healthz")
	require.Error(t, err, "the listener is closed")
	_, err = os.Stat(filepath.Join(dataDir, config.AdminTokenFile))
	require.NoError(t, err)
}

// buildTrustflow builds ./cmd/trustflow into the test's temp dir.
func buildTrustflow(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	require.NoError(t, err)
	gomod := strings.TrimSpace(string(out))
	require.NotEmpty(t, gomod, "not inside the trustflow module")
	bin := filepath.Join(t.TempDir(), "trustflow")
	build := exec.Command("go", "build", "-o", bin, "./cmd/trustflow")
	build.Dir = filepath.Dir(gomod)
	b, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", b)
	return bin
}

// hermeticEnv is the process environment without TRUSTFLOW_* variables.
func hermeticEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TRUSTFLOW_") {
			env = append(env, kv)
		}
	}
	return env
}
