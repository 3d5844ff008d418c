package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// CA is a stored trust anchor bundle.
type CA struct {
	ID          string
	Name        string
	Description string
	PEM         string
	AllowLeaf   bool
	CreatedAt   time.Time
	UpdatedAt   time.Time
	Revision    int64
}

const caColumns = "id, name, description, pem, allow_leaf, created_at, updated_at, revision"

func scanCA(row interface{ Scan(...any) error }) (CA, error) {
	var c CA
	var created, updated int64
	if err := row.Scan(&c.ID, &c.Name, &c.Description, &c.PEM, &c.AllowLeaf, &created, &updated, &c.Revision); err != nil {
		return CA{}, err
	}
	c.CreatedAt, c.UpdatedAt = fromMicros(created), fromMicros(updated)
	return c, nil
}

// InsertCA stores a new CA bundle; a taken name is ErrConflict.
func (t *Tx) InsertCA(ctx context.Context, c CA) error {
	_, err := t.tx.ExecContext(ctx, "INSERT INTO cas ("+caColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
		c.ID, c.Name, c.Description, c.PEM, c.AllowLeaf, micros(c.CreatedAt), micros(c.UpdatedAt), c.Revision)
	if err != nil {
		return fmt.Errorf("store: insert ca %q: %w", c.Name, mapErr(err))
	}
	return nil
}

// UpdateCA replaces a bundle in place and bumps its revision.
func (t *Tx) UpdateCA(ctx context.Context, c CA) error {
	res, err := t.tx.ExecContext(ctx, "UPDATE cas SET description = $1, pem = $2, allow_leaf = $3, updated_at = $4, revision = revision + 1 WHERE id = $5",
		c.Description, c.PEM, c.AllowLeaf, micros(c.UpdatedAt), c.ID)
	if err != nil {
		return fmt.Errorf("store: update ca %q: %w", c.Name, mapErr(err))
	}
	return expectOne(res, "update ca "+c.Name)
}

// DeleteCA removes a CA bundle by id.
func (t *Tx) DeleteCA(ctx context.Context, id string) error {
	res, err := t.tx.ExecContext(ctx, "DELETE FROM cas WHERE id = $1", id)
	if err != nil {
		return fmt.Errorf("store: delete ca %s: %w", id, mapErr(err))
	}
	return expectOne(res, "delete ca "+id)
}

// CAByName reads one CA inside the transaction.
func (t *Tx) CAByName(ctx context.Context, name string) (CA, error) {
	return caByName(ctx, t.tx, name)
}

// CAByName reads one CA.
func (s *Store) CAByName(ctx context.Context, name string) (CA, error) {
	return caByName(ctx, s.read, name)
}

func caByName(ctx context.Context, q querier, name string) (CA, error) {
	c, err := scanCA(q.QueryRowContext(ctx, "SELECT "+caColumns+" FROM cas WHERE name = $1", name))
	if err != nil {
		return CA{}, fmt.Errorf("store: get ca %q: %w", name, mapErr(err))
	}
	return c, nil
}

// ListCAs returns every CA, by name.
func (s *Store) ListCAs(ctx context.Context) ([]CA, error) {
	rows, err := s.read.QueryContext(ctx, "SELECT "+caColumns+" FROM cas ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("store: list cas: %w", err)
	}
	defer rows.Close()
	var out []CA
	for rows.Next() {
		c, err := scanCA(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list cas: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list cas: %w", err)
	}
	return out, nil
}

// Identity is a stored client identity.
type Identity struct {
	ID            string
	Name          string
	Description   string
	ActiveVersion int // 0: none active
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Revision      int64
}

const identityColumns = "id, name, description, active_version, created_at, updated_at, revision"

func scanIdentity(row interface{ Scan(...any) error }) (Identity, error) {
	var i Identity
	var active sql.NullInt64
	var created, updated int64
	if err := row.Scan(&i.ID, &i.Name, &i.Description, &active, &created, &updated, &i.Revision); err != nil {
		return Identity{}, err
	}
	i.ActiveVersion = int(active.Int64)
	i.CreatedAt, i.UpdatedAt = fromMicros(created), fromMicros(updated)
	return i, nil
}

// IdentityVersion is one version of an identity. SealedKey is the private
// key sealed by the seal package; the store never sees it in clear. A
// version whose key lives in a PKCS#11 token has KeyRef (the key's pkcs11:
// URI, without any PIN) instead, an empty SealedKey and KEKID "".
type IdentityVersion struct {
	IdentityID  string
	Version     int
	Status      string
	Source      string
	KeyType     string
	SealedKey   []byte
	KEKID       string
	KeyRef      string
	CSRPEM      string
	CertPEM     string
	ChainPEM    string
	Serial      string
	Subject     string
	Issuer      string
	Fingerprint string
	NotBefore   *time.Time
	NotAfter    *time.Time
	// ActivateOnInstall makes a pending version active when its
	// certificate is installed (false: it is staged).
	ActivateOnInstall bool
	CreatedAt         time.Time
	ActivatedAt       *time.Time
}

const versionColumns = "identity_id, version, status, source, key_type, sealed_key, kek_id, key_ref, csr_pem, cert_pem, chain_pem, serial, subject, issuer, fingerprint, not_before, not_after, activate_on_install, created_at, activated_at"

func scanVersion(row interface{ Scan(...any) error }) (IdentityVersion, error) {
	var v IdentityVersion
	var nb, na, act sql.NullInt64
	var created int64
	if err := row.Scan(&v.IdentityID, &v.Version, &v.Status, &v.Source, &v.KeyType, &v.SealedKey, &v.KEKID, &v.KeyRef, &v.CSRPEM, &v.CertPEM, &v.ChainPEM,
		&v.Serial, &v.Subject, &v.Issuer, &v.Fingerprint, &nb, &na, &v.ActivateOnInstall, &created, &act); err != nil {
		return IdentityVersion{}, err
	}
	v.NotBefore, v.NotAfter, v.ActivatedAt = fromNullMicros(nb), fromNullMicros(na), fromNullMicros(act)
	v.CreatedAt = fromMicros(created)
	return v, nil
}

// InsertIdentity stores a new identity; a taken name is ErrConflict.
func (t *Tx) InsertIdentity(ctx context.Context, i Identity) error {
	var active sql.NullInt64
	if i.ActiveVersion > 0 {
		active = sql.NullInt64{Int64: int64(i.ActiveVersion), Valid: true}
	}
	_, err := t.tx.ExecContext(ctx, "INSERT INTO identities ("+identityColumns+", last_version) VALUES ($1, $2, $3, $4, $5, $6, $7, 1)",
		i.ID, i.Name, i.Description, active, micros(i.CreatedAt), micros(i.UpdatedAt), i.Revision)
	if err != nil {
		return fmt.Errorf("store: insert identity %q: %w", i.Name, mapErr(err))
	}
	return nil
}

// IdentityByName reads an identity inside the transaction, locking its row
// on PostgreSQL so that concurrent version changes queue.
func (t *Tx) IdentityByName(ctx context.Context, name string) (Identity, error) {
	q := "SELECT " + identityColumns + " FROM identities WHERE name = $1"
	if t.dialect == Postgres {
		q += " FOR UPDATE"
	}
	i, err := scanIdentity(t.tx.QueryRowContext(ctx, q, name))
	if err != nil {
		return Identity{}, fmt.Errorf("store: get identity %q: %w", name, mapErr(err))
	}
	return i, nil
}

// NextIdentityVersion allocates the identity's next version number. Numbers
// are never reused, even after their versions are pruned, so an audit record
// naming a version always means one certificate.
func (t *Tx) NextIdentityVersion(ctx context.Context, identityID string) (int, error) {
	var v int
	if err := t.tx.QueryRowContext(ctx, "UPDATE identities SET last_version = last_version + 1 WHERE id = $1 RETURNING last_version", identityID).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: next version of identity %s: %w", identityID, mapErr(err))
	}
	return v, nil
}

// IdentityByName reads one identity.
func (s *Store) IdentityByName(ctx context.Context, name string) (Identity, error) {
	i, err := scanIdentity(s.read.QueryRowContext(ctx, "SELECT "+identityColumns+" FROM identities WHERE name = $1", name))
	if err != nil {
		return Identity{}, fmt.Errorf("store: get identity %q: %w", name, mapErr(err))
	}
	return i, nil
}

// IdentityRevision reads only an identity's revision: the cheap check the
// handshake path makes before trusting its cache.
func (s *Store) IdentityRevision(ctx context.Context, name string) (int64, error) {
	var rev int64
	if err := s.read.QueryRowContext(ctx, "SELECT revision FROM identities WHERE name = $1", name).Scan(&rev); err != nil {
		return 0, fmt.Errorf("store: identity %q revision: %w", name, mapErr(err))
	}
	return rev, nil
}

// ListIdentities returns every identity, by name.
func (s *Store) ListIdentities(ctx context.Context) ([]Identity, error) {
	rows, err := s.read.QueryContext(ctx, "SELECT "+identityColumns+" FROM identities ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("store: list identities: %w", err)
	}
	defer rows.Close()
	var out []Identity
	for rows.Next() {
		i, err := scanIdentity(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list identities: %w", err)
		}
		out = append(out, i)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list identities: %w", err)
	}
	return out, nil
}

// DeleteIdentity removes an identity and all its versions.
func (t *Tx) DeleteIdentity(ctx context.Context, id string) error {
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM identity_versions WHERE identity_id = $1", id); err != nil {
		return fmt.Errorf("store: delete identity %s versions: %w", id, mapErr(err))
	}
	res, err := t.tx.ExecContext(ctx, "DELETE FROM identities WHERE id = $1", id)
	if err != nil {
		return fmt.Errorf("store: delete identity %s: %w", id, mapErr(err))
	}
	return expectOne(res, "delete identity "+id)
}

// InsertIdentityVersion stores a new version.
func (t *Tx) InsertIdentityVersion(ctx context.Context, v IdentityVersion) error {
	_, err := t.tx.ExecContext(ctx, "INSERT INTO identity_versions ("+versionColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
		v.IdentityID, v.Version, v.Status, v.Source, v.KeyType, v.SealedKey, v.KEKID, v.KeyRef, v.CSRPEM, v.CertPEM, v.ChainPEM,
		v.Serial, v.Subject, v.Issuer, v.Fingerprint, nullMicros(v.NotBefore), nullMicros(v.NotAfter), v.ActivateOnInstall, micros(v.CreatedAt), nullMicros(v.ActivatedAt))
	if err != nil {
		return fmt.Errorf("store: insert identity version %s/%d: %w", v.IdentityID, v.Version, mapErr(err))
	}
	return nil
}

// InstallCertificate fills in a pending version's certificate and marks it
// staged; activation is separate.
func (t *Tx) InstallCertificate(ctx context.Context, v IdentityVersion) error {
	res, err := t.tx.ExecContext(ctx, `UPDATE identity_versions SET status = $1, cert_pem = $2, chain_pem = $3, serial = $4, subject = $5, issuer = $6,
		fingerprint = $7, not_before = $8, not_after = $9 WHERE identity_id = $10 AND version = $11 AND status = 'pending'`,
		v.Status, v.CertPEM, v.ChainPEM, v.Serial, v.Subject, v.Issuer, v.Fingerprint, nullMicros(v.NotBefore), nullMicros(v.NotAfter), v.IdentityID, v.Version)
	if err != nil {
		return fmt.Errorf("store: install certificate %s/%d: %w", v.IdentityID, v.Version, mapErr(err))
	}
	return expectOne(res, fmt.Sprintf("install certificate %s/%d", v.IdentityID, v.Version))
}

// ActivateVersion makes version the identity's only active version: the
// previous active one becomes retired. It bumps the identity's revision so
// every node's handshake cache notices.
func (t *Tx) ActivateVersion(ctx context.Context, identityID string, version int, at time.Time) error {
	if _, err := t.tx.ExecContext(ctx, "UPDATE identity_versions SET status = 'retired' WHERE identity_id = $1 AND status = 'active'", identityID); err != nil {
		return fmt.Errorf("store: retire active version of %s: %w", identityID, mapErr(err))
	}
	res, err := t.tx.ExecContext(ctx, "UPDATE identity_versions SET status = 'active', activated_at = $1 WHERE identity_id = $2 AND version = $3 AND status IN ('staged', 'retired')",
		micros(at), identityID, version)
	if err != nil {
		return fmt.Errorf("store: activate %s/%d: %w", identityID, version, mapErr(err))
	}
	if err := expectOne(res, fmt.Sprintf("activate %s/%d", identityID, version)); err != nil {
		return err
	}
	return t.TouchIdentity(ctx, identityID, version, at)
}

// TouchIdentity records a change to an identity: its active version and a
// new revision.
func (t *Tx) TouchIdentity(ctx context.Context, identityID string, activeVersion int, at time.Time) error {
	var active sql.NullInt64
	if activeVersion > 0 {
		active = sql.NullInt64{Int64: int64(activeVersion), Valid: true}
	}
	res, err := t.tx.ExecContext(ctx, "UPDATE identities SET active_version = $1, updated_at = $2, revision = revision + 1 WHERE id = $3",
		active, micros(at), identityID)
	if err != nil {
		return fmt.Errorf("store: update identity %s: %w", identityID, mapErr(err))
	}
	return expectOne(res, "update identity "+identityID)
}

// DeleteRetiredVersions removes an identity's retired versions and reports
// which versions were removed.
func (t *Tx) DeleteRetiredVersions(ctx context.Context, identityID string) ([]int, error) {
	rows, err := t.tx.QueryContext(ctx, "SELECT version FROM identity_versions WHERE identity_id = $1 AND status = 'retired' ORDER BY version", identityID)
	if err != nil {
		return nil, fmt.Errorf("store: prune %s: %w", identityID, err)
	}
	var versions []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: prune %s: %w", identityID, err)
		}
		versions = append(versions, v)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("store: prune %s: %w", identityID, err)
	}
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM identity_versions WHERE identity_id = $1 AND status = 'retired'", identityID); err != nil {
		return nil, fmt.Errorf("store: prune %s: %w", identityID, mapErr(err))
	}
	return versions, nil
}

// IdentityVersions lists an identity's versions inside the transaction.
func (t *Tx) IdentityVersions(ctx context.Context, identityID string) ([]IdentityVersion, error) {
	return identityVersions(ctx, t.tx, identityID)
}

// IdentityVersions lists an identity's versions, oldest first.
func (s *Store) IdentityVersions(ctx context.Context, identityID string) ([]IdentityVersion, error) {
	return identityVersions(ctx, s.read, identityID)
}

func identityVersions(ctx context.Context, q querier, identityID string) ([]IdentityVersion, error) {
	rows, err := q.QueryContext(ctx, "SELECT "+versionColumns+" FROM identity_versions WHERE identity_id = $1 ORDER BY version", identityID)
	if err != nil {
		return nil, fmt.Errorf("store: list versions of %s: %w", identityID, err)
	}
	defer rows.Close()
	var out []IdentityVersion
	for rows.Next() {
		v, err := scanVersion(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list versions of %s: %w", identityID, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list versions of %s: %w", identityID, err)
	}
	return out, nil
}

// ActiveIdentity reads an identity with its active version in one query:
// the handshake path's lookup.
func (s *Store) ActiveIdentity(ctx context.Context, name string) (Identity, IdentityVersion, error) {
	q := "SELECT i.id, i.name, i.description, i.active_version, i.created_at, i.updated_at, i.revision, " +
		"v.identity_id, v.version, v.status, v.source, v.key_type, v.sealed_key, v.kek_id, v.key_ref, v.csr_pem, v.cert_pem, v.chain_pem, v.serial, v.subject, v.issuer, v.fingerprint, v.not_before, v.not_after, v.activate_on_install, v.created_at, v.activated_at " +
		"FROM identities i JOIN identity_versions v ON v.identity_id = i.id AND v.version = i.active_version WHERE i.name = $1"
	row := s.read.QueryRowContext(ctx, q, name)
	var i Identity
	var v IdentityVersion
	var active sql.NullInt64
	var icreated, iupdated, vcreated int64
	var nb, na, act sql.NullInt64
	err := row.Scan(&i.ID, &i.Name, &i.Description, &active, &icreated, &iupdated, &i.Revision,
		&v.IdentityID, &v.Version, &v.Status, &v.Source, &v.KeyType, &v.SealedKey, &v.KEKID, &v.KeyRef, &v.CSRPEM, &v.CertPEM, &v.ChainPEM,
		&v.Serial, &v.Subject, &v.Issuer, &v.Fingerprint, &nb, &na, &v.ActivateOnInstall, &vcreated, &act)
	if err != nil {
		return Identity{}, IdentityVersion{}, fmt.Errorf("store: active version of identity %q: %w", name, mapErr(err))
	}
	i.ActiveVersion = int(active.Int64)
	i.CreatedAt, i.UpdatedAt = fromMicros(icreated), fromMicros(iupdated)
	v.NotBefore, v.NotAfter, v.ActivatedAt = fromNullMicros(nb), fromNullMicros(na), fromNullMicros(act)
	v.CreatedAt = fromMicros(vcreated)
	return i, v, nil
}

// SealedKey is one sealed private key, for re-wrapping under a new KEK.
type SealedKey struct {
	IdentityID string
	Version    int
	Sealed     []byte
	KEKID      string
}

// SealedKeys returns every sealed key inside the transaction; versions
// whose key lives in a token (kek_id ”) have none.
func (t *Tx) SealedKeys(ctx context.Context) ([]SealedKey, error) {
	rows, err := t.tx.QueryContext(ctx, "SELECT identity_id, version, sealed_key, kek_id FROM identity_versions WHERE kek_id <> '' ORDER BY identity_id, version")
	if err != nil {
		return nil, fmt.Errorf("store: list sealed keys: %w", err)
	}
	defer rows.Close()
	var out []SealedKey
	for rows.Next() {
		var k SealedKey
		if err := rows.Scan(&k.IdentityID, &k.Version, &k.Sealed, &k.KEKID); err != nil {
			return nil, fmt.Errorf("store: list sealed keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list sealed keys: %w", err)
	}
	return out, nil
}

// UpdateSealedKey replaces one sealed key (after re-wrapping).
func (t *Tx) UpdateSealedKey(ctx context.Context, k SealedKey) error {
	res, err := t.tx.ExecContext(ctx, "UPDATE identity_versions SET sealed_key = $1, kek_id = $2 WHERE identity_id = $3 AND version = $4",
		k.Sealed, k.KEKID, k.IdentityID, k.Version)
	if err != nil {
		return fmt.Errorf("store: update sealed key %s/%d: %w", k.IdentityID, k.Version, mapErr(err))
	}
	return expectOne(res, fmt.Sprintf("update sealed key %s/%d", k.IdentityID, k.Version))
}

func expectOne(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("store: %s: %w", what, ErrNotFound)
	}
	return nil
}
