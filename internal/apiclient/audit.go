package apiclient

import (
	"context"
	"encoding/json"
)

// AuditCheckpoint is a signed checkpoint of the audit chain: record Seq had
// the MAC HeadHash, signed with the Ed25519 key of audit key KeyID.
type AuditCheckpoint struct {
	Seq       int64  `json:"seq"`
	HeadHash  string `json:"head_hash"`
	KeyedFrom int64  `json:"keyed_from"`
	// Time is as signed: RFC 3339 in UTC with exactly six fractional
	// digits. It is kept as text so the checkpoint prints as signed.
	Time      string `json:"time"`
	KeyID     string `json:"key_id"`
	PublicKey string `json:"public_key"`
	Signature string `json:"signature"`
}

// AuditStatus is the audit key (id and checkpoint public key) and the
// latest checkpoints.
type AuditStatus struct {
	KeyID             string           `json:"key_id"`
	PublicKey         string           `json:"public_key"`
	PublicKeyPEM      string           `json:"public_key_pem"`
	KeyedFrom         int64            `json:"keyed_from"`
	HeadSeq           int64            `json:"head_seq"`
	HeadHash          string           `json:"head_hash"`
	Latest            *AuditCheckpoint `json:"latest_checkpoint,omitempty"`
	DataDir           *AuditCheckpoint `json:"data_dir_checkpoint,omitempty"`
	CheckpointEvery   string           `json:"checkpoint_every"`
	CheckpointRecords int64            `json:"checkpoint_records"`
}

// CreateAuditCheckpoint asks the server to verify the records since its
// latest checkpoint and sign the head.
func (c *Client) CreateAuditCheckpoint(ctx context.Context) (AuditCheckpoint, error) {
	var cp AuditCheckpoint
	err := c.Do(ctx, "POST", "/api/v1/audit/checkpoints", nil, nil, &cp)
	return cp, err
}

// AuditStatus returns the audit key and the latest checkpoints.
func (c *Client) AuditStatus(ctx context.Context) (AuditStatus, error) {
	var s AuditStatus
	err := c.Do(ctx, "GET", "/api/v1/audit/status", nil, nil, &s)
	return s, err
}

// VerifyAuditCheckpoint asks the server to walk the chain and check it
// against checkpoint, a checkpoint document as CreateAuditCheckpoint
// returned it.
func (c *Client) VerifyAuditCheckpoint(ctx context.Context, checkpoint json.RawMessage) (AuditVerification, error) {
	var v AuditVerification
	err := c.Do(ctx, "POST", "/api/v1/audit/verify", nil, map[string]json.RawMessage{"checkpoint": checkpoint}, &v)
	return v, err
}
