package api

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/errs"
)

// RefusalConfig bounds what refused requests (no valid token, a role without
// the permission, a bad webhook signature) can cost: each source may be
// refused Rate times a second (Burst at once) before every request from it
// is answered 429 without any further work, and refusals are audited as at
// most one auth.denied record per source per Interval, plus one for the
// first refusal of a source that was quiet.
type RefusalConfig struct {
	// Rate is the refused requests a second one source may make. Defaults
	// to 10.
	Rate float64
	// Burst is how many refused requests one source may make at once.
	// Defaults to 20.
	Burst int
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client. Empty trusts none: a request's source is its peer.
	TrustedProxies []netip.Prefix
	// Interval is how long the refusals of one source are counted into
	// one record. Defaults to 1m.
	Interval time.Duration
	// MaxSources caps the sources tracked at once; the least recently
	// seen is forgotten first (its pending count goes to the summary
	// record). Defaults to 10000.
	MaxSources int
	// MaxRecorded caps the sources that get records of their own in one
	// interval; the refusals of the others are summed into one summary
	// record. Defaults to 100.
	MaxRecorded int
}

func (c RefusalConfig) withDefaults() RefusalConfig {
	if c.Rate <= 0 {
		c.Rate = 10
	}
	if c.Burst <= 0 {
		c.Burst = 20
	}
	if c.Interval <= 0 {
		c.Interval = time.Minute
	}
	if c.MaxSources <= 0 {
		c.MaxSources = 10000
	}
	if c.MaxRecorded <= 0 {
		c.MaxRecorded = 100
	}
	return c
}

// maxTallyKeys bounds the reasons, routes and actors one record lists; the
// rest are counted under "other".
const maxTallyKeys = 8

// refusals is the per-source table of refused requests: a token bucket and
// the count not yet recorded, for each source.
type refusals struct {
	cfg   RefusalConfig
	clock clock.Clock
	audit *audit.Log
	log   *slog.Logger

	mu       sync.Mutex
	sources  map[string]*source
	lru      *list.List // of *source, most recently refused first
	recorded int        // sources recorded on their own this interval
	rest     tally      // refusals of sources beyond MaxRecorded or forgotten

	startOnce, stopOnce sync.Once
	stop                chan struct{}
	done                chan struct{}
}

type source struct {
	key  string
	lim  *rate.Limiter
	elem *list.Element
	// open means the source was refused in this interval or the last:
	// its refusals are counted, not recorded one by one.
	open  bool
	tally tally
}

// tally counts refusals for one record.
type tally struct {
	count       int64
	sources     int64 // for the summary record: how many sources
	first, last time.Time
	reasons     map[string]int64
	routes      map[string]int64
	actors      map[string]audit.Actor
}

func (t *tally) add(now time.Time, reason, route string, actor audit.Actor) {
	if t.count == 0 {
		t.first = now
	}
	t.count++
	t.last = now
	t.reasons = bump(t.reasons, reason, 1)
	t.routes = bump(t.routes, route, 1)
	if t.actors == nil {
		t.actors = map[string]audit.Actor{}
	}
	if _, ok := t.actors[actor.ID]; ok || len(t.actors) < maxTallyKeys {
		t.actors[actor.ID] = actor
	}
}

func (t *tally) merge(o tally) {
	if o.count == 0 {
		return
	}
	if t.count == 0 || o.first.Before(t.first) {
		t.first = o.first
	}
	if o.last.After(t.last) {
		t.last = o.last
	}
	t.count += o.count
	t.sources++
	for k, n := range o.reasons {
		t.reasons = bump(t.reasons, k, n)
	}
	for k, n := range o.routes {
		t.routes = bump(t.routes, k, n)
	}
}

// bump adds n to m[k], or to m["other"] once m holds maxTallyKeys keys.
func bump(m map[string]int64, k string, n int64) map[string]int64 {
	if m == nil {
		m = map[string]int64{}
	}
	if _, ok := m[k]; !ok && len(m) >= maxTallyKeys {
		k = "other"
	}
	m[k] += n
	return m
}

func newRefusals(cfg RefusalConfig, c clock.Clock, log *audit.Log, logger *slog.Logger) *refusals {
	return &refusals{cfg: cfg.withDefaults(), clock: c, audit: log, log: logger,
		sources: map[string]*source{}, lru: list.New(), stop: make(chan struct{}), done: make(chan struct{})}
}

// limited reports whether src has used up its refusals; if so it counts the
// request as refused for reason rate_limited and returns the 429 error.
func (g *refusals) limited(src, route string) error {
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sources[src]
	if s == nil {
		return nil
	}
	tokens := s.lim.TokensAt(now)
	if tokens >= 1 {
		return nil
	}
	s.open = true
	s.tally.add(now, "rate_limited", route, audit.Actor{ID: "anonymous", Name: "anonymous"})
	g.lru.MoveToFront(s.elem)
	wait := time.Duration((1 - tokens) / g.cfg.Rate * float64(time.Second))
	return &errs.Error{Kind: errs.RateLimited, Code: "rate_limited", RetryAfter: wait,
		Message: fmt.Sprintf("too many refused requests from %s (limit auth_fail_rate: %g a second, auth_fail_burst: %d)", src, g.cfg.Rate, g.cfg.Burst),
		Hint:    "wait for Retry-After seconds and send a valid token; requests with a valid token are refused too while this source is over the limit"}
}

// refuse takes one of src's refusals and records e at once when src was
// quiet (and fewer than MaxRecorded sources were recorded in this interval);
// otherwise it only counts it, for the record flush writes.
func (g *refusals) refuse(ctx context.Context, src, reason string, e audit.Entry) {
	now := g.clock.Now()
	g.mu.Lock()
	s := g.sources[src]
	if s == nil {
		if len(g.sources) >= g.cfg.MaxSources {
			g.forget(g.lru.Back().Value.(*source))
		}
		s = &source{key: src, lim: rate.NewLimiter(rate.Limit(g.cfg.Rate), g.cfg.Burst)}
		s.elem = g.lru.PushFront(s)
		g.sources[src] = s
	} else {
		g.lru.MoveToFront(s.elem)
	}
	s.lim.AllowN(now, 1)
	immediate := !s.open && g.recorded < g.cfg.MaxRecorded
	s.open = true
	if immediate {
		g.recorded++
	} else {
		s.tally.add(now, reason, e.Target, e.Actor)
	}
	g.mu.Unlock()
	if !immediate {
		return
	}
	// The first refusal of a quiet source is recorded at once, so a
	// single bad attempt is visible without waiting for the interval.
	if err := g.audit.Record(ctx, e); err != nil {
		g.log.Error("audit refused request", "request_id", RequestID(ctx), "err", err)
	}
}

// forget drops s from the table; what it had not recorded goes to the
// summary. Called with mu held.
func (g *refusals) forget(s *source) {
	g.rest.merge(s.tally)
	g.lru.Remove(s.elem)
	delete(g.sources, s.key)
}

// flush writes one auth.denied record for each source refused since the last
// flush (the MaxRecorded busiest; one summary record for the rest), closes
// the windows of sources that were quiet, and forgets sources that are
// quiet with a full bucket.
func (g *refusals) flush(ctx context.Context) {
	now := g.clock.Now()
	g.mu.Lock()
	type pending struct {
		key   string
		tally tally
	}
	var busy []pending
	for _, s := range g.sources {
		switch {
		case s.tally.count > 0:
			busy = append(busy, pending{s.key, s.tally})
			s.tally = tally{}
		case s.open:
			s.open = false
		case s.lim.TokensAt(now) >= float64(g.cfg.Burst):
			g.lru.Remove(s.elem)
			delete(g.sources, s.key)
		}
	}
	rest := g.rest
	g.rest = tally{}
	g.recorded = 0
	g.mu.Unlock()

	sort.Slice(busy, func(i, j int) bool {
		if busy[i].tally.count != busy[j].tally.count {
			return busy[i].tally.count > busy[j].tally.count
		}
		return busy[i].key < busy[j].key
	})
	var entries []audit.Entry
	for i, p := range busy {
		if i >= g.cfg.MaxRecorded {
			rest.merge(p.tally)
			continue
		}
		entries = append(entries, g.summary("source/"+p.key, p.key, p.tally))
	}
	if rest.count > 0 {
		e := g.summary("source/*", "", rest)
		e.Details["sources"] = rest.sources
		entries = append(entries, e)
	}
	for _, e := range entries {
		if err := g.audit.Record(ctx, e); err != nil {
			g.log.Error("audit refused requests", "target", e.Target, "err", err)
		}
	}
}

// summary is the auth.denied record of t.
func (g *refusals) summary(target, src string, t tally) audit.Entry {
	actor := audit.Actor{ID: "anonymous", Name: "anonymous"}
	details := map[string]any{"aggregated": true, "count": t.count, "reasons": t.reasons, "routes": t.routes,
		"first": t.first.UTC().Format(time.RFC3339Nano), "last": t.last.UTC().Format(time.RFC3339Nano), "interval": g.cfg.Interval.String()}
	if src != "" {
		details["source"] = src
	}
	if len(t.actors) == 1 {
		for _, a := range t.actors {
			actor = a
		}
	} else if len(t.actors) > 1 {
		ids := make([]string, 0, len(t.actors))
		for id := range t.actors {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		details["actors"] = ids
	}
	return audit.Entry{Actor: actor, Action: "auth.denied", Target: target, Outcome: audit.OutcomeDenied, Details: details}
}

// start flushes every Interval until stop.
func (g *refusals) start() {
	g.startOnce.Do(func() {
		go func() {
			defer close(g.done)
			t := time.NewTicker(g.cfg.Interval)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					g.flush(context.Background())
				case <-g.stop:
					return
				}
			}
		}()
	})
}

// close stops the loop (if started) and flushes what is pending. It is
// idempotent.
func (g *refusals) close() {
	g.stopOnce.Do(func() {
		close(g.stop)
		started := true
		g.startOnce.Do(func() { started = false })
		if started {
			<-g.done
		}
		g.flush(context.Background())
	})
}

// tracked is how many sources the table holds.
func (g *refusals) tracked() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sources)
}

// sourceOf names where r comes from: its peer's address, or, when the peer
// is a trusted proxy, the rightmost X-Forwarded-For hop that is not one. An
// IPv6 source is its /64, which one host usually holds whole.
func sourceOf(r *http.Request, trusted []netip.Prefix) string {
	peer, ok := parseHop(r.RemoteAddr)
	if !ok {
		return "unknown"
	}
	if len(trusted) == 0 || !isTrusted(peer, trusted) {
		return sourceKey(peer)
	}
	xff := r.Header.Values("X-Forwarded-For")
	if len(xff) == 0 {
		return sourceKey(peer)
	}
	hops := strings.Split(strings.Join(xff, ","), ",")
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(strings.TrimSpace(hops[i]))
		if !ok {
			break // a hop no proxy of ours wrote: stop at the last good one
		}
		client = a
		if !isTrusted(a, trusted) {
			break
		}
	}
	return sourceKey(client)
}

// parseHop parses an address with or without a port.
func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return a.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func sourceKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// RefusalLimited reports whether r's source has used up its refusals, with
// the 429 error (errs.RateLimited, RetryAfter set) when it has: for the
// console, which shares this table, so that a flood of bad sign-ins is
// bounded like a flood of bad API requests.
func (s *Server) RefusalLimited(r *http.Request, route string) error {
	return s.refusals.limited(sourceOf(r, s.cfg.Refusals.TrustedProxies), route)
}

// Refused records a request the console refused as the API records its own:
// the first of a quiet source at once, the rest aggregated per interval.
func (s *Server) Refused(r *http.Request, reason string, e audit.Entry) {
	src := sourceOf(r, s.cfg.Refusals.TrustedProxies)
	if e.Details == nil {
		e.Details = map[string]any{}
	}
	e.Details["source"] = src
	s.refusals.refuse(r.Context(), src, reason, e)
}
