package truststore

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/hsm"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/store"
)

// Version statuses.
const (
	StatusPending = "pending" // key generated, waiting for its certificate
	StatusStaged  = "staged"  // ready, not active
	StatusActive  = "active"  // presented on handshakes
	StatusRetired = "retired" // was active; kept until pruned
)

// Identity is a client identity's public view. It never holds key material.
type Identity struct {
	Name          string    `json:"name"`
	Description   string    `json:"description"`
	Status        string    `json:"status"` // active, pending (no certificate yet) or inactive
	ActiveVersion int       `json:"active_version"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	Versions      []Version `json:"versions"`
}

// Version is one identity version's public view.
type Version struct {
	Version           int            `json:"version"`
	Status            string         `json:"status"`
	Source            string         `json:"source"` // imported or generated
	KeyType           string         `json:"key_type"`
	KeyStore          string         `json:"key_store"`         // sealed or pkcs11
	KeyRef            *KeyRef        `json:"key_ref,omitempty"` // where a pkcs11 key is
	Serial            string         `json:"serial"`
	Subject           string         `json:"subject"`
	Issuer            string         `json:"issuer"`
	FingerprintSHA256 string         `json:"fingerprint_sha256"`
	NotBefore         *time.Time     `json:"not_before"`
	NotAfter          *time.Time     `json:"not_after"`
	DNSNames          []string       `json:"dns_names,omitempty"`
	Chain             []pki.CertInfo `json:"chain,omitempty"`
	CSR               string         `json:"csr,omitempty"` // PEM, while pending
	CreatedAt         time.Time      `json:"created_at"`
	ActivatedAt       *time.Time     `json:"activated_at,omitempty"`
}

// Active returns the active version, if any.
func (i Identity) Active() (Version, bool) {
	for _, v := range i.Versions {
		if v.Status == StatusActive {
			return v, true
		}
	}
	return Version{}, false
}

func identityView(i store.Identity, versions []store.IdentityVersion) Identity {
	out := Identity{Name: i.Name, Description: i.Description, ActiveVersion: i.ActiveVersion, CreatedAt: i.CreatedAt, UpdatedAt: i.UpdatedAt, Versions: []Version{}}
	pending := false
	for _, v := range versions {
		view := Version{Version: v.Version, Status: v.Status, Source: v.Source, KeyType: v.KeyType, Serial: v.Serial, Subject: v.Subject,
			Issuer: v.Issuer, FingerprintSHA256: v.Fingerprint, NotBefore: v.NotBefore, NotAfter: v.NotAfter, CreatedAt: v.CreatedAt, ActivatedAt: v.ActivatedAt}
		view.KeyStore = KeyStoreSealed
		if v.KeyRef != "" {
			view.KeyStore, view.KeyRef = KeyStorePKCS11, keyRefView(v.KeyRef)
		}
		if v.Status == StatusPending {
			pending = true
			view.CSR = v.CSRPEM
		}
		if v.CertPEM != "" {
			if certs, err := pki.ParseCertificates([]byte(v.CertPEM)); err == nil {
				view.DNSNames = certs[0].DNSNames
			}
		}
		if v.ChainPEM != "" {
			if chain, err := pki.ParseCertificates([]byte(v.ChainPEM)); err == nil {
				for _, c := range chain {
					view.Chain = append(view.Chain, pki.Info(c))
				}
			}
		}
		out.Versions = append(out.Versions, view)
	}
	switch {
	case i.ActiveVersion > 0:
		out.Status = StatusActive
	case pending:
		out.Status = StatusPending
	default:
		out.Status = "inactive"
	}
	return out
}

// Material is an identity's certificate, chain and private key, in one of
// three forms: separate PEM/DER files, a PKCS#12 file, or a certificate
// and the pkcs11: URI of its key in a token (KeyRef).
type Material struct {
	Cert []byte
	Key  []byte
	// KeyRef names the certificate's key in a PKCS#11 token, instead of
	// Key: pkcs11:token=T;object=LABEL?module-path=...&pin-source=file:...
	KeyRef      string
	KeyPassword []byte
	Chain       []byte
	PKCS12      []byte
	// PKCS12Password may be empty for a P12 without a password.
	PKCS12Password string
	// AllowExpired accepts a certificate outside its validity period.
	AllowExpired bool
}

type parsedMaterial struct {
	key crypto.Signer
	// keyRef is set when key lives in a token: its URI, without a PIN.
	keyRef string
	leaf   *x509.Certificate
	chain  []*x509.Certificate
}

// parseMaterial reads and checks an identity's material: the key matches
// the certificate, the certificate may authenticate a TLS client, it is
// within its validity period, and the chain leads to its issuer.
func (s *Service) parseMaterial(ctx context.Context, m Material) (parsedMaterial, error) {
	var p parsedMaterial
	switch {
	case m.KeyRef != "":
		if len(m.Key) > 0 || len(m.PKCS12) > 0 {
			return p, invalid("key_ref", "invalid_input", "give either a key or a key reference, not both", "drop --key/--pkcs12, or drop --key-ref")
		}
		if len(m.Cert) == 0 {
			return p, invalid("cert", "required", "no certificate was given", "pass the certificate of the token's key with --cert FILE")
		}
		certs, err := pki.ParseCertificates(m.Cert)
		if err != nil {
			return p, fieldError("cert", err)
		}
		signer, err := s.findTokenKey(ctx, m.KeyRef)
		if err != nil {
			return p, err
		}
		p = parsedMaterial{key: signer, keyRef: signer.URI().KeyRef(), leaf: certs[0], chain: certs[1:]}
	case len(m.PKCS12) > 0:
		if len(m.Cert) > 0 || len(m.Key) > 0 {
			return p, invalid("pkcs12", "invalid_input", "give either a PKCS#12 file or a certificate and key, not both", "drop --cert/--key, or drop --pkcs12")
		}
		key, leaf, chain, err := pki.ParsePKCS12(m.PKCS12, m.PKCS12Password)
		if err != nil {
			return p, fieldError("pkcs12", err)
		}
		p = parsedMaterial{key: key, leaf: leaf, chain: chain}
	case len(m.Cert) == 0:
		return p, invalid("cert", "required", "no certificate was given", "pass --cert FILE and --key FILE, or --pkcs12 FILE")
	case len(m.Key) == 0:
		return p, invalid("key", "required", "no private key was given", "pass the certificate's private key with --key FILE")
	default:
		certs, err := pki.ParseCertificates(m.Cert)
		if err != nil {
			return p, fieldError("cert", err)
		}
		key, err := pki.ParsePrivateKey(m.Key, m.KeyPassword)
		if err != nil {
			return p, fieldError("key", err)
		}
		p = parsedMaterial{key: key, leaf: certs[0], chain: certs[1:]}
	}
	if len(m.Chain) > 0 {
		chain, err := pki.ParseCertificates(m.Chain)
		if err != nil {
			return p, fieldError("chain", err)
		}
		p.chain = append(p.chain, chain...)
	}
	if err := pki.KeyMatchesCertificate(p.key, p.leaf); err != nil {
		return p, fieldError("key", err)
	}
	if err := s.checkCertificate(ctx, p.leaf, p.chain, m.AllowExpired); err != nil {
		return p, err
	}
	return p, nil
}

// checkCertificate applies the client-certificate checks to leaf and chain.
func (s *Service) checkCertificate(ctx context.Context, leaf *x509.Certificate, chain []*x509.Certificate, allowExpired bool) error {
	if err := pki.CheckClientAuth(leaf); err != nil {
		return fieldError("cert", err)
	}
	if !allowExpired {
		if err := pki.CheckValidity(leaf, s.clock.Now()); err != nil {
			return fieldError("cert", addHint(err, "or pass --allow-expired to import it anyway"))
		}
	}
	if err := pki.CheckChain(leaf, chain); err != nil {
		return fieldError("chain", err)
	}
	if s.cfg.FIPS {
		if err := pki.CheckFIPSKey(leaf.PublicKey); err != nil {
			return fieldError("key", err)
		}
		for _, c := range append([]*x509.Certificate{leaf}, chain...) {
			if err := pki.CheckFIPSCertificate(c); err != nil {
				return fieldError("cert", err)
			}
		}
	}
	return s.checkIdentityRules(ctx, leaf)
}

// aad binds a sealed key to its row.
func aad(identityID string, version int) []byte { return store.IdentityKeyAAD(identityID, version) }

func (s *Service) sealKey(identityID string, version int, key crypto.Signer) ([]byte, string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, "", fmt.Errorf("truststore: encode private key: %w", err)
	}
	defer clear(der)
	kr := s.keyring.Load()
	blob, err := kr.Seal(der, aad(identityID, version))
	if err != nil {
		return nil, "", fmt.Errorf("truststore: seal private key: %w", err)
	}
	return blob, kr.CurrentID(), nil
}

// versionRow builds a stored version from checked material.
func (s *Service) versionRow(identityID string, version int, status, source string, p parsedMaterial) (store.IdentityVersion, error) {
	row := s.certRow(identityID, version, status, source, p)
	if p.keyRef != "" {
		// The key stays in its token: nothing is sealed.
		row.SealedKey, row.KEKID, row.KeyRef = []byte{}, "", p.keyRef
		return row, nil
	}
	sealed, kekID, err := s.sealKey(identityID, version, p.key)
	if err != nil {
		return store.IdentityVersion{}, err
	}
	row.SealedKey, row.KEKID = sealed, kekID
	return row, nil
}

// certRow fills a stored version's certificate fields from checked
// material; the caller supplies the sealed key.
func (s *Service) certRow(identityID string, version int, status, source string, p parsedMaterial) store.IdentityVersion {
	info := pki.Info(p.leaf)
	nb, na := info.NotBefore, info.NotAfter
	row := store.IdentityVersion{
		IdentityID: identityID, Version: version, Status: status, Source: source, KeyType: pki.KeyType(p.key.Public()),
		CertPEM: string(pki.EncodeCertificatesPEM(p.leaf)),
		Serial:  info.Serial, Subject: info.Subject, Issuer: info.Issuer, Fingerprint: info.FingerprintSHA256,
		NotBefore: &nb, NotAfter: &na, CreatedAt: s.now(),
	}
	if len(p.chain) > 0 {
		row.ChainPEM = string(pki.EncodeCertificatesPEM(p.chain...))
	}
	if status == StatusActive {
		at := row.CreatedAt
		row.ActivatedAt = &at
	}
	return row
}

func certDetails(v store.IdentityVersion) map[string]any {
	d := map[string]any{"version": v.Version, "key_type": v.KeyType, "status": v.Status, "key_store": KeyStoreSealed}
	if v.KeyRef != "" {
		d["key_store"], d["key_ref"] = KeyStorePKCS11, v.KeyRef
	}
	if v.Fingerprint != "" {
		d["fingerprint_sha256"] = v.Fingerprint
		d["serial"] = v.Serial
		d["subject"] = v.Subject
		d["issuer"] = v.Issuer
		d["not_after"] = v.NotAfter.Format(time.RFC3339)
	}
	return d
}

// ImportRequest imports an identity from existing material.
type ImportRequest struct {
	Name        string
	Description string
	Material
}

// Import creates an identity whose first version, active at once, is the
// given certificate and key.
func (s *Service) Import(ctx context.Context, actor audit.Actor, req ImportRequest) (Identity, error) {
	if err := checkName("name", req.Name); err != nil {
		return Identity{}, err
	}
	p, err := s.parseMaterial(ctx, req.Material)
	if err != nil {
		return Identity{}, err
	}
	id, err := newID("id_")
	if err != nil {
		return Identity{}, err
	}
	row, err := s.versionRow(id, 1, StatusActive, "imported", p)
	if err != nil {
		return Identity{}, err
	}
	ident := store.Identity{ID: id, Name: req.Name, Description: strings.TrimSpace(req.Description), ActiveVersion: 1, CreatedAt: row.CreatedAt, UpdatedAt: row.CreatedAt, Revision: 1}
	err = s.store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.InsertIdentity(ctx, ident); err != nil {
			return identityConflict(err, req.Name)
		}
		if err := tx.InsertIdentityVersion(ctx, row); err != nil {
			return err
		}
		_, err := s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "identity.import", Target: "identity/" + req.Name, Details: certDetails(row)})
		return err
	})
	if err != nil {
		return Identity{}, err
	}
	s.invalidate(req.Name)
	return identityView(ident, []store.IdentityVersion{row}), nil
}

func identityConflict(err error, name string) error {
	if errors.Is(err, store.ErrConflict) {
		return &errs.Error{Kind: errs.Conflict, Code: "already_exists", Message: fmt.Sprintf("an identity named %q already exists", name), Hint: "choose another name, or add a version to it with `trustflow identity rotate " + name + "`", Op: "truststore"}
	}
	return err
}

// GenerateSpec describes a key to generate and the CSR to request its
// certificate with.
type GenerateSpec struct {
	Subject  string
	DNSNames []string
	KeyType  string // defaults to ecdsa-p256
	// KeyStore is where the key is generated: "" or "sealed" inside
	// trustflow (sealed in the database), or a pkcs11: URI naming a token
	// (and a base label, object=, defaulting to trustflow-NAME), whose PIN
	// comes from a pin-source. Version 1's key is labelled with the base
	// label, version N's with BASE-vN. Rotating without a KeyStore keeps
	// the newest version's: a token-held identity rotates in its token.
	KeyStore string
}

// checkSpec checks the subject of a key to generate.
func (s *Service) checkSpec(spec GenerateSpec) (pkix.Name, error) {
	if strings.TrimSpace(spec.Subject) == "" {
		return pkix.Name{}, invalid("subject", "required", "no subject was given", `pass --subject "CN=trustflow-prod,O=Example Agency"`)
	}
	subject, err := pki.ParseSubject(spec.Subject)
	if err != nil {
		return pkix.Name{}, fieldError("subject", err)
	}
	return subject, nil
}

func (s *Service) generate(spec GenerateSpec) (crypto.Signer, []byte, string, error) {
	subject, err := s.checkSpec(spec)
	if err != nil {
		return nil, nil, "", err
	}
	keyType := spec.KeyType
	if keyType == "" {
		keyType = "ecdsa-p256"
	}
	key, err := pki.GenerateKey(keyType)
	if err != nil {
		return nil, nil, "", fieldError("key_type", err)
	}
	if s.cfg.FIPS {
		if err := pki.CheckFIPSKey(key.Public()); err != nil {
			return nil, nil, "", fieldError("key_type", err)
		}
	}
	if e := keyFault(key.Public(), s.currentPolicy().Document().Identities, "key type "+keyType+" is"); e != nil {
		return nil, nil, "", e.WithField("key_type")
	}
	csr, err := pki.CreateCSR(key, subject, spec.DNSNames)
	if err != nil {
		return nil, nil, "", fieldError("dns", err)
	}
	return key, csr, pki.KeyType(key.Public()), nil
}

// CreateRequest creates an identity whose key is generated inside
// trustflow; its certificate is installed later.
type CreateRequest struct {
	Name        string
	Description string
	GenerateSpec
}

// Create generates a key and a CSR for a new identity. The identity stays
// pending until InstallCertificate.
func (s *Service) Create(ctx context.Context, actor audit.Actor, req CreateRequest) (Identity, string, error) {
	if err := checkName("name", req.Name); err != nil {
		return Identity{}, "", err
	}
	id, err := newID("id_")
	if err != nil {
		return Identity{}, "", err
	}
	u, inToken, err := tokenKeyStore(req.GenerateSpec, req.Name, nil)
	if err != nil {
		return Identity{}, "", err
	}
	var csr []byte
	var keyType string
	var sealed []byte
	var kekID, keyRef string
	var generated *hsm.Signer
	if inToken {
		if _, err := s.store.IdentityByName(ctx, req.Name); err == nil {
			return Identity{}, "", identityConflict(store.ErrConflict, req.Name)
		}
		generated, csr, keyType, err = s.generateInToken(ctx, u, 1, req.GenerateSpec)
		if err != nil {
			return Identity{}, "", err
		}
		sealed, keyRef = []byte{}, generated.URI().KeyRef()
	} else {
		var key crypto.Signer
		key, csr, keyType, err = s.generate(req.GenerateSpec)
		if err != nil {
			return Identity{}, "", err
		}
		sealed, kekID, err = s.sealKey(id, 1, key)
		if err != nil {
			return Identity{}, "", err
		}
	}
	now := s.now()
	ident := store.Identity{ID: id, Name: req.Name, Description: strings.TrimSpace(req.Description), CreatedAt: now, UpdatedAt: now, Revision: 1}
	row := store.IdentityVersion{IdentityID: id, Version: 1, Status: StatusPending, Source: "generated", KeyType: keyType,
		SealedKey: sealed, KEKID: kekID, KeyRef: keyRef, CSRPEM: string(csr), ActivateOnInstall: true, CreatedAt: now}
	err = s.store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.InsertIdentity(ctx, ident); err != nil {
			return identityConflict(err, req.Name)
		}
		if err := tx.InsertIdentityVersion(ctx, row); err != nil {
			return err
		}
		d := certDetails(row)
		d["subject_requested"] = req.Subject
		_, err := s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "identity.create", Target: "identity/" + req.Name, Details: d})
		return err
	})
	if err != nil {
		return Identity{}, "", errors.Join(err, destroy(generated))
	}
	return identityView(ident, []store.IdentityVersion{row}), string(csr), nil
}

// lookup loads an identity and its versions inside tx.
func lookup(ctx context.Context, tx *store.Tx, name string) (store.Identity, []store.IdentityVersion, error) {
	ident, err := tx.IdentityByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return ident, nil, notFound("identity", name)
	} else if err != nil {
		return ident, nil, err
	}
	versions, err := tx.IdentityVersions(ctx, ident.ID)
	return ident, versions, err
}

// InstallRequest installs the signed certificate for a pending version.
type InstallRequest struct {
	Name         string
	Cert         []byte
	Chain        []byte
	AllowExpired bool
}

// InstallCertificate installs a certificate for the identity's pending
// version (generated by Create or Rotate). It must match the pending key.
// The version becomes active unless it was staged.
func (s *Service) InstallCertificate(ctx context.Context, actor audit.Actor, req InstallRequest) (Identity, error) {
	if len(req.Cert) == 0 {
		return Identity{}, invalid("cert", "required", "no certificate was given", "pass the certificate your CA signed from the CSR with --cert FILE")
	}
	leaf, chain, err := leafAndChain("cert", req.Cert, "chain", req.Chain)
	if err != nil {
		return Identity{}, err
	}
	if err := s.checkCertificate(ctx, leaf, chain, req.AllowExpired); err != nil {
		return Identity{}, err
	}
	var out Identity
	err = s.store.InTx(ctx, func(tx *store.Tx) error {
		ident, versions, err := lookup(ctx, tx, req.Name)
		if err != nil {
			return err
		}
		var pending *store.IdentityVersion
		for i := range versions {
			if versions[i].Status == StatusPending {
				pending = &versions[i]
			}
		}
		if pending == nil {
			return &errs.Error{Kind: errs.Conflict, Code: "no_pending_version", Message: fmt.Sprintf("identity %q has no version waiting for a certificate", req.Name), Hint: "generate a key and CSR first with `trustflow identity rotate " + req.Name + " --generate`", Op: "truststore"}
		}
		key, err := s.openKey(ctx, *pending)
		if err != nil {
			return err
		}
		if err := pki.KeyMatchesCertificate(key, leaf); err != nil {
			return fieldError("cert", addHint(err, fmt.Sprintf("install the certificate issued for the CSR of version %d", pending.Version)))
		}
		p := parsedMaterial{key: key, leaf: leaf, chain: chain}
		// The pending key stays sealed (or in its token) as it is: only the
		// certificate is new.
		row := s.certRow(ident.ID, pending.Version, StatusStaged, pending.Source, p)
		row.SealedKey, row.KEKID, row.KeyRef = pending.SealedKey, pending.KEKID, pending.KeyRef
		if err := tx.InstallCertificate(ctx, row); err != nil {
			return err
		}
		activate := pending.ActivateOnInstall
		if activate {
			if err := tx.ActivateVersion(ctx, ident.ID, row.Version, s.now()); err != nil {
				return err
			}
			row.Status = StatusActive
		} else if err := tx.TouchIdentity(ctx, ident.ID, ident.ActiveVersion, s.now()); err != nil {
			return err
		}
		d := certDetails(row)
		d["activated"] = activate
		if _, err := s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "identity.install_cert", Target: "identity/" + req.Name, Details: d}); err != nil {
			return err
		}
		if activate {
			if err := s.emit(ctx, tx, "identity.rotated", rotated(req.Name, row, ident.ActiveVersion)); err != nil {
				return err
			}
		}
		out, err = s.viewTx(ctx, tx, req.Name)
		return err
	})
	if err != nil {
		return Identity{}, err
	}
	s.invalidate(req.Name)
	return out, nil
}

// RotateRequest adds a version to an identity: either imported Material or
// a Generate spec (then the certificate is installed later).
type RotateRequest struct {
	Name     string
	Material Material
	Generate *GenerateSpec
	// Stage keeps the new version inactive until Activate.
	Stage bool
}

// RotateResult is a rotation's outcome; CSR is set for generated versions.
type RotateResult struct {
	Identity Identity `json:"identity"`
	Version  int      `json:"version"`
	CSR      string   `json:"csr,omitempty"`
}

// Rotate adds a new version. Imported material is activated at once unless
// staged; the switch is atomic, and the next handshake presents it.
func (s *Service) Rotate(ctx context.Context, actor audit.Actor, req RotateRequest) (RotateResult, error) {
	var p parsedMaterial
	var csr []byte
	var keyType string
	var err error
	// A key generated in a token is made inside the transaction, where the
	// version number (and so its label) is known.
	var generated *hsm.Signer
	switch {
	case req.Generate != nil && req.Generate.KeyStore == "":
		// Decided in the transaction: the identity's newest version says
		// whether its keys live in a token.
	case req.Generate != nil && req.Generate.KeyStore != KeyStoreSealed:
		if _, _, err := tokenKeyStore(*req.Generate, req.Name, nil); err != nil {
			return RotateResult{}, err
		}
	case req.Generate != nil:
		var key crypto.Signer
		key, csr, keyType, err = s.generate(*req.Generate)
		p.key = key
	default:
		p, err = s.parseMaterial(ctx, req.Material)
	}
	if err != nil {
		return RotateResult{}, err
	}
	var out RotateResult
	err = s.store.InTx(ctx, func(tx *store.Tx) error {
		ident, versions, err := lookup(ctx, tx, req.Name)
		if err != nil {
			return err
		}
		for _, v := range versions {
			if req.Generate != nil && v.Status == StatusPending {
				return &errs.Error{Kind: errs.Conflict, Code: "pending_version", Message: fmt.Sprintf("identity %q already has version %d waiting for its certificate", req.Name, v.Version), Hint: "install its certificate with `trustflow identity install-cert " + req.Name + " --cert F` first", Op: "truststore"}
			}
			if req.Generate == nil && v.Fingerprint != "" && v.Fingerprint == pki.FingerprintSHA256(p.leaf) {
				return &errs.Error{Kind: errs.Conflict, Code: "already_present", Message: fmt.Sprintf("this certificate is already version %d of %q", v.Version, req.Name), Hint: "to make it active again use `trustflow identity activate " + req.Name + fmt.Sprintf(" --version %d`", v.Version), Op: "truststore"}
			}
		}
		next, err := tx.NextIdentityVersion(ctx, ident.ID)
		if err != nil {
			return err
		}
		var row store.IdentityVersion
		if req.Generate != nil && p.key == nil {
			u, inToken, err := tokenKeyStore(*req.Generate, req.Name, versions)
			if err != nil {
				return err
			}
			if inToken {
				generated, csr, keyType, err = s.generateInToken(ctx, u, next, *req.Generate)
			} else {
				p.key, csr, keyType, err = s.generate(*req.Generate)
			}
			if err != nil {
				return err
			}
		}
		if generated != nil {
			row = store.IdentityVersion{IdentityID: ident.ID, Version: next, Status: StatusPending, Source: "generated", KeyType: keyType,
				SealedKey: []byte{}, KeyRef: generated.URI().KeyRef(), CSRPEM: string(csr), ActivateOnInstall: !req.Stage, CreatedAt: s.now()}
		} else if req.Generate != nil {
			sealed, kekID, err := s.sealKey(ident.ID, next, p.key)
			if err != nil {
				return err
			}
			row = store.IdentityVersion{IdentityID: ident.ID, Version: next, Status: StatusPending, Source: "generated", KeyType: keyType,
				SealedKey: sealed, KEKID: kekID, CSRPEM: string(csr), ActivateOnInstall: !req.Stage, CreatedAt: s.now()}
		} else {
			row, err = s.versionRow(ident.ID, next, StatusStaged, "imported", p)
			if err != nil {
				return err
			}
		}
		if err := tx.InsertIdentityVersion(ctx, row); err != nil {
			return err
		}
		active := ident.ActiveVersion
		if req.Generate == nil && !req.Stage {
			if err := tx.ActivateVersion(ctx, ident.ID, next, s.now()); err != nil {
				return err
			}
			row.Status = StatusActive
		} else if err := tx.TouchIdentity(ctx, ident.ID, active, s.now()); err != nil {
			return err
		}
		d := certDetails(row)
		d["previous_active_version"] = active
		if _, err := s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "identity.rotate", Target: "identity/" + req.Name, Details: d}); err != nil {
			return err
		}
		if row.Status == StatusActive {
			if err := s.emit(ctx, tx, "identity.rotated", rotated(req.Name, row, active)); err != nil {
				return err
			}
		}
		out.Version, out.CSR = next, string(csr)
		out.Identity, err = s.viewTx(ctx, tx, req.Name)
		return err
	})
	if err != nil {
		return RotateResult{}, errors.Join(err, destroy(generated))
	}
	s.invalidate(req.Name)
	return out, nil
}

// Activate makes version the active one: a staged version goes live, or a
// retired one comes back (rollback).
func (s *Service) Activate(ctx context.Context, actor audit.Actor, name string, version int) (Identity, error) {
	var out Identity
	err := s.store.InTx(ctx, func(tx *store.Tx) error {
		ident, versions, err := lookup(ctx, tx, name)
		if err != nil {
			return err
		}
		var target *store.IdentityVersion
		for i := range versions {
			if versions[i].Version == version {
				target = &versions[i]
			}
		}
		switch {
		case target == nil:
			return notFound("identity version", fmt.Sprintf("%s v%d", name, version))
		case target.Status == StatusActive:
			return &errs.Error{Kind: errs.Conflict, Code: "already_active", Message: fmt.Sprintf("version %d of %q is already active", version, name), Hint: "nothing to do", Op: "truststore"}
		case target.Status == StatusPending:
			return &errs.Error{Kind: errs.Conflict, Code: "pending_version", Message: fmt.Sprintf("version %d of %q has no certificate yet", version, name), Hint: "install its certificate with `trustflow identity install-cert " + name + " --cert F`", Op: "truststore"}
		}
		if target.NotAfter != nil && !s.clock.Now().Before(*target.NotAfter) {
			return &errs.Error{Kind: errs.Conflict, Code: "expired", Message: fmt.Sprintf("version %d of %q expired on %s", version, name, target.NotAfter.Format(time.RFC3339)), Hint: "activate a version that is still valid, or rotate in a new certificate", Op: "truststore"}
		}
		if err := tx.ActivateVersion(ctx, ident.ID, version, s.now()); err != nil {
			return err
		}
		d := certDetails(*target)
		d["previous_active_version"] = ident.ActiveVersion
		d["status"] = StatusActive
		if _, err := s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "identity.activate", Target: "identity/" + name, Details: d}); err != nil {
			return err
		}
		if err := s.emit(ctx, tx, "identity.rotated", rotated(name, *target, ident.ActiveVersion)); err != nil {
			return err
		}
		out, err = s.viewTx(ctx, tx, name)
		return err
	})
	if err != nil {
		return Identity{}, err
	}
	s.invalidate(name)
	return out, nil
}

// Prune deletes an identity's retired versions and their sealed keys.
func (s *Service) Prune(ctx context.Context, actor audit.Actor, name string) (Identity, []int, error) {
	var out Identity
	var pruned []int
	err := s.store.InTx(ctx, func(tx *store.Tx) error {
		ident, _, err := lookup(ctx, tx, name)
		if err != nil {
			return err
		}
		pruned, err = tx.DeleteRetiredVersions(ctx, ident.ID)
		if err != nil {
			return err
		}
		if len(pruned) > 0 {
			if err := tx.TouchIdentity(ctx, ident.ID, ident.ActiveVersion, s.now()); err != nil {
				return err
			}
			if _, err := s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "identity.prune", Target: "identity/" + name,
				Details: map[string]any{"versions": pruned}}); err != nil {
				return err
			}
		}
		out, err = s.viewTx(ctx, tx, name)
		return err
	})
	return out, pruned, err
}

// Remove deletes an identity and every version, unless something uses it.
func (s *Service) Remove(ctx context.Context, actor audit.Actor, name string) error {
	err := s.store.InTx(ctx, func(tx *store.Tx) error {
		ident, versions, err := lookup(ctx, tx, name)
		if err != nil {
			return err
		}
		users, err := s.cfg.InUse(ctx, tx, "identity", name)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return &errs.Error{Kind: errs.Conflict, Code: "in_use", Message: fmt.Sprintf("identity %q is still used by connectors: %s", name, strings.Join(users, ", ")), Hint: "point those connectors at another identity first (`trustflow connector update NAME --identity OTHER`)", UsedBy: users, Op: "truststore"}
		}
		if err := tx.DeleteIdentity(ctx, ident.ID); err != nil {
			return err
		}
		var fps []string
		for _, v := range versions {
			if v.Fingerprint != "" {
				fps = append(fps, v.Fingerprint)
			}
		}
		_, err = s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "identity.remove", Target: "identity/" + name,
			Details: map[string]any{"versions": len(versions), "fingerprints_sha256": fps}})
		return err
	})
	if err == nil {
		s.invalidate(name)
	}
	return err
}

func (s *Service) viewTx(ctx context.Context, tx *store.Tx, name string) (Identity, error) {
	ident, versions, err := lookup(ctx, tx, name)
	if err != nil {
		return Identity{}, err
	}
	return identityView(ident, versions), nil
}

// Get returns one identity with every version.
func (s *Service) Get(ctx context.Context, name string) (Identity, error) {
	ident, err := s.store.IdentityByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return Identity{}, notFound("identity", name)
	} else if err != nil {
		return Identity{}, err
	}
	versions, err := s.store.IdentityVersions(ctx, ident.ID)
	if err != nil {
		return Identity{}, err
	}
	return identityView(ident, versions), nil
}

// List returns every identity; with expiringWithin > 0, only those whose
// active certificate expires within that duration.
func (s *Service) List(ctx context.Context, expiringWithin time.Duration) ([]Identity, error) {
	rows, err := s.store.ListIdentities(ctx)
	if err != nil {
		return nil, err
	}
	deadline := s.clock.Now().Add(expiringWithin)
	out := []Identity{}
	for _, r := range rows {
		versions, err := s.store.IdentityVersions(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		v := identityView(r, versions)
		if expiringWithin > 0 {
			a, ok := v.Active()
			if !ok || a.NotAfter == nil || a.NotAfter.After(deadline) {
				continue
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// openKey unseals a version's private key, or for a key kept in a token
// returns the token's signer (a *TokenKeyError when the token cannot be
// used). A blob that fails authentication is reported (and audited by the
// caller's transaction failing) as a clear error, never a panic.
func (s *Service) openKey(ctx context.Context, v store.IdentityVersion) (crypto.Signer, error) {
	if v.KeyRef != "" {
		return s.openTokenKey(ctx, v)
	}
	der, err := s.keyring.Load().Open(v.SealedKey, aad(v.IdentityID, v.Version))
	if err != nil {
		return nil, keyUnavailable(v.IdentityID, v.Version, err)
	}
	defer clear(der)
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, keyUnavailable(v.IdentityID, v.Version, err)
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, keyUnavailable(v.IdentityID, v.Version, fmt.Errorf("key type %T cannot sign", parsed))
	}
	return key, nil
}

// CodeKeyUnavailable is the code of a sealed key that could not be opened:
// the blob was altered, or the key-encryption key in use is not the one that
// sealed it.
const CodeKeyUnavailable = "key_unavailable"

// keyUnavailable is the error of identity version id/vN whose sealed key
// does not open. It is Internal (the server, not the caller, must act) but
// its message is safe to show.
func keyUnavailable(identityID string, version int, cause error) *errs.Error {
	return &errs.Error{Kind: errs.Internal, Code: CodeKeyUnavailable,
		Message: "the identity's private key cannot be unsealed: the stored key was altered, or this server has a different key-encryption key",
		Hint:    "check that --kek is the key this database was sealed with; restore the identity from a backup or rotate in a new one",
		Op:      fmt.Sprintf("truststore: identity version %s/v%d", identityID, version), Err: cause}
}

// rotated is the payload of identity.rotated.
func rotated(name string, v store.IdentityVersion, previous int) map[string]any {
	p := map[string]any{"identity": name, "version": int64(v.Version), "previous_version": int64(previous),
		"serial": v.Serial, "fingerprint_sha256": v.Fingerprint}
	if v.NotAfter != nil {
		p["not_after"] = v.NotAfter.UTC().Format(time.RFC3339)
	}
	return p
}
