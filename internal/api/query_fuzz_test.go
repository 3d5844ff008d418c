package api_test

import (
	"net"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/errs"
)

// fuzzParams are the parameters of GET /api/v1/audit plus one of each other
// kind.
var fuzzParams = []api.Param{
	{Name: "action"}, {Name: "since", Kind: api.ParamTime}, {Name: "until", Kind: api.ParamTime},
	{Name: "limit", Kind: api.ParamInteger, Min: 1, Max: 1000}, {Name: "cursor", Kind: api.ParamInteger, Min: 1},
	{Name: "status", Enum: []string{"queued", "failed"}}, {Name: "wait", Kind: api.ParamDuration, Max: int64(300e9)},
	{Name: "progress", Kind: api.ParamBoolean},
}

// FuzzParseQuery: any query string either parses, with every value of its
// parameter's kind and in range, or is refused with an Invalid error that
// names a field; it never panics.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "limit=10", "limit=%zz", "status=bogus", "a=1&&b=2", "since=2026-01-01T00:00:00Z&until=2025-01-01T00:00:00Z",
		"wait=5m1s", "progress=true", "%zz=1", "limit=1&limit=2", "action=token.%2A", "status=failed;x=1", "cursor=-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := api.ParseQuery(raw, fuzzParams)
		if err != nil {
			e, ok := errs.As(err)
			if !ok || e.Kind != errs.Invalid || e.Field == "" || e.Hint == "" {
				t.Fatalf("%q: %v is not an invalid-field error with a hint", raw, err)
			}
			return
		}
		if n := q.Int("limit"); q.Has("limit") && (n < 1 || n > 1000) {
			t.Fatalf("%q: limit %d out of range", raw, n)
		}
		if d := q.Duration("wait"); d < 0 || d > 300e9 {
			t.Fatalf("%q: wait %s out of range", raw, d)
		}
		if s := q.String("status"); q.Has("status") && s != "queued" && s != "failed" {
			t.Fatalf("%q: status %q not in the enum", raw, s)
		}
	})
}

// FuzzSourceOf: any peer address and X-Forwarded-For give a source; an
// untrusted peer's X-Forwarded-For is never believed.
func FuzzSourceOf(f *testing.F) {
	for _, s := range [][2]string{{"192.0.2.1:1", ""}, {"10.0.0.1:1", "198.51.100.7"}, {"10.0.0.1:1", "garbage, 10.0.0.2"},
		{"[2001:db8::1]:1", "1.2.3.4"}, {"10.0.0.1:1", "[::1]:80, ::ffff:1.2.3.4"}, {"nonsense", "1.1.1.1"}} {
		f.Add(s[0], s[1])
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", xff)
		got := api.SourceOf(r, trusted)
		if got == "" {
			t.Fatalf("%q via %q: empty source", remote, xff)
		}
		if got != api.SourceOf(r, nil) && !peerIn(remote, trusted[0]) {
			t.Fatalf("%q via %q: an untrusted peer's X-Forwarded-For was believed: %s", remote, xff, got)
		}
	})
}

func peerIn(remote string, p netip.Prefix) bool {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(host)
	return err == nil && p.Contains(a.Unmap().WithZone(""))
}
