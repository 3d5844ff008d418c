package truststore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/store"
)

// ActiveInfo says which identity version a handshake presented.
type ActiveInfo struct {
	Identity          string `json:"identity"`
	Version           int    `json:"version"`
	Serial            string `json:"serial"`
	FingerprintSHA256 string `json:"fingerprint_sha256"`
}

// ActiveCertificate is the active version of an identity, ready for a TLS
// handshake. Its private key is a crypto.Signer held only in memory.
type ActiveCertificate struct {
	Certificate *tls.Certificate
	Info        ActiveInfo
}

type activeEntry struct {
	// identityID and revision identify what the entry was built from: a
	// revision alone restarts at 1 when another node removes an identity
	// and creates one of the same name.
	identityID string
	revision   int64
	checkedAt  time.Time
	active     ActiveCertificate
}

// Active returns the identity's active certificate for a handshake. It is
// the hot path: a cached entry is served without touching the database
// for RevalidateAfter, then its id and revision are re-read (one indexed
// query) and the entry reloaded only when the identity changed. Changes
// made through this Service invalidate the cache at once.
func (s *Service) Active(ctx context.Context, name string) (ActiveCertificate, error) {
	now := s.clock.Now()
	s.mu.RLock()
	e := s.active[name]
	s.mu.RUnlock()
	if e != nil && now.Sub(e.checkedAt) < s.cfg.RevalidateAfter {
		return e.active, nil
	}
	if e != nil {
		ident, err := s.store.IdentityByName(ctx, name)
		if err == nil && ident.ID == e.identityID && ident.Revision == e.revision {
			s.mu.Lock()
			if cur := s.active[name]; cur == e {
				s.active[name] = &activeEntry{identityID: e.identityID, revision: e.revision, checkedAt: now, active: e.active}
			}
			s.mu.Unlock()
			return e.active, nil
		}
	}
	return s.loadActive(ctx, name, now)
}

func (s *Service) loadActive(ctx context.Context, name string, now time.Time) (ActiveCertificate, error) {
	// A local change that commits while this load reads the database
	// bumps gen; the (possibly stale) result is then not cached.
	gen := s.gen.Load()
	ident, v, err := s.store.ActiveIdentity(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		if _, gerr := s.store.IdentityByName(ctx, name); gerr == nil {
			return ActiveCertificate{}, &errs.Error{Kind: errs.Conflict, Code: "no_active_version", Message: fmt.Sprintf("identity %q has no active version", name), Hint: "install its certificate (`trustflow identity install-cert`) or activate a version (`trustflow identity activate`)", Op: "truststore"}
		}
		return ActiveCertificate{}, notFound("identity", name)
	} else if err != nil {
		return ActiveCertificate{}, err
	}
	key, err := s.openKey(ctx, v)
	if err != nil {
		// Fail closed, and leave a trace: an unsealable key is either
		// tampering or a KEK mix-up, and a token that refuses is a
		// missing device or a PIN problem, all of which an auditor must see.
		reason := "sealed key failed authentication"
		if v.KeyRef != "" {
			reason = hsmReason(err)
		}
		if aerr := s.audit.Record(ctx, audit.Entry{Actor: audit.System, Action: "identity.key_unavailable", Target: "identity/" + name,
			Outcome: audit.OutcomeFailure, Details: map[string]any{"version": v.Version, "reason": reason}}); aerr != nil {
			return ActiveCertificate{}, errors.Join(err, aerr)
		}
		return ActiveCertificate{}, err
	}
	certs, err := pki.ParseCertificates([]byte(v.CertPEM + v.ChainPEM))
	if err != nil {
		return ActiveCertificate{}, fmt.Errorf("truststore: stored certificate of %q v%d does not parse: %w", name, v.Version, err)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	ac := ActiveCertificate{Certificate: tc, Info: ActiveInfo{Identity: name, Version: v.Version, Serial: v.Serial, FingerprintSHA256: v.Fingerprint}}
	s.mu.Lock()
	if s.gen.Load() == gen {
		s.active[name] = &activeEntry{identityID: ident.ID, revision: ident.Revision, checkedAt: now, active: ac}
	}
	s.mu.Unlock()
	return ac, nil
}

// invalidate drops a cached active identity after a local change.
func (s *Service) invalidate(name string) {
	s.mu.Lock()
	delete(s.active, name)
	s.gen.Add(1)
	s.mu.Unlock()
}

// invalidateCA drops a cached CA bundle after a local change.
func (s *Service) invalidateCA(name string) {
	s.mu.Lock()
	delete(s.anchors, name)
	s.gen.Add(1)
	s.mu.Unlock()
}

type anchorEntry struct {
	checkedAt time.Time
	certs     []*x509.Certificate
}
