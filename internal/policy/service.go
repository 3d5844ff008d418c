package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
)

// ServiceConfig configures the policy service. Store and Audit are required.
type ServiceConfig struct {
	Store *store.Store
	Audit *audit.Log
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// RevalidateAfter is how long Current trusts its cached policy before
	// re-reading the stored revision, which bounds how late a change made on
	// another node is seen. Defaults to 1s.
	RevalidateAfter time.Duration
	// Check, when set, judges a new policy before it is stored, returning
	// what it would break (connectors, identities) for the audit record and
	// the answer; it does not refuse the change.
	Check func(ctx context.Context, p *Policy) ([]Violation, error)
}

// Violation is something that breaks a policy: a connector or identity and
// the rule.
type Violation struct {
	Kind    string `json:"kind"` // connector or identity
	Name    string `json:"name"`
	Rule    string `json:"rule"` // e.g. egress, tls.require_mtls
	Message string `json:"message"`
}

// View is the stored policy as the API shows it.
type View struct {
	Document  Document   `json:"document"`
	Revision  int64      `json:"revision"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	UpdatedBy string     `json:"updated_by,omitempty"`
	// Violations lists what the policy breaks, after a change.
	Violations []Violation `json:"violations,omitempty"`
}

// Service keeps the policy in force: it serves the current one to every
// dial and handshake, and changes it (admin, audited).
type Service struct {
	cfg   ServiceConfig
	clock clock.Clock
	cur   atomic.Pointer[cached]
	// refresh lets one caller at a time re-read the revision; the others
	// wait for it rather than use a policy known to be stale.
	refresh sync.Mutex
}

type cached struct {
	p         *Policy
	rev       int64
	checkedAt time.Time
}

// NewService loads the stored policy (or the default).
func NewService(ctx context.Context, cfg ServiceConfig) (*Service, error) {
	if cfg.Store == nil || cfg.Audit == nil {
		return nil, errors.New("policy: Store and Audit are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.RevalidateAfter <= 0 {
		cfg.RevalidateAfter = time.Second
	}
	s := &Service{cfg: cfg, clock: cfg.Clock}
	if err := s.reload(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Service) reload(ctx context.Context) error {
	rec, err := s.cfg.Store.Policy(ctx)
	if errors.Is(err, store.ErrNotFound) {
		p, err := Compile(Default())
		if err != nil {
			return err
		}
		s.cur.Store(&cached{p: p, checkedAt: s.clock.Now()})
		return nil
	}
	if err != nil {
		return fmt.Errorf("policy: load: %w", err)
	}
	p, err := decode(rec.Document)
	if err != nil {
		return fmt.Errorf("policy: the stored policy (revision %d) does not compile: %w", rec.Revision, err)
	}
	s.cur.Store(&cached{p: p, rev: rec.Revision, checkedAt: s.clock.Now()})
	return nil
}

func decode(b []byte) (*Policy, error) {
	var d Document
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, err
	}
	return Compile(d)
}

// Current returns the policy in force. Every RevalidateAfter one caller
// re-reads the stored revision (one indexed row) and reloads if another node
// changed it, while callers that find the cache stale meanwhile wait for it;
// a failed read keeps the cached policy for another interval.
func (s *Service) Current() *Policy {
	c := s.cur.Load()
	if s.clock.Now().Sub(c.checkedAt) < s.cfg.RevalidateAfter {
		return c.p
	}
	s.refresh.Lock()
	defer s.refresh.Unlock()
	if c = s.cur.Load(); s.clock.Now().Sub(c.checkedAt) < s.cfg.RevalidateAfter {
		return c.p // refreshed while this caller waited
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rev, err := s.cfg.Store.PolicyRevision(ctx)
	if err != nil {
		// Keep the cached policy for another interval rather than make
		// every caller wait on a database that does not answer.
		s.cur.Store(&cached{p: c.p, rev: c.rev, checkedAt: s.clock.Now()})
		return c.p
	}
	if rev == c.rev {
		s.cur.Store(&cached{p: c.p, rev: c.rev, checkedAt: s.clock.Now()})
		return c.p
	}
	if err := s.reload(ctx); err != nil {
		return c.p
	}
	return s.cur.Load().p
}

// Get returns the stored policy (the default when none was set).
func (s *Service) Get(ctx context.Context) (View, error) {
	rec, err := s.cfg.Store.Policy(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return View{Document: Default()}, nil
	}
	if err != nil {
		return View{}, fmt.Errorf("policy: get: %w", err)
	}
	p, err := decode(rec.Document)
	if err != nil {
		return View{}, fmt.Errorf("policy: the stored policy (revision %d) does not compile: %w", rec.Revision, err)
	}
	at := rec.UpdatedAt
	return View{Document: p.Document(), Revision: rec.Revision, UpdatedAt: &at, UpdatedBy: rec.UpdatedBy}, nil
}

// Set replaces the policy with doc (checked with Compile), audited as
// policy.set with the before and after documents.
func (s *Service) Set(ctx context.Context, actor audit.Actor, doc Document) (View, error) {
	p, err := Compile(doc)
	if err != nil {
		return View{}, err
	}
	return s.change(ctx, actor, "policy.set", func(*Policy) (*Policy, error) { return p, nil }, nil)
}

// Allow adds one egress rule (a no-op change if it is already there),
// audited as policy.allow.
func (s *Service) Allow(ctx context.Context, actor audit.Actor, r Rule) (View, error) {
	cr, err := compileRule("rule", r)
	if err != nil {
		return View{}, err
	}
	return s.change(ctx, actor, "policy.allow", func(old *Policy) (*Policy, error) {
		d := old.Document()
		if !slices.Contains(d.Egress.Allow, cr.src) {
			d.Egress.Allow = append(d.Egress.Allow, cr.src)
		}
		return Compile(d)
	}, map[string]any{"rule": cr.src})
}

// Disallow removes one egress rule, audited as policy.disallow; a rule the
// policy does not hold is NotFound.
func (s *Service) Disallow(ctx context.Context, actor audit.Actor, r Rule) (View, error) {
	cr, err := compileRule("rule", r)
	if err != nil {
		return View{}, err
	}
	return s.change(ctx, actor, "policy.disallow", func(old *Policy) (*Policy, error) {
		d := old.Document()
		i := slices.Index(d.Egress.Allow, cr.src)
		if i < 0 {
			return nil, &errs.Error{Kind: errs.NotFound, Code: "no_such_rule", Message: fmt.Sprintf("the policy has no egress rule for %s", cr.src),
				Hint: "see the rules with `trustflow policy show`; host and ports must match as shown there", Op: "policy"}
		}
		d.Egress.Allow = slices.Delete(d.Egress.Allow, i, i+1)
		return Compile(d)
	}, map[string]any{"rule": cr.src})
}

// change applies edit to the stored policy in one transaction, with a
// revision check so that concurrent changes on two nodes never lose one.
func (s *Service) change(ctx context.Context, actor audit.Actor, action string, edit func(*Policy) (*Policy, error), details map[string]any) (View, error) {
	var out View
	var next *Policy
	err := s.cfg.Store.InTx(ctx, func(tx *store.Tx) error {
		old, rev := (*Policy)(nil), int64(0)
		rec, err := tx.Policy(ctx)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if old, err = Compile(Default()); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			if old, err = decode(rec.Document); err != nil {
				return fmt.Errorf("policy: the stored policy (revision %d) does not compile: %w", rec.Revision, err)
			}
			rev = rec.Revision
		}
		if next, err = edit(old); err != nil {
			return err
		}
		doc := next.Document()
		b, err := json.Marshal(doc)
		if err != nil {
			return fmt.Errorf("policy: encode: %w", err)
		}
		var violations []Violation
		if s.cfg.Check != nil {
			if violations, err = s.cfg.Check(ctx, next); err != nil {
				return fmt.Errorf("policy: check what the policy breaks: %w", err)
			}
		}
		now := s.clock.Now().UTC().Truncate(time.Microsecond)
		newRev, err := tx.PutPolicy(ctx, b, rev, actor.Name, now)
		if err != nil {
			return err
		}
		det := map[string]any{"revision": newRev, "before": old.Document(), "after": doc}
		for k, v := range details {
			det[k] = v
		}
		if len(violations) > 0 {
			det["violations"] = violations
		}
		if _, err := s.cfg.Audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: action, Target: "policy", Details: det}); err != nil {
			return err
		}
		out = View{Document: doc, Revision: newRev, UpdatedAt: &now, UpdatedBy: actor.Name, Violations: violations}
		return nil
	})
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return View{}, &errs.Error{Kind: errs.Conflict, Code: "policy_changed", Message: "the policy changed while this change was made",
				Hint: "show the policy again and repeat the change", Op: "policy", Err: err}
		}
		return View{}, fmt.Errorf("policy: %s: %w", action, err)
	}
	s.cur.Store(&cached{p: next, rev: out.Revision, checkedAt: s.clock.Now()})
	return out, nil
}
