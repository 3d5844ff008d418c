package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// fwdTime is when every seeded row was written, microsecond-aligned as
// stored.
var fwdTime = time.Date(2026, 3, 4, 5, 6, 7, 891000, time.UTC)

func fwdMicros(d time.Duration) int64 { return fwdTime.Add(d).UnixMicro() }

func fwdAt(d time.Duration) *time.Time {
	t := fwdTime.Add(d)
	return &t
}

// seed is what a database at some released schema held: rows written with
// plain SQL valid at version (the version that created their tables), and
// the check that reads them back through the store after migrating to the
// newest schema.
type seed struct {
	version int
	what    string
	insert  func(t *testing.T, db *sql.DB)
	check   func(t *testing.T, st *store.Store)
}

// stmt is one SQL statement with its arguments.
type stmt struct {
	query string
	args  []any
}

func q(query string, args ...any) stmt { return stmt{query: query, args: args} }

func execAll(t *testing.T, db *sql.DB, stmts ...stmt) {
	t.Helper()
	for _, s := range stmts {
		_, err := db.ExecContext(context.Background(), s.query, s.args...)
		require.NoError(t, err, s.query)
	}
}

var seeds = []seed{
	{version: 1, what: "a token and an audit record",
		insert: func(t *testing.T, db *sql.DB) {
			execAll(t, db,
				q("INSERT INTO tokens (id, name, role, secret_hash, created_at, created_by, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
					"tok_fwd", "ci", "operator", "hash-fwd", fwdMicros(0), "system", fwdMicros(time.Hour), nil),
				q("INSERT INTO audit_records (seq, time, actor_id, actor_name, actor_role, action, target, outcome, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
					1, fwdMicros(0), "system", "system", "admin", "token.create", "token/tok_fwd", "success", `{"name":"ci"}`, "", "h1"),
				q("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", 1, "h1"))
		},
		check: func(t *testing.T, st *store.Store) {
			ctx := context.Background()
			tok, err := st.Token(ctx, "tok_fwd")
			require.NoError(t, err)
			require.Equal(t, store.Token{ID: "tok_fwd", Name: "ci", Role: "operator", SecretHash: "hash-fwd", CreatedAt: fwdTime, CreatedBy: "system", ExpiresAt: fwdAt(time.Hour)}, tok)
			head, err := st.AuditHead(ctx)
			require.NoError(t, err)
			require.Equal(t, store.AuditHead{Seq: 1, Hash: "h1"}, head)
			recs, err := st.ListAudit(ctx, store.AuditFilter{})
			require.NoError(t, err)
			require.Equal(t, []store.AuditRecord{{Seq: 1, Time: fwdTime, ActorID: "system", ActorName: "system", ActorRole: "admin", Action: "token.create",
				Target: "token/tok_fwd", Outcome: "success", Details: `{"name":"ci"}`, PrevHash: "", Hash: "h1"}}, recs)
		}},
	{version: 2, what: "a CA and an identity with an active version",
		insert: func(t *testing.T, db *sql.DB) {
			execAll(t, db,
				q("INSERT INTO cas (id, name, description, pem, allow_leaf, created_at, updated_at, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
					"ca_fwd", "root", "the root", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", true, fwdMicros(0), fwdMicros(time.Minute), 2),
				q("INSERT INTO identities (id, name, description, active_version, last_version, created_at, updated_at, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
					"id_fwd", "payments", "client", 1, 1, fwdMicros(0), fwdMicros(0), 3),
				q(`INSERT INTO identity_versions (identity_id, version, status, source, key_type, sealed_key, kek_id, csr_pem, cert_pem, chain_pem, serial, subject,
					issuer, fingerprint, not_before, not_after, activate_on_install, created_at, activated_at)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`,
					"id_fwd", 1, "active", "imported", "ecdsa-p256", []byte{0x01, 0x02, 0xff}, "kek_fwd", "", "CERT", "CHAIN", "0a", "CN=payments",
					"CN=root", "ab:cd", fwdMicros(-time.Hour), fwdMicros(90*24*time.Hour), true, fwdMicros(0), fwdMicros(time.Second)))
		},
		check: func(t *testing.T, st *store.Store) {
			ctx := context.Background()
			ca, err := st.CAByName(ctx, "root")
			require.NoError(t, err)
			require.Equal(t, store.CA{ID: "ca_fwd", Name: "root", Description: "the root", PEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
				AllowLeaf: true, CreatedAt: fwdTime, UpdatedAt: fwdTime.Add(time.Minute), Revision: 2}, ca)
			id, err := st.IdentityByName(ctx, "payments")
			require.NoError(t, err)
			require.Equal(t, store.Identity{ID: "id_fwd", Name: "payments", Description: "client", ActiveVersion: 1, CreatedAt: fwdTime, UpdatedAt: fwdTime, Revision: 3}, id)
			want := store.IdentityVersion{IdentityID: "id_fwd", Version: 1, Status: "active", Source: "imported", KeyType: "ecdsa-p256", SealedKey: []byte{0x01, 0x02, 0xff},
				KEKID: "kek_fwd", CertPEM: "CERT", ChainPEM: "CHAIN", Serial: "0a", Subject: "CN=payments", Issuer: "CN=root", Fingerprint: "ab:cd",
				NotBefore: fwdAt(-time.Hour), NotAfter: fwdAt(90 * 24 * time.Hour), ActivateOnInstall: true, CreatedAt: fwdTime, ActivatedAt: fwdAt(time.Second)}
			vs, err := st.IdentityVersions(ctx, "id_fwd")
			require.NoError(t, err)
			require.NotEmpty(t, vs)
			require.Equal(t, want, vs[0])
			_, active, err := st.ActiveIdentity(ctx, "payments")
			require.NoError(t, err)
			require.Equal(t, want.Fingerprint, active.Fingerprint)
			require.Equal(t, want.SealedKey, active.SealedKey)
		}},
	{version: 3, what: "a connector trusting the CA",
		insert: func(t *testing.T, db *sql.DB) {
			execAll(t, db,
				q(`INSERT INTO connectors (id, name, description, url, auth_type, identity, system_roots, server_name, pins, min_tls, timeout_ms, headers, auth,
					sealed_secret, kek_id, allow_plaintext, allow_no_client_auth_request, created_at, updated_at, revision, last_test_at, last_test_ok, last_error)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)`,
					"con_fwd", "hr", "HR API", "https://hr.example", "mtls", "payments", false, "hr.example", `["sha256/AAAA"]`, "1.3", 5000,
					`{"X-Team":"ops"}`, `{}`, []byte{0x09}, "kek_fwd", false, false, fwdMicros(0), fwdMicros(0), 1, fwdMicros(time.Minute), true, ""),
				q("INSERT INTO connector_cas (connector_id, position, ca_name) VALUES ($1, $2, $3)", "con_fwd", 0, "root"))
		},
		check: func(t *testing.T, st *store.Store) {
			c, err := st.ConnectorByName(context.Background(), "hr")
			require.NoError(t, err)
			ok := true
			require.Equal(t, store.Connector{ID: "con_fwd", Name: "hr", Description: "HR API", URL: "https://hr.example", AuthType: "mtls", Identity: "payments",
				CAs: []string{"root"}, ServerName: "hr.example", Pins: `["sha256/AAAA"]`, MinTLS: "1.3", TimeoutMS: 5000, Headers: `{"X-Team":"ops"}`, Auth: `{}`,
				SealedSecret: []byte{0x09}, KEKID: "kek_fwd", CreatedAt: fwdTime, UpdatedAt: fwdTime, Revision: 1, LastTestAt: fwdAt(time.Minute), LastTestOK: &ok}, c)
		}},
	{version: 4, what: "a flow with a version, a run and a step",
		insert: func(t *testing.T, db *sql.DB) {
			execAll(t, db,
				q("INSERT INTO flows (name, current_version, trigger_kind, webhook_secret, kek_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
					"greet", 1, "manual", nil, "", fwdMicros(0), fwdMicros(0)),
				q("INSERT INTO flow_versions (flow_name, version, digest, filename, source, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
					"greet", 1, "sha256:ff", "greet.yaml", "name: greet\n", fwdMicros(0), "tok_fwd"),
				q(`INSERT INTO runs (id, flow_name, flow_version, status, trigger_kind, input, input_sealed, kek_id, output, error, parent_run_id, parent_step,
					created_by, created_at, started_at, finished_at, updated_at, lease_owner, lease_until, cancel_requested)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)`,
					"run_fwd", "greet", 1, "succeeded", "manual", `{"user_id":"42"}`, []byte{0x07}, "kek_fwd", `{"ok":true}`, "", "", "",
					"tok_fwd", fwdMicros(0), fwdMicros(time.Second), fwdMicros(2*time.Second), fwdMicros(2*time.Second), "", 0, false),
				q(`INSERT INTO run_steps (run_id, path, step_id, kind, status, attempts, state, output, evidence, error, started_at, finished_at, next_attempt_at, duration_ms, seq)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
					"run_fwd", "hello", "hello", "set", "succeeded", 1, "{}", `{"message":"hello 42"}`, "{}", "", fwdMicros(time.Second), fwdMicros(2*time.Second), nil, 1000, 1))
		},
		check: func(t *testing.T, st *store.Store) {
			ctx := context.Background()
			f, err := st.FlowByName(ctx, "greet")
			require.NoError(t, err)
			require.Equal(t, store.Flow{Name: "greet", CurrentVersion: 1, TriggerKind: "manual", CreatedAt: fwdTime, UpdatedAt: fwdTime}, f)
			fv, err := st.FlowVersion(ctx, "greet", 1)
			require.NoError(t, err)
			require.Equal(t, store.FlowVersion{FlowName: "greet", Version: 1, Digest: "sha256:ff", Filename: "greet.yaml", Source: "name: greet\n", CreatedAt: fwdTime, CreatedBy: "tok_fwd"}, fv)
			r, err := st.Run(ctx, "run_fwd")
			require.NoError(t, err)
			require.Equal(t, store.Run{ID: "run_fwd", FlowName: "greet", FlowVersion: 1, Status: "succeeded", TriggerKind: "manual", Input: `{"user_id":"42"}`,
				InputSealed: []byte{0x07}, KEKID: "kek_fwd", Output: `{"ok":true}`, CreatedBy: "tok_fwd", CreatedAt: fwdTime, StartedAt: fwdAt(time.Second),
				FinishedAt: fwdAt(2 * time.Second), UpdatedAt: fwdTime.Add(2 * time.Second), LeaseUntil: time.UnixMicro(0).UTC()}, r)
			steps, err := st.Steps(ctx, "run_fwd")
			require.NoError(t, err)
			require.Equal(t, []store.Step{{RunID: "run_fwd", Path: "hello", StepID: "hello", Kind: "set", Status: "succeeded", Attempts: 1, State: "{}",
				Output: `{"message":"hello 42"}`, Evidence: "{}", StartedAt: fwdAt(time.Second), FinishedAt: fwdAt(2 * time.Second), DurationMS: 1000, Seq: 1}}, steps)
		}},
	{version: 5, what: "an emitted lifecycle event",
		insert: func(t *testing.T, db *sql.DB) {
			execAll(t, db, q("INSERT INTO events_emitted (key, emitted_at) VALUES ($1, $2)", "identity.expiring/payments/1/30d", fwdMicros(0)))
		},
		check: func(t *testing.T, st *store.Store) {
			ctx := context.Background()
			require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
				fresh, err := tx.MarkEvent(ctx, "identity.expiring/payments/1/30d", fwdTime.Add(time.Hour))
				require.False(t, fresh, "the event is remembered as emitted")
				return err
			}))
		}},
	{version: 6, what: "a key-encryption key record",
		insert: func(t *testing.T, db *sql.DB) {
			execAll(t, db, q("INSERT INTO keks (id, state, source, created_at, activated_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6)",
				"kek_fwd", "active", "file", fwdMicros(0), fwdMicros(0), nil))
		},
		check: func(t *testing.T, st *store.Store) {
			var id, state string
			require.NoError(t, st.DB().QueryRowContext(context.Background(), "SELECT id, state FROM keks").Scan(&id, &state))
			require.Equal(t, []string{"kek_fwd", "active"}, []string{id, state})
		}},
	{version: 7, what: "an identity version whose key is in a PKCS#11 token",
		insert: func(t *testing.T, db *sql.DB) {
			execAll(t, db, q(`INSERT INTO identity_versions (identity_id, version, status, source, key_type, sealed_key, kek_id, key_ref, csr_pem, cert_pem, chain_pem,
				serial, subject, issuer, fingerprint, not_before, not_after, activate_on_install, created_at, activated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)`,
				"id_fwd", 2, "pending", "generated", "ecdsa-p256", []byte{}, "", "pkcs11:token=fwd;id=%01", "CSR", "", "", "", "", "", "", nil, nil, false, fwdMicros(0), nil),
				q("UPDATE identities SET last_version = 2 WHERE id = $1", "id_fwd"))
		},
		check: func(t *testing.T, st *store.Store) {
			vs, err := st.IdentityVersions(context.Background(), "id_fwd")
			require.NoError(t, err)
			require.Len(t, vs, 2)
			require.Equal(t, "pending", vs[1].Status)
			require.Equal(t, "CSR", vs[1].CSRPEM)
			var ref string
			require.NoError(t, st.DB().QueryRowContext(context.Background(), "SELECT key_ref FROM identity_versions WHERE identity_id = $1 AND version = 2", "id_fwd").Scan(&ref))
			require.Equal(t, "pkcs11:token=fwd;id=%01", ref)
		}},
	{version: 8, what: "a console session",
		insert: func(t *testing.T, db *sql.DB) {
			execAll(t, db, q("INSERT INTO console_sessions (id_hash, token_id, created_at, expires_at, last_seen, flash) VALUES ($1, $2, $3, $4, $5, $6)",
				"sess_fwd", "tok_fwd", fwdMicros(0), fwdMicros(8*time.Hour), fwdMicros(time.Minute), "CA added."))
		},
		check: func(t *testing.T, st *store.Store) {
			s, err := st.ConsoleSession(context.Background(), "sess_fwd", fwdTime)
			require.NoError(t, err)
			require.Equal(t, store.ConsoleSession{IDHash: "sess_fwd", TokenID: "tok_fwd", CreatedAt: fwdTime, ExpiresAt: fwdTime.Add(8 * time.Hour),
				LastSeen: fwdTime.Add(time.Minute), Flash: "CA added."}, s)
		}},
	{version: 10, what: "a remembered webhook signature, a delivery and a previous webhook secret",
		insert: func(t *testing.T, db *sql.DB) {
			execAll(t, db,
				q("INSERT INTO webhook_replays (flow_name, mac, expires_at) VALUES ($1, $2, $3)", "greet", "ab12", fwdMicros(5*time.Minute)),
				q("INSERT INTO webhook_deliveries (flow_name, delivery_id, run_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
					"greet", "evt-fwd", "run_fwd", fwdMicros(0), fwdMicros(24*time.Hour)),
				q("UPDATE flows SET webhook_secret_previous = $1, webhook_secret_previous_kek_id = $2, webhook_secret_previous_until = $3 WHERE name = $4",
					[]byte{0x05}, "kek_fwd", fwdMicros(time.Hour), "greet"))
		},
		check: func(t *testing.T, st *store.Store) {
			ctx := context.Background()
			k, err := st.WebhookKeys(ctx, "greet")
			require.NoError(t, err)
			require.Equal(t, store.WebhookKeys{Flow: "greet", TriggerKind: "manual", Previous: []byte{0x05}, PreviousKEKID: "kek_fwd", PreviousUntil: fwdTime.Add(time.Hour)}, k)
			require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
				fresh, err := tx.MarkWebhookSignatures(ctx, "greet", []string{"ab12"}, fwdTime.Add(5*time.Minute))
				require.False(t, fresh, "the signature is remembered")
				if err != nil {
					return err
				}
				claimed, run, err := tx.ClaimWebhookDelivery(ctx, "greet", "evt-fwd", fwdTime.Add(time.Hour), fwdTime.Add(25*time.Hour))
				require.False(t, claimed)
				require.Equal(t, "run_fwd", run)
				return err
			}))
		}},
	{version: 11, what: "an egress and TLS policy",
		insert: func(t *testing.T, db *sql.DB) {
			execAll(t, db, q("INSERT INTO policy (id, document, revision, updated_at, updated_by) VALUES (1, $1, 3, $2, $3)",
				`{"apiVersion":"trustflow/v1","kind":"Policy"}`, fwdMicros(0), "admin"))
		},
		check: func(t *testing.T, st *store.Store) {
			p, err := st.Policy(context.Background())
			require.NoError(t, err)
			require.Equal(t, store.PolicyRecord{Document: []byte(`{"apiVersion":"trustflow/v1","kind":"Policy"}`), Revision: 3, UpdatedAt: fwdTime, UpdatedBy: "admin"}, p)
		}},
	{version: 11, what: "a sleeping run, due again once runs are dispatched from their table",
		insert: func(t *testing.T, db *sql.DB) {
			execAll(t, db,
				q("INSERT INTO flows (name, current_version, trigger_kind, webhook_secret, kek_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
					"nap", 1, "manual", nil, "", fwdMicros(0), fwdMicros(0)),
				q(`INSERT INTO runs (id, flow_name, flow_version, status, trigger_kind, input, input_sealed, kek_id, output, error, parent_run_id, parent_step,
					created_by, created_at, started_at, finished_at, updated_at, lease_owner, lease_until, cancel_requested)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)`,
					"run_nap", "nap", 1, "sleeping", "manual", `{}`, []byte{0x07}, "kek_fwd", "", "", "", "",
					"tok_fwd", fwdMicros(0), fwdMicros(time.Second), nil, fwdMicros(3*time.Second), "", 0, false))
		},
		check: func(t *testing.T, st *store.Store) {
			ctx := context.Background()
			r, err := st.Run(ctx, "run_nap")
			require.NoError(t, err)
			require.Equal(t, fwdAt(3*time.Second), r.DueAt, "an unfinished run is due at once (its step knows when it wakes)")
			require.Zero(t, r.Wakes)
			due, err := st.DueRuns(ctx, fwdTime.Add(time.Hour), 10)
			require.NoError(t, err)
			require.Contains(t, due, "run_nap")
			require.NotContains(t, due, "run_fwd", "a finished run is never due")
		}},
}

// TestMigrateForwardFromEveryRelease builds, for each earlier schema k, a
// database migrated only to k, fills every table that exists at k with
// plain SQL of that version, then opens it with this binary (migrating to
// the newest schema) and reads every row back through the store.
func TestMigrateForwardFromEveryRelease(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		latest, err := store.LatestSchema(d)
		require.NoError(t, err)
		require.GreaterOrEqual(t, latest, seeds[len(seeds)-1].version, "a seed for a migration this binary lacks")
		for k := 1; k < latest; k++ {
			t.Run(fmt.Sprintf("%s/from_%d", d, k), func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				cfg := store.Config{Dialect: d, DSN: storetest.DSN(t, d)}
				old, err := store.OpenAt(ctx, cfg, k)
				require.NoError(t, err)
				v, err := old.SchemaVersion(ctx)
				require.NoError(t, err)
				require.Equal(t, k, v)
				for _, s := range seeds {
					if s.version <= k {
						s.insert(t, old.DB())
					}
				}
				require.NoError(t, old.Close())

				st, err := store.Open(ctx, cfg)
				require.NoError(t, err)
				defer st.Close()
				v, err = st.SchemaVersion(ctx)
				require.NoError(t, err)
				require.Equal(t, latest, v)
				for _, s := range seeds {
					if s.version <= k {
						t.Run(s.what, func(t *testing.T) { s.check(t, st) })
					}
				}
			})
		}
	}
}
