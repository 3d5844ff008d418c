package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// Connector is a stored connector. JSON-valued fields are kept as text;
// the connector package owns their shape.
type Connector struct {
	ID                       string
	Name                     string
	Description              string
	URL                      string
	AuthType                 string
	Identity                 string
	CAs                      []string
	SystemRoots              bool
	ServerName               string
	Pins                     string // JSON array
	MinTLS                   string
	TimeoutMS                int64
	Headers                  string // JSON object
	Auth                     string // JSON object, no secrets
	SealedSecret             []byte
	KEKID                    string
	AllowPlaintext           bool
	AllowNoClientAuthRequest bool
	CreatedAt                time.Time
	UpdatedAt                time.Time
	Revision                 int64
	LastTestAt               *time.Time
	LastTestOK               *bool
	LastError                string
}

const connectorColumns = "id, name, description, url, auth_type, identity, system_roots, server_name, pins, min_tls, timeout_ms, headers, auth, sealed_secret, kek_id, allow_plaintext, allow_no_client_auth_request, created_at, updated_at, revision, last_test_at, last_test_ok, last_error"

func scanConnector(row interface{ Scan(...any) error }) (Connector, error) {
	var c Connector
	var created, updated int64
	var lastAt sql.NullInt64
	var lastOK sql.NullBool
	if err := row.Scan(&c.ID, &c.Name, &c.Description, &c.URL, &c.AuthType, &c.Identity, &c.SystemRoots, &c.ServerName, &c.Pins, &c.MinTLS,
		&c.TimeoutMS, &c.Headers, &c.Auth, &c.SealedSecret, &c.KEKID, &c.AllowPlaintext, &c.AllowNoClientAuthRequest,
		&created, &updated, &c.Revision, &lastAt, &lastOK, &c.LastError); err != nil {
		return Connector{}, err
	}
	c.CreatedAt, c.UpdatedAt = fromMicros(created), fromMicros(updated)
	c.LastTestAt = fromNullMicros(lastAt)
	if lastOK.Valid {
		c.LastTestOK = &lastOK.Bool
	}
	return c, nil
}

func (t *Tx) writeConnectorCAs(ctx context.Context, c Connector) error {
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM connector_cas WHERE connector_id = $1", c.ID); err != nil {
		return fmt.Errorf("store: connector %q cas: %w", c.Name, mapErr(err))
	}
	for i, ca := range c.CAs {
		if _, err := t.tx.ExecContext(ctx, "INSERT INTO connector_cas (connector_id, position, ca_name) VALUES ($1, $2, $3)", c.ID, i, ca); err != nil {
			return fmt.Errorf("store: connector %q cas: %w", c.Name, mapErr(err))
		}
	}
	return nil
}

// InsertConnector stores a new connector; a taken name is ErrConflict.
func (t *Tx) InsertConnector(ctx context.Context, c Connector) error {
	_, err := t.tx.ExecContext(ctx, "INSERT INTO connectors ("+connectorColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)",
		c.ID, c.Name, c.Description, c.URL, c.AuthType, c.Identity, c.SystemRoots, c.ServerName, c.Pins, c.MinTLS, c.TimeoutMS, c.Headers, c.Auth,
		c.SealedSecret, c.KEKID, c.AllowPlaintext, c.AllowNoClientAuthRequest, micros(c.CreatedAt), micros(c.UpdatedAt), c.Revision,
		nullMicros(c.LastTestAt), nullBool(c.LastTestOK), c.LastError)
	if err != nil {
		return fmt.Errorf("store: insert connector %q: %w", c.Name, mapErr(err))
	}
	return t.writeConnectorCAs(ctx, c)
}

// UpdateConnector replaces a connector's settings and bumps its revision.
func (t *Tx) UpdateConnector(ctx context.Context, c Connector) error {
	res, err := t.tx.ExecContext(ctx, `UPDATE connectors SET description = $1, url = $2, auth_type = $3, identity = $4, system_roots = $5, server_name = $6,
		pins = $7, min_tls = $8, timeout_ms = $9, headers = $10, auth = $11, sealed_secret = $12, kek_id = $13, allow_plaintext = $14,
		allow_no_client_auth_request = $15, updated_at = $16, revision = revision + 1 WHERE id = $17`,
		c.Description, c.URL, c.AuthType, c.Identity, c.SystemRoots, c.ServerName, c.Pins, c.MinTLS, c.TimeoutMS, c.Headers, c.Auth,
		c.SealedSecret, c.KEKID, c.AllowPlaintext, c.AllowNoClientAuthRequest, micros(c.UpdatedAt), c.ID)
	if err != nil {
		return fmt.Errorf("store: update connector %q: %w", c.Name, mapErr(err))
	}
	if err := expectOne(res, "update connector "+c.Name); err != nil {
		return err
	}
	return t.writeConnectorCAs(ctx, c)
}

// RecordConnectorTest stores the outcome of a connector's latest test.
func (t *Tx) RecordConnectorTest(ctx context.Context, name string, at time.Time, ok bool, lastError string) error {
	_, err := t.tx.ExecContext(ctx, "UPDATE connectors SET last_test_at = $1, last_test_ok = $2, last_error = $3 WHERE name = $4", micros(at), ok, lastError, name)
	if err != nil {
		return fmt.Errorf("store: record test of connector %q: %w", name, mapErr(err))
	}
	return nil
}

// DeleteConnector removes a connector.
func (t *Tx) DeleteConnector(ctx context.Context, id string) error {
	res, err := t.tx.ExecContext(ctx, "DELETE FROM connectors WHERE id = $1", id)
	if err != nil {
		return fmt.Errorf("store: delete connector %s: %w", id, mapErr(err))
	}
	return expectOne(res, "delete connector "+id)
}

func connectorCAs(ctx context.Context, q querier, c *Connector) error {
	rows, err := q.QueryContext(ctx, "SELECT ca_name FROM connector_cas WHERE connector_id = $1 ORDER BY position", c.ID)
	if err != nil {
		return fmt.Errorf("store: connector %q cas: %w", c.Name, err)
	}
	defer rows.Close()
	c.CAs = nil
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return fmt.Errorf("store: connector %q cas: %w", c.Name, err)
		}
		c.CAs = append(c.CAs, n)
	}
	return rows.Err()
}

// ConnectorByName reads one connector inside the transaction.
func (t *Tx) ConnectorByName(ctx context.Context, name string) (Connector, error) {
	c, err := scanConnector(t.tx.QueryRowContext(ctx, "SELECT "+connectorColumns+" FROM connectors WHERE name = $1", name))
	if err != nil {
		return Connector{}, fmt.Errorf("store: get connector %q: %w", name, mapErr(err))
	}
	if err := connectorCAs(ctx, t.tx, &c); err != nil {
		return Connector{}, err
	}
	return c, nil
}

// ConnectorByName reads one connector.
func (s *Store) ConnectorByName(ctx context.Context, name string) (Connector, error) {
	c, err := scanConnector(s.read.QueryRowContext(ctx, "SELECT "+connectorColumns+" FROM connectors WHERE name = $1", name))
	if err != nil {
		return Connector{}, fmt.Errorf("store: get connector %q: %w", name, mapErr(err))
	}
	if err := connectorCAs(ctx, s.read, &c); err != nil {
		return Connector{}, err
	}
	return c, nil
}

// ConnectorState fingerprints everything a connector's client is built
// from: the connector's revision, its identity's revision and each CA
// bundle's revision. Two equal fingerprints mean nothing changed.
func (s *Store) ConnectorState(ctx context.Context, name string) (string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT 'c', c.revision FROM connectors c WHERE c.name = $1
		UNION ALL SELECT 'i:' || i.name, i.revision FROM identities i JOIN connectors c ON c.identity = i.name WHERE c.name = $1
		UNION ALL SELECT 'a:' || a.name, a.revision FROM cas a JOIN connector_cas cc ON cc.ca_name = a.name JOIN connectors c ON c.id = cc.connector_id WHERE c.name = $1
		ORDER BY 1`, name)
	if err != nil {
		return "", fmt.Errorf("store: connector %q state: %w", name, err)
	}
	defer rows.Close()
	var b strings.Builder
	found := false
	for rows.Next() {
		var k string
		var rev int64
		if err := rows.Scan(&k, &rev); err != nil {
			return "", fmt.Errorf("store: connector %q state: %w", name, err)
		}
		found = found || k == "c"
		fmt.Fprintf(&b, "%s=%d;", k, rev)
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("store: connector %q state: %w", name, err)
	}
	if !found {
		return "", fmt.Errorf("store: connector %q state: %w", name, ErrNotFound)
	}
	return b.String(), nil
}

// ListConnectors returns every connector, by name.
func (s *Store) ListConnectors(ctx context.Context) ([]Connector, error) {
	rows, err := s.read.QueryContext(ctx, "SELECT "+connectorColumns+" FROM connectors ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("store: list connectors: %w", err)
	}
	var out []Connector
	for rows.Next() {
		c, err := scanConnector(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: list connectors: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("store: list connectors: %w", err)
	}
	for i := range out {
		if err := connectorCAs(ctx, s.read, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ConnectorsUsing names the connectors that use a CA bundle (kind "ca") or
// an identity (kind "identity").
func (t *Tx) ConnectorsUsing(ctx context.Context, kind, name string) ([]string, error) {
	var q string
	switch kind {
	case "ca":
		q = "SELECT DISTINCT c.name FROM connectors c JOIN connector_cas cc ON cc.connector_id = c.id WHERE cc.ca_name = $1 ORDER BY c.name"
	case "identity":
		q = "SELECT name FROM connectors WHERE identity = $1 ORDER BY name"
	default:
		return nil, fmt.Errorf("store: connectors using %s: unknown kind", kind)
	}
	rows, err := t.tx.QueryContext(ctx, q, name)
	if err != nil {
		return nil, fmt.Errorf("store: connectors using %s %q: %w", kind, name, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("store: connectors using %s %q: %w", kind, name, err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

func nullBool(b *bool) sql.NullBool {
	if b == nil {
		return sql.NullBool{}
	}
	return sql.NullBool{Bool: *b, Valid: true}
}

// SealedSecret is one connector's sealed secret, for re-wrapping.
type SealedSecret struct {
	ConnectorID string
	Sealed      []byte
	KEKID       string
}

// SealedSecrets returns every connector secret inside the transaction.
func (t *Tx) SealedSecrets(ctx context.Context) ([]SealedSecret, error) {
	rows, err := t.tx.QueryContext(ctx, "SELECT id, sealed_secret, kek_id FROM connectors WHERE sealed_secret IS NOT NULL ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("store: list sealed secrets: %w", err)
	}
	defer rows.Close()
	var out []SealedSecret
	for rows.Next() {
		var k SealedSecret
		if err := rows.Scan(&k.ConnectorID, &k.Sealed, &k.KEKID); err != nil {
			return nil, fmt.Errorf("store: list sealed secrets: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// UpdateSealedSecret replaces one connector secret (after re-wrapping).
func (t *Tx) UpdateSealedSecret(ctx context.Context, k SealedSecret) error {
	res, err := t.tx.ExecContext(ctx, "UPDATE connectors SET sealed_secret = $1, kek_id = $2 WHERE id = $3", k.Sealed, k.KEKID, k.ConnectorID)
	if err != nil {
		return fmt.Errorf("store: update sealed secret of %s: %w", k.ConnectorID, mapErr(err))
	}
	return expectOne(res, "update sealed secret of "+k.ConnectorID)
}
