package connector

import (
	"container/list"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/store"
)

// Config configures the connector service. Store, Audit and Trust are
// required.
type Config struct {
	Store *store.Store
	Audit *audit.Log
	Trust TrustStore
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// FIPS restricts every connection to FIPS-approved suites and curves.
	FIPS bool
	// AuditCalls records every outbound request in the audit log. Defaults
	// to true; benchmarks of the bare transport turn it off.
	AuditCalls *bool
	// Policy returns the egress and TLS policy in force: every dial is
	// checked against it on the resolved address, every handshake keeps
	// its TLS floor, and a connector that breaks it is refused at create
	// and update and fails closed at call time. Nil means no policy (tests
	// of the transport alone); the composition root always sets it.
	Policy func() *policy.Policy
	// IdleConnectors bounds how many connectors keep their client and
	// idle connections at once: when one more is used, the least recently
	// used one closes its idle connections and its client is released,
	// keeping its TLS sessions and OAuth2 token, so that its next call
	// builds the client again and resumes. Zero means
	// DefaultIdleConnectors; negative, no bound.
	IdleConnectors int
}

// DefaultIdleConnectors is the default of Config.IdleConnectors: enough
// for the connectors a busy server calls over and over to keep their
// connections, while a thousand connectors called now and then do not
// each hold one (some 30 KiB apiece, buffers, TLS state and a goroutine).
const DefaultIdleConnectors = 64

// Service manages connectors and makes calls through them.
type Service struct {
	cfg        Config
	store      *store.Store
	audit      *audit.Log
	trust      TrustStore
	clock      clock.Clock
	log        *slog.Logger
	auditCalls bool

	mu      sync.Mutex
	clients map[string]*client
	// parked holds, by connector name, what the clients released for the
	// bound on idle connectors left behind.
	parked map[string]*parked
	// recent holds the clients that may keep idle connections, most
	// recently used first, at most idleCap of them (no bound when
	// idleCap < 0).
	recent  *list.List
	idleCap int

	systemRoots func() ([]*x509.Certificate, error)
}

// New returns the connector service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Audit == nil || cfg.Trust == nil {
		return nil, errors.New("connector: Store, Audit and Trust are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IdleConnectors == 0 {
		cfg.IdleConnectors = DefaultIdleConnectors
	}
	s := &Service{cfg: cfg, store: cfg.Store, audit: cfg.Audit, trust: cfg.Trust, clock: cfg.Clock, log: cfg.Logger,
		auditCalls: cfg.AuditCalls == nil || *cfg.AuditCalls, clients: map[string]*client{}, parked: map[string]*parked{}, recent: list.New(), idleCap: cfg.IdleConnectors,
		// The system's CA bundle is read once, not at every client rebuild.
		systemRoots: sync.OnceValues(systemRoots)}
	return s, nil
}

// InUse names the connectors that use a CA ("ca") or identity ("identity");
// the trust store calls it before a removal.
func (s *Service) InUse(ctx context.Context, tx *store.Tx, kind, name string) ([]string, error) {
	return tx.ConnectorsUsing(ctx, kind, name)
}

// notFound says that connector name does not exist; it matches
// store.ErrNotFound.
func notFound(name string) *errs.Error {
	e := errs.NotFoundNamed("connector", name, "see `trustflow connector list`")
	e.Op = "connector"
	return e
}

func secretAAD(id string) []byte { return store.ConnectorSecretAAD(id) }

func decodeStored(c store.Connector, pins *[]string, settings *AuthSettings) error {
	if err := json.Unmarshal([]byte(c.Pins), pins); err != nil {
		return fmt.Errorf("connector: %s: stored pins: %w", c.Name, err)
	}
	if err := json.Unmarshal([]byte(c.Auth), settings); err != nil {
		return fmt.Errorf("connector: %s: stored auth settings: %w", c.Name, err)
	}
	return nil
}

func view(c store.Connector) (Connector, error) {
	v := Connector{Name: c.Name, Description: c.Description, URL: c.URL, Auth: c.AuthType, Identity: c.Identity, CAs: c.CAs,
		SystemRoots: c.SystemRoots, ServerName: c.ServerName, MinTLS: c.MinTLS, Timeout: (time.Duration(c.TimeoutMS) * time.Millisecond).String(),
		AllowPlaintext: c.AllowPlaintext, AllowNoClientAuthRequest: c.AllowNoClientAuthRequest, HasSecret: len(c.SealedSecret) > 0,
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, LastTestAt: c.LastTestAt, LastTestOK: c.LastTestOK, LastError: c.LastError}
	if v.CAs == nil {
		v.CAs = []string{}
	}
	if err := decodeStored(c, &v.Pins, &v.AuthSettings); err != nil {
		return Connector{}, err
	}
	if err := json.Unmarshal([]byte(c.Headers), &v.Headers); err != nil {
		return Connector{}, fmt.Errorf("connector: %s: stored headers: %w", c.Name, err)
	}
	return v, nil
}

// checkRefs verifies that the CAs and identity a spec names exist.
func (s *Service) checkRefs(ctx context.Context, sp Spec) error {
	for _, ca := range sp.CAs {
		if _, err := s.trust.GetCA(ctx, ca); err != nil {
			if errs.KindOf(err) == errs.NotFound {
				return &errs.Error{Kind: errs.Invalid, Code: "unknown_ca", Field: "cas", Message: fmt.Sprintf("there is no CA named %q", ca), Hint: "add it with `trustflow ca add " + ca + " --file F`, or see `trustflow ca list`", Op: "connector"}
			}
			return err
		}
	}
	if sp.Identity != "" {
		if _, err := s.trust.Get(ctx, sp.Identity); err != nil {
			if errs.KindOf(err) == errs.NotFound {
				return &errs.Error{Kind: errs.Invalid, Code: "unknown_identity", Field: "identity", Message: fmt.Sprintf("there is no identity named %q", sp.Identity), Hint: "import or create it with `trustflow identity import|create`, or see `trustflow identity list`", Op: "connector"}
			}
			return err
		}
	}
	return nil
}

func (s *Service) row(sp Spec, id string, timeout time.Duration) (store.Connector, error) {
	pins := sp.Pins
	if pins == nil {
		pins = []string{}
	}
	headers := sp.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	settings := sp.AuthSettings
	// Keep only the settings of the chosen auth type.
	switch sp.Auth {
	case AuthBasic:
		settings = AuthSettings{Username: settings.Username}
	case AuthAPIKey:
		settings = AuthSettings{HeaderName: settings.HeaderName}
	case AuthOAuth2:
		settings = AuthSettings{TokenURL: settings.TokenURL, ClientID: settings.ClientID, Scopes: settings.Scopes, TokenAuthTLS: settings.TokenAuthTLS,
			TokenAuthMethod: settings.TokenAuthMethod}
	default:
		settings = AuthSettings{}
	}
	now := s.clock.Now().UTC().Truncate(time.Microsecond)
	r := store.Connector{ID: id, Name: sp.Name, Description: strings.TrimSpace(sp.Description), URL: strings.TrimRight(sp.URL, "/"),
		AuthType: sp.Auth, Identity: sp.Identity, CAs: sp.CAs, SystemRoots: sp.SystemRoots, ServerName: sp.ServerName,
		Pins: encodeJSON(pins), MinTLS: sp.MinTLS, TimeoutMS: timeout.Milliseconds(), Headers: encodeJSON(headers), Auth: encodeJSON(settings),
		AllowPlaintext: sp.AllowPlaintext, AllowNoClientAuthRequest: sp.AllowNoClientAuthRequest, CreatedAt: now, UpdatedAt: now, Revision: 1}
	if !sp.Secrets.empty() {
		secrets := onlySecretsOf(sp.Auth, sp.Secrets)
		if !secrets.empty() {
			raw := []byte(encodeJSON(secrets))
			blob, kek, err := s.trust.SealSecret(raw, secretAAD(id))
			clear(raw)
			if err != nil {
				return store.Connector{}, err
			}
			r.SealedSecret, r.KEKID = blob, kek
		}
	}
	return r, nil
}

func onlySecretsOf(authType string, s Secrets) Secrets {
	switch authType {
	case AuthBasic:
		return Secrets{Password: s.Password}
	case AuthBearer:
		return Secrets{Token: s.Token}
	case AuthAPIKey:
		return Secrets{APIKey: s.APIKey}
	case AuthOAuth2:
		return Secrets{ClientSecret: s.ClientSecret}
	}
	return Secrets{}
}

// auditDetails describes a connector's settings for the audit log: never
// a secret, and the policy exceptions named.
func auditDetails(r store.Connector, secretChanged bool) map[string]any {
	var exceptions []string
	if r.AllowPlaintext {
		exceptions = append(exceptions, "allow_plaintext")
	}
	if r.AllowNoClientAuthRequest {
		exceptions = append(exceptions, "allow_no_client_auth_request")
	}
	if r.SystemRoots {
		exceptions = append(exceptions, "system_roots")
	}
	cas := r.CAs
	if cas == nil {
		cas = []string{}
	}
	return map[string]any{"url": r.URL, "auth": r.AuthType, "identity": r.Identity, "cas": cas, "min_tls": r.MinTLS,
		"server_name": r.ServerName, "pins": r.Pins, "timeout_ms": r.TimeoutMS, "policy_exceptions": exceptions, "secret_changed": secretChanged}
}

func newID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("connector: generate id: %w", err)
	}
	return "con_" + hex.EncodeToString(b), nil
}

// Create validates and stores a new connector.
func (s *Service) Create(ctx context.Context, actor audit.Actor, sp Spec) (Connector, error) {
	_, timeout, err := sp.normalize()
	if err != nil {
		return Connector{}, err
	}
	if err := s.checkPolicy(sp); err != nil {
		return Connector{}, err
	}
	if err := s.checkRefs(ctx, sp); err != nil {
		return Connector{}, err
	}
	id, err := newID()
	if err != nil {
		return Connector{}, err
	}
	r, err := s.row(sp, id, timeout)
	if err != nil {
		return Connector{}, err
	}
	err = s.store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.InsertConnector(ctx, r); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return &errs.Error{Kind: errs.Conflict, Code: "already_exists", Message: fmt.Sprintf("a connector named %q already exists", sp.Name), Hint: "choose another name, or change it with `trustflow connector update " + sp.Name + "`", Op: "connector"}
			}
			return err
		}
		_, err := s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "connector.create", Target: "connector/" + sp.Name, Details: auditDetails(r, len(r.SealedSecret) > 0)})
		return err
	})
	if err != nil {
		return Connector{}, err
	}
	return view(r)
}

// Update replaces a connector's settings. Secrets left empty are kept when
// the auth type does not change.
func (s *Service) Update(ctx context.Context, actor audit.Actor, sp Spec) (Connector, error) {
	current, err := s.store.ConnectorByName(ctx, sp.Name)
	if errors.Is(err, store.ErrNotFound) {
		return Connector{}, notFound(sp.Name)
	} else if err != nil {
		return Connector{}, err
	}
	if sp.Auth == "" {
		sp.Auth = current.AuthType
	}
	sp.secretStored = sp.Secrets.empty() && current.AuthType == sp.Auth && len(current.SealedSecret) > 0
	_, timeout, err := sp.normalize()
	if err != nil {
		return Connector{}, err
	}
	if err := s.checkPolicy(sp); err != nil {
		return Connector{}, err
	}
	if err := s.checkRefs(ctx, sp); err != nil {
		return Connector{}, err
	}
	var out store.Connector
	err = s.store.InTx(ctx, func(tx *store.Tx) error {
		old, err := tx.ConnectorByName(ctx, sp.Name)
		if errors.Is(err, store.ErrNotFound) {
			return notFound(sp.Name)
		} else if err != nil {
			return err
		}
		keepSecret := sp.Secrets.empty() && old.AuthType == sp.Auth && len(old.SealedSecret) > 0
		r, err := s.row(sp, old.ID, timeout)
		if err != nil {
			return err
		}
		details := map[string]any{}
		if keepSecret {
			before, after := destination(old), destination(r)
			if moved := before.changed(after); len(moved) > 0 {
				if !sp.KeepSecrets {
					return &errs.Error{Kind: errs.Conflict, Code: "secret_destination_changed",
						Message: fmt.Sprintf("the update changes %s, which decide where connector %s's stored secret is sent, without sending the secret again", strings.Join(moved, ", "), sp.Name),
						Hint:    "send the secret again with the update (e.g. --token-file, --password-file, --api-key-file or --client-secret-file); an admin may keep it with --keep-secrets", Op: "connector"}
				}
				if actor.Role != "admin" {
					return &errs.Error{Kind: errs.Forbidden, Code: "keep_secrets_admin_only",
						Message: "only an admin may keep a connector's stored secret while changing where it is sent (--keep-secrets)",
						Hint:    "send the secret again with the update, or ask an admin", Op: "connector"}
				}
				details["keep_secrets"] = true
				details["destination_before"], details["destination_after"] = before, after
				details["destination_changed"] = moved
			}
			r.SealedSecret, r.KEKID = old.SealedSecret, old.KEKID
		}
		r.CreatedAt = old.CreatedAt
		if err := tx.UpdateConnector(ctx, r); err != nil {
			return err
		}
		out = r
		det := auditDetails(r, !keepSecret)
		for k, v := range details {
			det[k] = v
		}
		_, err = s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "connector.update", Target: "connector/" + sp.Name, Details: det})
		return err
	})
	if err != nil {
		return Connector{}, err
	}
	s.drop(sp.Name)
	return view(out)
}

// Remove deletes a connector.
func (s *Service) Remove(ctx context.Context, actor audit.Actor, name string) error {
	err := s.store.InTx(ctx, func(tx *store.Tx) error {
		c, err := tx.ConnectorByName(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return notFound(name)
		} else if err != nil {
			return err
		}
		if err := tx.DeleteConnector(ctx, c.ID); err != nil {
			return err
		}
		_, err = s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "connector.remove", Target: "connector/" + name, Details: map[string]any{"url": c.URL}})
		return err
	})
	if err == nil {
		s.drop(name)
	}
	return err
}

// Get returns one connector.
func (s *Service) Get(ctx context.Context, name string) (Connector, error) {
	c, err := s.store.ConnectorByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return Connector{}, notFound(name)
	} else if err != nil {
		return Connector{}, err
	}
	return view(c)
}

// Spec returns a connector's current settings as a Spec (without secrets),
// the starting point of a partial update.
func (s *Service) Spec(ctx context.Context, name string) (Spec, error) {
	v, err := s.Get(ctx, name)
	if err != nil {
		return Spec{}, err
	}
	return Spec{Name: v.Name, Description: v.Description, URL: v.URL, Auth: v.Auth, Identity: v.Identity, CAs: v.CAs, SystemRoots: v.SystemRoots,
		ServerName: v.ServerName, Pins: v.Pins, MinTLS: v.MinTLS, Timeout: v.Timeout, Headers: v.Headers,
		AllowPlaintext: v.AllowPlaintext, AllowNoClientAuthRequest: v.AllowNoClientAuthRequest, AuthSettings: v.AuthSettings}, nil
}

// List returns every connector.
func (s *Service) List(ctx context.Context) ([]Connector, error) {
	rows, err := s.store.ListConnectors(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Connector, 0, len(rows))
	for _, r := range rows {
		v, err := view(r)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// drop forgets a connector's client after a local change.
func (s *Service) drop(name string) {
	s.mu.Lock()
	c := s.clients[name]
	delete(s.clients, name)
	delete(s.parked, name)
	if c != nil {
		s.forgetLocked(c)
	}
	s.mu.Unlock()
	c.retire()
}

// client returns the connector's current client: the cached one while
// nothing it was built from changed, else a new one (the old one's idle
// connections are closed, in-flight requests finish on it).
func (s *Service) client(ctx context.Context, name string) (*client, error) {
	now := s.clock.Now()
	gen := s.trust.Generation()
	s.mu.Lock()
	c := s.clients[name]
	// checkedAt and trustGen are written under s.mu by revalidating callers.
	var fresh, sameGen bool
	var released *client
	if c != nil {
		sameGen = c.trustGen == gen
		fresh = sameGen && now.Sub(c.checkedAt) < s.trust.RevalidateAfter()
		if fresh {
			released = s.usedLocked(c)
		}
	}
	s.mu.Unlock()
	if fresh {
		released.retire()
		return c, nil
	}
	state, err := s.store.ConnectorState(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		s.drop(name)
		return nil, notFound(name)
	} else if err != nil {
		return nil, err
	}
	if c != nil && c.state == state {
		if !sameGen {
			// An identity or CA changed here: make the next request
			// handshake again rather than resume.
			c.sessions.Clear()
			c.transport.CloseIdleConnections()
		}
		s.mu.Lock()
		c.checkedAt, c.trustGen = now, gen
		if s.clients[name] == c {
			released = s.usedLocked(c)
		}
		s.mu.Unlock()
		released.retire()
		return c, nil
	}
	row, err := s.store.ConnectorByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound(name)
	} else if err != nil {
		return nil, err
	}
	var secrets Secrets
	if len(row.SealedSecret) > 0 {
		raw, err := s.trust.OpenSecret(row.SealedSecret, secretAAD(row.ID))
		if err != nil {
			return nil, &CallError{Err: err, Diagnosis: Diagnosis{Code: "secret_unavailable",
				Message: fmt.Sprintf("connector %s: its stored secret cannot be unsealed (altered, or a different key-encryption key)", name),
				Hint:    "set the secret again with `trustflow connector update " + name + "`"}}
		}
		err = json.Unmarshal(raw, &secrets)
		clear(raw)
		if err != nil {
			return nil, fmt.Errorf("connector: %s: stored secret: %w", name, err)
		}
	}
	// A client released for the bound on idle connectors hands its TLS
	// sessions on, unless the connector or the trust store changed since.
	s.mu.Lock()
	from := s.parked[name]
	s.mu.Unlock()
	if from != nil && (from.state != state || from.trustGen != gen) {
		from = nil
	}
	nc, err := newClient(ctx, row, state, secrets, s.trust, s.clock, s.cfg.FIPS, s.systemRoots, s.cfg.Policy, from)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	old := s.clients[name]
	s.clients[name] = nc
	delete(s.parked, name)
	if old != nil {
		s.forgetLocked(old)
	}
	released = s.usedLocked(nc)
	s.mu.Unlock()
	old.retire()
	released.retire()
	return nc, nil
}

// usedLocked marks c as the most recently used client. When that puts the
// clients in use over the bound on idle connectors, it releases the least
// recently used one (the caller retires it outside s.mu): the service
// forgets it, keeping only its TLS sessions for its successor. s.mu is
// held.
func (s *Service) usedLocked(c *client) *client {
	if c.recent != nil {
		s.recent.MoveToFront(c.recent)
		return nil
	}
	c.recent = s.recent.PushFront(c)
	if s.idleCap < 0 || s.recent.Len() <= s.idleCap {
		return nil
	}
	lru := s.recent.Back().Value.(*client)
	s.forgetLocked(lru)
	if s.clients[lru.conn.Name] == lru {
		delete(s.clients, lru.conn.Name)
		s.parked[lru.conn.Name] = lru.park()
	}
	return lru
}

// forgetLocked takes c out of the recently used clients. s.mu is held.
func (s *Service) forgetLocked(c *client) {
	if c.recent != nil {
		s.recent.Remove(c.recent)
		c.recent = nil
	}
}
