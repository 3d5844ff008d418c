package web

import (
	"crypto/fips140"
	"net/http"
	"slices"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/engine"
)

func (c *Console) dashboardRoutes() []route {
	return []route{{pattern: "GET /ui/{$}", perm: auth.PermSystemRead, handle: c.dashboard}}
}

// expiry is one certificate on the dashboard's "expiring soonest" list.
type expiry struct {
	Kind, Name, Href string
	NotAfter         time.Time
	Days             int
}

// Urgency names the colour class: expired, critical (a week), warning (a
// month) or ok.
func (e expiry) Urgency() string { return urgency(e.Days) }

func urgency(days int) string {
	switch {
	case days < 0:
		return "expired"
	case days <= 7:
		return "critical"
	case days <= 30:
		return "warning"
	}
	return "ok"
}

func daysLeft(now, notAfter time.Time) int {
	d := notAfter.Sub(now)
	if d < 0 {
		return -1 - int(-d/(24*time.Hour))
	}
	return int(d / (24 * time.Hour))
}

type statusCount struct {
	Status string
	Count  int
}

type dashboardPage struct {
	Expiring         []expiry
	ShowExpiring     bool
	FailedConnectors []connector.Connector
	ShowConnectors   bool
	RunCounts        []statusCount
	RecentRuns       []engine.RunView
	ShowRuns         bool
	Chain            *audit.Verification
	ShowChain        bool
	FIPS             bool
	Errors           []string
}

// dashboardLimit bounds the dashboard's lists.
const dashboardLimit = 10

func (c *Console) dashboard(w http.ResponseWriter, r *http.Request, rq *request) {
	ctx := r.Context()
	now := c.cfg.Clock.Now()
	role := rq.p.Role
	page := dashboardPage{FIPS: fips140.Enabled()}
	fail := func(what string, err error) {
		c.log.Error("console dashboard", "section", what, "err", err)
		page.Errors = append(page.Errors, what+" could not be loaded")
	}
	if role.Can(auth.PermIdentitiesRead) {
		page.ShowExpiring = true
		ids, err := c.cfg.Trust.List(ctx, 0)
		if err != nil {
			fail("identities", err)
		}
		for _, id := range ids {
			if v, ok := id.Active(); ok && v.NotAfter != nil {
				page.Expiring = append(page.Expiring, expiry{Kind: "identity", Name: id.Name, Href: "/ui/identities/" + id.Name, NotAfter: *v.NotAfter, Days: daysLeft(now, *v.NotAfter)})
			}
		}
	}
	if role.Can(auth.PermCAsRead) {
		page.ShowExpiring = true
		cas, err := c.cfg.Trust.ListCAs(ctx)
		if err != nil {
			fail("CAs", err)
		}
		for _, ca := range cas {
			for _, cert := range ca.Certificates {
				page.Expiring = append(page.Expiring, expiry{Kind: "CA", Name: ca.Name, Href: "/ui/cas/" + ca.Name, NotAfter: cert.NotAfter, Days: daysLeft(now, cert.NotAfter)})
			}
		}
	}
	slices.SortStableFunc(page.Expiring, func(a, b expiry) int { return a.NotAfter.Compare(b.NotAfter) })
	if len(page.Expiring) > dashboardLimit {
		page.Expiring = page.Expiring[:dashboardLimit]
	}
	if role.Can(auth.PermConnectorsRead) {
		page.ShowConnectors = true
		conns, err := c.cfg.Connectors.List(ctx)
		if err != nil {
			fail("connectors", err)
		}
		for _, cn := range conns {
			if cn.LastTestOK != nil && !*cn.LastTestOK {
				page.FailedConnectors = append(page.FailedConnectors, cn)
			}
		}
	}
	if role.Can(auth.PermRunsRead) {
		page.ShowRuns = true
		runs, err := c.cfg.Engine.ListRuns(ctx, engine.RunFilter{Limit: 100})
		if err != nil {
			fail("runs", err)
		}
		counts := map[string]int{}
		for _, run := range runs {
			counts[run.Status]++
		}
		for _, s := range []string{engine.StatusQueued, engine.StatusRunning, engine.StatusSleeping, engine.StatusSucceeded, engine.StatusFailed, engine.StatusCancelled} {
			if counts[s] > 0 {
				page.RunCounts = append(page.RunCounts, statusCount{Status: s, Count: counts[s]})
			}
		}
		page.RecentRuns = runs[:min(len(runs), dashboardLimit)]
	}
	if role.Can(auth.PermAuditRead) {
		page.ShowChain = true
		v, err := c.cfg.Audit.Verify(ctx)
		if err != nil {
			fail("audit chain", err)
		} else {
			page.Chain = &v
		}
	}
	c.renderPage(w, r, rq, http.StatusOK, "dashboard", "Dashboard", page)
}
