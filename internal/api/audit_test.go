package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// auditFixture appends five records: the bootstrap token.create at start,
// token.create at +1m and +2m, token.revoke at +2m and an auth.denied at +3m.
func auditFixture(t *testing.T, st *store.Store) (*env, []audit.Record) {
	t.Helper()
	ctx := context.Background()
	e := newEnv(t, st, api.Config{})
	e.clock.Advance(time.Minute)
	a, _ := e.createToken(t, "a", auth.RoleOperator, "")
	e.clock.Advance(time.Minute)
	e.createToken(t, "b", auth.RoleAuditor, "")
	_, err := e.auth.Revoke(ctx, e.adminP, a.ID)
	require.NoError(t, err)
	e.clock.Advance(time.Minute)
	require.Equal(t, http.StatusUnauthorized, e.do("GET", "/api/v1/tokens", "", "").Code)
	all, err := e.audit.List(ctx, audit.Filter{})
	require.NoError(t, err)
	require.Len(t, all, 5)
	return e, all // newest first
}

// auditPage fetches GET /api/v1/audit. The answer is indented, which
// re-indents each record's details; they are compacted back to the stored
// form (the form audit.Hash commits to) before comparing.
func auditPage(t *testing.T, e *env, query url.Values) api.AuditPage {
	t.Helper()
	p := requireJSON[api.AuditPage](t, e.do("GET", "/api/v1/audit?"+query.Encode(), e.admin, ""), http.StatusOK)
	for i := range p.Records {
		h, err := audit.Hash(p.Records[i])
		require.NoError(t, err)
		require.Equal(t, p.Records[i].Hash, h, "a record as the API answers it verifies on its own")
		var b bytes.Buffer
		require.NoError(t, json.Compact(&b, p.Records[i].Details))
		p.Records[i].Details = b.Bytes()
	}
	return p
}

func seqs(recs []audit.Record) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func TestAuditList(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e, all := auditFixture(t, st)
		require.Equal(t, []int64{5, 4, 3, 2, 1}, seqs(all))

		require.Equal(t, api.AuditPage{Records: all}, auditPage(t, e, nil))

		// Pagination: newest first, next_cursor until the oldest record.
		p1 := auditPage(t, e, url.Values{"limit": {"2"}})
		require.Equal(t, api.AuditPage{Records: all[0:2], NextCursor: "4"}, p1)
		p2 := auditPage(t, e, url.Values{"limit": {"2"}, "cursor": {p1.NextCursor}})
		require.Equal(t, api.AuditPage{Records: all[2:4], NextCursor: "2"}, p2)
		p3 := auditPage(t, e, url.Values{"limit": {"2"}, "cursor": {p2.NextCursor}})
		require.Equal(t, api.AuditPage{Records: all[4:]}, p3)

		// Filters.
		cases := []struct {
			query url.Values
			want  []int64
		}{
			{url.Values{"action": {"token.*"}}, []int64{4, 3, 2, 1}},
			{url.Values{"action": {"token."}}, []int64{4, 3, 2, 1}},
			{url.Values{"action": {"token.revoke"}}, []int64{4}},
			{url.Values{"action": {"token"}}, nil},
			{url.Values{"action": {"auth.*"}}, []int64{5}},
			{url.Values{"action": {"%"}}, nil},
			{url.Values{"actor": {"anonymous"}}, []int64{5}},
			{url.Values{"actor": {"trustflow"}}, []int64{1}},
			{url.Values{"actor": {e.adminP.TokenID}}, []int64{4, 3, 2}},
			{url.Values{"target": {all[1].Target}}, []int64{4, 2}},
			{url.Values{"since": {start.Add(time.Minute).Format(time.RFC3339)}}, []int64{5, 4, 3, 2}},
			{url.Values{"until": {start.Add(2 * time.Minute).Format(time.RFC3339)}}, []int64{2, 1}},
			{url.Values{"since": {start.Add(2 * time.Minute).Format(time.RFC3339Nano)}, "until": {start.Add(3 * time.Minute).Format(time.RFC3339)}}, []int64{4, 3}},
			{url.Values{"action": {"token.*"}, "limit": {"3"}}, []int64{4, 3, 2}},
		}
		for _, tc := range cases {
			got := auditPage(t, e, tc.query)
			require.NotNil(t, got.Records, "records is [] rather than null: %s", tc.query.Encode())
			if tc.want == nil {
				tc.want = []int64{}
			}
			require.Equal(t, tc.want, seqs(got.Records), tc.query.Encode())
		}
	})
}

func TestAuditListRejectsBadQuery(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newEnv(t, st, api.Config{})
		withField := func(field string, d errorDetail) errorDetail { d.Field = field; return d }
		timeErr := func(field string) errorDetail {
			return withField(field, invalidInput(field+": not an RFC 3339 time", "use e.g. 2026-01-31T00:00:00Z"))
		}
		limitErr := withField("limit", invalidInput("limit: must be an integer from 1 to 1000", "use e.g. limit=100"))
		cursorErr := withField("cursor", invalidInput("cursor: is not a cursor this API returned", "pass next_cursor from the previous page unchanged"))
		cases := []struct {
			path string
			want errorDetail
		}{
			{"/api/v1/audit?since=yesterday", timeErr("since")},
			{"/api/v1/audit?since=2026-01-31", timeErr("since")},
			{"/api/v1/audit?until=12:00", timeErr("until")},
			{"/api/v1/audit?limit=0", limitErr},
			{"/api/v1/audit?limit=1001", limitErr},
			{"/api/v1/audit?limit=ten", limitErr},
			{"/api/v1/audit?cursor=abc", cursorErr},
			{"/api/v1/audit?cursor=0", cursorErr},
			{"/api/v1/audit/export?since=yesterday", timeErr("since")},
		}
		for _, tc := range cases {
			head := e.head(t)
			requireError(t, e.do("GET", tc.path, e.admin, ""), http.StatusBadRequest, tc.want)
			require.Equal(t, head, e.head(t))
		}
	})
}

func TestAuditVerify(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e, all := auditFixture(t, st)
		got := requireJSON[audit.Verification](t, e.do("GET", "/api/v1/audit/verify", e.admin, ""), http.StatusOK)
		require.Equal(t, audit.Verification{OK: true, Records: 5, HeadSeq: 5, HeadHash: all[0].Hash}, got)

		_, err := st.DB().Exec("UPDATE audit_records SET target = 'token/forged' WHERE seq = 3")
		require.NoError(t, err)
		got = requireJSON[audit.Verification](t, e.do("GET", "/api/v1/audit/verify", e.admin, ""), http.StatusOK)
		require.False(t, got.OK)
		require.Equal(t, int64(3), got.FirstBadSeq)
		require.Regexp(t, `^record 3 was altered: `, got.Problem)
	})
}

func TestAuditExport(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e, all := auditFixture(t, st)
		oldestFirst := make([]audit.Record, len(all))
		for i, r := range all {
			oldestFirst[len(all)-1-i] = r
		}

		export := func(query string) []audit.Record {
			rec := e.do("GET", "/api/v1/audit/export"+query, e.admin, "")
			require.Equal(t, http.StatusOK, rec.Code, "body: %s", rec.Body)
			require.Equal(t, "application/x-ndjson", rec.Header().Get("Content-Type"))
			var out []audit.Record
			sc := bufio.NewScanner(bytes.NewReader(rec.Body.Bytes()))
			for sc.Scan() {
				r := decodeStrict[audit.Record](t, sc.Bytes())
				h, err := audit.Hash(r)
				require.NoError(t, err)
				require.Equal(t, r.Hash, h, "an exported record verifies on its own")
				out = append(out, r)
			}
			require.NoError(t, sc.Err())
			return out
		}
		require.Equal(t, oldestFirst, export(""))
		require.Equal(t, oldestFirst[1:4], export("?action=token.*&actor="+e.adminP.TokenID))
		require.Empty(t, export("?action=nothing"))
	})
}
