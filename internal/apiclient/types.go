package apiclient

import (
	"context"
	"encoding/json"
	"io"
	"net/url"
	"strconv"
	"time"
)

// Token is an API token's public view.
type Token struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	CreatedAt time.Time  `json:"created_at"`
	CreatedBy string     `json:"created_by"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Status    string     `json:"status"`
	// Token is the secret, present only in the answer to CreateToken.
	Token string `json:"token,omitempty"`
}

// CreateTokenRequest asks for a new token.
type CreateTokenRequest struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	ExpiresIn string `json:"expires_in,omitempty"`
}

// CreateToken creates a token; the answer carries its secret once.
func (c *Client) CreateToken(ctx context.Context, req CreateTokenRequest) (Token, error) {
	var t Token
	err := c.Do(ctx, "POST", "/api/v1/tokens", nil, req, &t)
	return t, err
}

// ListTokens lists tokens.
func (c *Client) ListTokens(ctx context.Context) ([]Token, error) {
	var out struct {
		Tokens []Token `json:"tokens"`
	}
	err := c.Do(ctx, "GET", "/api/v1/tokens", nil, nil, &out)
	return out.Tokens, err
}

// RevokeToken revokes a token.
func (c *Client) RevokeToken(ctx context.Context, id string) (Token, error) {
	var t Token
	err := c.Do(ctx, "DELETE", "/api/v1/tokens/"+url.PathEscape(id), nil, nil, &t)
	return t, err
}

// AuditActor is who caused an audited action.
type AuditActor struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Role string `json:"role"`
}

// AuditRecord is one audit record.
type AuditRecord struct {
	Seq      int64           `json:"seq"`
	Time     time.Time       `json:"time"`
	Actor    AuditActor      `json:"actor"`
	Action   string          `json:"action"`
	Target   string          `json:"target"`
	Outcome  string          `json:"outcome"`
	Details  json.RawMessage `json:"details"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
	// KeyID is the audit key whose HMAC-SHA256 Hash is; empty for a
	// record from before the audit key (Hash is then SHA-256).
	KeyID string `json:"key_id,omitempty"`
}

// AuditPage is one page of audit records, newest first.
type AuditPage struct {
	Records    []AuditRecord `json:"records"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

// AuditQuery filters audit records; empty fields do not filter.
type AuditQuery struct {
	Action, Actor, Target, Since, Until, Cursor string
	Limit                                       int
}

func (q AuditQuery) values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"action": q.Action, "actor": q.Actor, "target": q.Target, "since": q.Since, "until": q.Until, "cursor": q.Cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// ListAudit returns one page of audit records.
func (c *Client) ListAudit(ctx context.Context, q AuditQuery) (AuditPage, error) {
	var p AuditPage
	err := c.Do(ctx, "GET", "/api/v1/audit", q.values(), nil, &p)
	return p, err
}

// AuditVerification is the result of walking the audit chain.
type AuditVerification struct {
	OK          bool   `json:"ok"`
	Records     int64  `json:"records"`
	HeadSeq     int64  `json:"head_seq"`
	HeadHash    string `json:"head_hash"`
	FirstBadSeq int64  `json:"first_bad_seq,omitempty"`
	Problem     string `json:"problem,omitempty"`
	// KeyID and KeyedFrom: the audit key the chain is keyed under, from
	// which record.
	KeyID     string `json:"key_id,omitempty"`
	KeyedFrom int64  `json:"keyed_from,omitempty"`
	// Checkpoints is how many signed checkpoints the chain was checked
	// against; CheckpointSeq, CheckpointTime and CheckpointSource describe
	// the newest (or the given one).
	Checkpoints      int        `json:"checkpoints,omitempty"`
	CheckpointSeq    int64      `json:"checkpoint_seq,omitempty"`
	CheckpointTime   *time.Time `json:"checkpoint_time,omitempty"`
	CheckpointSource string     `json:"checkpoint_source,omitempty"`
}

// VerifyAudit asks the server to walk the audit chain.
func (c *Client) VerifyAudit(ctx context.Context) (AuditVerification, error) {
	var v AuditVerification
	err := c.Do(ctx, "GET", "/api/v1/audit/verify", nil, nil, &v)
	return v, err
}

// ExportAudit copies the audit log, oldest first, as JSON lines to w.
func (c *Client) ExportAudit(ctx context.Context, q AuditQuery, w io.Writer) error {
	v := q.values()
	v.Del("cursor")
	v.Del("limit")
	return c.Stream(ctx, "GET", "/api/v1/audit/export", v, w)
}

// System describes the server.
type System struct {
	Version       string `json:"version"`
	Commit        string `json:"commit"`
	GoVersion     string `json:"go_version"`
	FIPS140       bool   `json:"fips140_enabled"`
	FIPSMode      bool   `json:"fips_mode"`
	Database      string `json:"database"`
	SchemaVersion int    `json:"schema_version"`
}

// System returns the server's version and state.
func (c *Client) System(ctx context.Context) (System, error) {
	var s System
	err := c.Do(ctx, "GET", "/api/v1/system", nil, nil, &s)
	return s, err
}
