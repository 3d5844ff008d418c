package app

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/store"
)

// TestConsoleSignInFloodIsBounded: bad console sign-ins from one source
// count against the same per-source limit as the API's refusals: past the
// burst they get 429 with Retry-After before any token is looked up, and the
// audit log grows by one record at once (the rest are aggregated).
func TestConsoleSignInFloodIsBounded(t *testing.T) {
	t.Parallel()
	cfg := kekConfig(t, store.SQLite)
	a := newKEKApp(t, cfg, io.Discard)
	require.NoError(t, a.Start(context.Background()))
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	csrf := func() string {
		resp, err := c.Get(a.URL() + "/ui/signin")
		require.NoError(t, err)
		page, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		resp.Body.Close()
		m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
		require.NotNil(t, m, "the sign-in form carries its token")
		return string(m[1])
	}
	before := countDenied(t, a)

	statuses := map[int]int{}
	var retryAfter string
	for range 60 {
		resp, err := c.PostForm(a.URL()+"/ui/signin", url.Values{"csrf": {csrf()}, "token": {"tf_not-a-token"}})
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests {
			retryAfter = resp.Header.Get("Retry-After")
		}
	}
	require.Equal(t, 20, statuses[http.StatusUnauthorized], "the burst (auth_fail_burst 20) is refused as unauthenticated: %v", statuses)
	require.Equal(t, 40, statuses[http.StatusTooManyRequests], "the rest get 429: %v", statuses)
	require.NotEmpty(t, retryAfter)
	require.Equal(t, before+1, countDenied(t, a), "one record at once; the rest are counted for the interval's aggregate")
}

func countDenied(t *testing.T, a *App) int {
	t.Helper()
	recs, err := a.Audit.List(context.Background(), audit.Filter{Action: "auth.denied", Limit: 1000})
	require.NoError(t, err)
	return len(recs)
}
