package truststore

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/errs"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/store"
)

// CA is a trust anchor bundle's public view.
type CA struct {
	Name            string         `json:"name"`
	Description     string         `json:"description"`
	AllowLeafAnchor bool           `json:"allow_leaf_anchor"`
	Certificates    []pki.CertInfo `json:"certificates"`
	CreatedAt       time.Time      `json:"created_at"`
	UpdatedAt       time.Time      `json:"updated_at"`
	Revision        int64          `json:"revision"`
}

// CARequest adds or replaces a CA bundle.
type CARequest struct {
	Name        string
	Description string
	// Data is PEM (one or many certificates), DER, or PKCS#7 (PEM or DER).
	Data []byte
	// AllowLeafAnchor accepts a self-signed non-CA certificate (a legacy
	// server's own certificate) as an anchor.
	AllowLeafAnchor bool
	// AllowExpired accepts certificates outside their validity period.
	AllowExpired bool
}

// parseBundle validates a CA bundle and returns its certificates,
// de-duplicated, in input order.
func (s *Service) parseBundle(req CARequest) ([]*x509.Certificate, error) {
	if len(req.Data) == 0 {
		return nil, invalid("file", "required", "no certificate data was given", "pass the CA certificate file (PEM, DER or PKCS#7) with --file")
	}
	certs, err := pki.ParseCertificates(req.Data)
	if err != nil {
		return nil, fieldError("file", err)
	}
	now := s.clock.Now()
	seen := map[string]bool{}
	var out []*x509.Certificate
	for _, c := range certs {
		fp := pki.FingerprintSHA256(c)
		if seen[fp] {
			continue
		}
		seen[fp] = true
		if err := pki.CheckCA(c, req.AllowLeafAnchor); err != nil {
			return nil, fieldError("file", err)
		}
		if !req.AllowExpired {
			if err := pki.CheckValidity(c, now); err != nil {
				return nil, fieldError("file", addHint(err, "or pass --allow-expired to keep it anyway"))
			}
		}
		if s.cfg.FIPS {
			if err := pki.CheckFIPSCertificate(c); err != nil {
				return nil, fieldError("file", err)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// addHint appends more advice to a pki error's hint.
func addHint(err error, more string) error {
	var pe *errs.Error
	if errors.As(err, &pe) {
		cp := *pe
		if cp.Hint != "" {
			cp.Hint += "; " + more
		} else {
			cp.Hint = more
		}
		return &cp
	}
	return err
}

func caView(c store.CA) (CA, error) {
	certs, err := pki.ParseCertificates([]byte(c.PEM))
	if err != nil {
		return CA{}, fmt.Errorf("truststore: stored ca %q does not parse: %w", c.Name, err)
	}
	v := CA{Name: c.Name, Description: c.Description, AllowLeafAnchor: c.AllowLeaf, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, Revision: c.Revision}
	for _, cert := range certs {
		v.Certificates = append(v.Certificates, pki.Info(cert))
	}
	return v, nil
}

func fingerprints(certs []*x509.Certificate) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = pki.FingerprintSHA256(c)
	}
	return out
}

func subjects(certs []*x509.Certificate) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = c.Subject.String()
	}
	return out
}

// AddCA validates and stores a new CA bundle.
func (s *Service) AddCA(ctx context.Context, actor audit.Actor, req CARequest) (CA, error) {
	if err := checkName("name", req.Name); err != nil {
		return CA{}, err
	}
	certs, err := s.parseBundle(req)
	if err != nil {
		return CA{}, err
	}
	id, err := newID("ca_")
	if err != nil {
		return CA{}, err
	}
	now := s.now()
	row := store.CA{ID: id, Name: req.Name, Description: strings.TrimSpace(req.Description), PEM: string(pki.EncodeCertificatesPEM(certs...)),
		AllowLeaf: req.AllowLeafAnchor, CreatedAt: now, UpdatedAt: now, Revision: 1}
	err = s.store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.InsertCA(ctx, row); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return &errs.Error{Kind: errs.Conflict, Code: "already_exists", Message: fmt.Sprintf("a CA named %q already exists", req.Name), Hint: "choose another name, or replace its certificates with `trustflow ca update " + req.Name + " --file F`", Op: "truststore"}
			}
			return err
		}
		_, err := s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "ca.add", Target: "ca/" + req.Name, Details: map[string]any{
			"fingerprints_sha256": fingerprints(certs), "subjects": subjects(certs),
			"allow_leaf_anchor": req.AllowLeafAnchor, "allow_expired": req.AllowExpired,
		}})
		return err
	})
	if err != nil {
		return CA{}, err
	}
	s.invalidateCA(req.Name)
	return caView(row)
}

// UpdateCA replaces a bundle's certificates in place: connectors that use
// it keep their reference and see the new bundle on their next handshake.
func (s *Service) UpdateCA(ctx context.Context, actor audit.Actor, req CARequest) (CA, error) {
	certs, err := s.parseBundle(req)
	if err != nil {
		return CA{}, err
	}
	var out store.CA
	err = s.store.InTx(ctx, func(tx *store.Tx) error {
		old, err := tx.CAByName(ctx, req.Name)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("CA", req.Name)
		} else if err != nil {
			return err
		}
		oldCerts, err := pki.ParseCertificates([]byte(old.PEM))
		if err != nil {
			return fmt.Errorf("truststore: stored ca %q does not parse: %w", old.Name, err)
		}
		out = old
		out.PEM = string(pki.EncodeCertificatesPEM(certs...))
		out.AllowLeaf = req.AllowLeafAnchor
		if req.Description != "" {
			out.Description = strings.TrimSpace(req.Description)
		}
		out.UpdatedAt = s.now()
		out.Revision++
		if err := tx.UpdateCA(ctx, out); err != nil {
			return err
		}
		_, err = s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "ca.update", Target: "ca/" + req.Name, Details: map[string]any{
			"old_fingerprints_sha256": fingerprints(oldCerts), "fingerprints_sha256": fingerprints(certs), "subjects": subjects(certs),
		}})
		return err
	})
	if err != nil {
		return CA{}, err
	}
	s.invalidateCA(req.Name)
	return caView(out)
}

// RemoveCA deletes a CA bundle unless something still uses it.
func (s *Service) RemoveCA(ctx context.Context, actor audit.Actor, name string) error {
	defer s.invalidateCA(name)
	return s.store.InTx(ctx, func(tx *store.Tx) error {
		c, err := tx.CAByName(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("CA", name)
		} else if err != nil {
			return err
		}
		users, err := s.cfg.InUse(ctx, tx, "ca", name)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return &errs.Error{Kind: errs.Conflict, Code: "in_use", Message: fmt.Sprintf("CA %q is still used by connectors: %s", name, strings.Join(users, ", ")), Hint: "remove it from those connectors first (`trustflow connector update NAME`), then remove the CA", UsedBy: users, Op: "truststore"}
		}
		if err := tx.DeleteCA(ctx, c.ID); err != nil {
			return err
		}
		certs, _ := pki.ParseCertificates([]byte(c.PEM)) // stored PEM was validated on the way in
		_, err = s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "ca.remove", Target: "ca/" + name,
			Details: map[string]any{"fingerprints_sha256": fingerprints(certs)}})
		return err
	})
}

// GetCA returns one CA bundle.
func (s *Service) GetCA(ctx context.Context, name string) (CA, error) {
	c, err := s.store.CAByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return CA{}, notFound("CA", name)
	} else if err != nil {
		return CA{}, err
	}
	return caView(c)
}

// ListCAs returns every CA bundle.
func (s *Service) ListCAs(ctx context.Context) ([]CA, error) {
	rows, err := s.store.ListCAs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]CA, 0, len(rows))
	for _, r := range rows {
		v, err := caView(r)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Anchors returns the certificates of the named CA bundles, for
// verification on every handshake. Bundles are cached; a local change is
// seen at once, another node's within RevalidateAfter. An unknown name is a
// NotFound *errs.Error naming it.
func (s *Service) Anchors(ctx context.Context, names ...string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	now := s.clock.Now()
	for _, n := range names {
		s.mu.RLock()
		e := s.anchors[n]
		s.mu.RUnlock()
		if e != nil && now.Sub(e.checkedAt) < s.cfg.RevalidateAfter {
			out = append(out, e.certs...)
			continue
		}
		gen := s.gen.Load()
		c, err := s.store.CAByName(ctx, n)
		if errors.Is(err, store.ErrNotFound) {
			return nil, notFound("CA", n)
		} else if err != nil {
			return nil, err
		}
		certs, err := pki.ParseCertificates([]byte(c.PEM))
		if err != nil {
			return nil, fmt.Errorf("truststore: stored ca %q does not parse: %w", n, err)
		}
		s.mu.Lock()
		if s.gen.Load() == gen {
			s.anchors[n] = &anchorEntry{checkedAt: now, certs: certs}
		}
		s.mu.Unlock()
		out = append(out, certs...)
	}
	return out, nil
}

// VerifyRequest asks whether a server (or client) certificate chains to a
// CA bundle: the `ca verify` diagnostic, on the connectors' code path.
type VerifyRequest struct {
	CA            []string
	Leaf          []byte
	Intermediates []byte
	Name          string
	Time          time.Time
	Purpose       string // server (default) or client
}

// Verification is the answer: the chain when valid, the diagnosis if not.
type Verification struct {
	Valid bool           `json:"valid"`
	Chain []pki.CertInfo `json:"chain,omitempty"`
	Leaf  pki.CertInfo   `json:"leaf"`
	// Error is the diagnosis when Valid is false.
	Error *VerifyError `json:"error,omitempty"`
}

// VerifyError is a verification failure's public form.
type VerifyError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// Verify builds and checks the chain the way connectors do.
func (s *Service) Verify(ctx context.Context, req VerifyRequest) (Verification, error) {
	if len(req.CA) == 0 {
		return Verification{}, invalid("ca", "required", "no CA was named", "name the CA bundle to verify against with --ca")
	}
	if len(req.Leaf) == 0 {
		return Verification{}, invalid("leaf", "required", "no certificate to verify was given", "pass the server's certificate with --leaf")
	}
	leaf, inter, err := leafAndChain("leaf", req.Leaf, "intermediates", req.Intermediates)
	if err != nil {
		return Verification{}, err
	}
	purpose := req.Purpose
	switch purpose {
	case "", "server":
		purpose = pki.PurposeServer
	case "client":
		purpose = pki.PurposeClient
	default:
		return Verification{}, invalid("purpose", "invalid_input", fmt.Sprintf("%q is not a purpose", req.Purpose), "use server or client")
	}
	roots, err := s.Anchors(ctx, req.CA...)
	if err != nil {
		if e, ok := errs.As(err); ok && e.Kind == errs.NotFound {
			return Verification{}, invalid("ca", "unknown_ca", e.Message, "list the CAs with `trustflow ca list`")
		}
		return Verification{}, err
	}
	at := req.Time
	if at.IsZero() {
		at = s.clock.Now()
	}
	res, err := pki.Verify(leaf, pki.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: req.Name, Time: at, Purpose: purpose})
	out := Verification{Leaf: pki.Info(leaf)}
	if err != nil {
		var pe *errs.Error
		if !errors.As(err, &pe) {
			return Verification{}, err
		}
		out.Error = &VerifyError{Code: pe.Code, Message: pe.Message, Hint: pe.Hint}
		return out, nil
	}
	out.Valid = true
	for _, c := range res.Chain {
		out.Chain = append(out.Chain, pki.Info(c))
	}
	return out, nil
}

// leafAndChain reads a certificate file whose first certificate is the leaf
// (any after it are its chain, as servers send them) and an optional file
// of more chain certificates; errors name the field at fault.
func leafAndChain(leafField string, leafData []byte, chainField string, chainData []byte) (*x509.Certificate, []*x509.Certificate, error) {
	certs, err := pki.ParseCertificates(leafData)
	if err != nil {
		return nil, nil, fieldError(leafField, err)
	}
	leaf, chain := certs[0], certs[1:]
	if len(chainData) > 0 {
		more, err := pki.ParseCertificates(chainData)
		if err != nil {
			return nil, nil, fieldError(chainField, err)
		}
		chain = append(chain, more...)
	}
	return leaf, chain, nil
}
