package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
)

// MaxCheckpointSize bounds a checkpoint document; a valid one is about 400
// bytes.
const MaxCheckpointSize = 4096

// checkpointHeader is the first line of the message a checkpoint signs.
const checkpointHeader = "trustflow-audit-checkpoint-v1"

// Checkpoint is a signed statement that the audit chain's record Seq had the
// MAC HeadHash, with the chain keyed from record KeyedFrom, at Time. It is
// signed with the Ed25519 key of the audit key KeyID; PublicKey is that
// key's public half (KeyID is its fingerprint), so anyone can check the
// signature, and an assessor who recorded the public key (or the id) once
// can tell a checkpoint of this deployment from any other. The signed
// message is [Checkpoint.SignedMessage].
type Checkpoint struct {
	Seq       int64     `json:"seq"`
	HeadHash  string    `json:"head_hash"`
	KeyedFrom int64     `json:"keyed_from"`
	Time      time.Time `json:"time"`
	KeyID     string    `json:"key_id"`
	// PublicKey is the raw 32-byte Ed25519 public key, standard base64.
	PublicKey string `json:"public_key"`
	// Signature is the 64-byte Ed25519 signature of SignedMessage,
	// standard base64.
	Signature string `json:"signature"`
}

// checkpointJSON is a checkpoint's JSON form, its time written as it is
// signed.
type checkpointJSON struct {
	Seq       int64  `json:"seq"`
	HeadHash  string `json:"head_hash"`
	KeyedFrom int64  `json:"keyed_from"`
	Time      string `json:"time"`
	KeyID     string `json:"key_id"`
	PublicKey string `json:"public_key"`
	Signature string `json:"signature"`
}

// MarshalJSON writes the time as the signed message has it (UTC, exactly
// six fractional digits), so the JSON holds the signed text field by field.
func (c Checkpoint) MarshalJSON() ([]byte, error) {
	return json.Marshal(checkpointJSON{Seq: c.Seq, HeadHash: c.HeadHash, KeyedFrom: c.KeyedFrom, Time: c.Time.UTC().Format(timeLayout),
		KeyID: c.KeyID, PublicKey: c.PublicKey, Signature: c.Signature})
}

// SignedMessage returns the bytes the signature covers: six lines, each
// ending in a newline,
//
//	trustflow-audit-checkpoint-v1
//	seq=<seq>
//	head_hash=<head_hash>
//	keyed_from=<keyed_from>
//	time=<time, RFC 3339 UTC with exactly 6 fractional digits>
//	key_id=<key_id>
func (c Checkpoint) SignedMessage() []byte {
	var b bytes.Buffer
	b.WriteString(checkpointHeader + "\n")
	b.WriteString("seq=" + strconv.FormatInt(c.Seq, 10) + "\n")
	b.WriteString("head_hash=" + c.HeadHash + "\n")
	b.WriteString("keyed_from=" + strconv.FormatInt(c.KeyedFrom, 10) + "\n")
	b.WriteString("time=" + c.Time.UTC().Format(timeLayout) + "\n")
	b.WriteString("key_id=" + c.KeyID + "\n")
	return b.Bytes()
}

// sign returns the checkpoint of record seq with MAC hash, signed by k.
func (k *Key) sign(seq int64, hash string, keyedFrom int64, at time.Time) Checkpoint {
	c := Checkpoint{Seq: seq, HeadHash: hash, KeyedFrom: keyedFrom, Time: at.UTC().Truncate(time.Microsecond),
		KeyID: k.id, PublicKey: base64.StdEncoding.EncodeToString(k.pub)}
	c.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(k.priv, c.SignedMessage()))
	return c
}

// Checkpoint errors' codes.
const (
	CodeInvalidCheckpoint  = "invalid_checkpoint"
	CodeCheckpointOtherKey = "checkpoint_other_deployment"
	CodeCheckpointForged   = "checkpoint_signature_invalid"
)

// VerifyBy checks that c was signed by the audit key k: c must name k's
// id, and its signature must verify under k's public key (the public key
// c carries is not trusted). A checkpoint of another key is an *errs.Error
// with code checkpoint_other_deployment; a bad signature one with code
// checkpoint_signature_invalid.
func (c Checkpoint) VerifyBy(k *Key) error {
	if c.KeyID != k.id {
		return &errs.Error{Kind: errs.Invalid, Code: CodeCheckpointOtherKey, Field: "key_id", Op: "audit: verify checkpoint",
			Message: fmt.Sprintf("the checkpoint of record %d is signed by audit key %s, but this deployment's audit key is %s: it comes from another deployment", c.Seq, c.KeyID, k.id),
			Hint:    "verify it against the deployment that made it, or take a checkpoint of this one with `trustflow audit checkpoint`"}
	}
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil || !ed25519.Verify(k.pub, c.SignedMessage(), sig) {
		return &errs.Error{Kind: errs.Invalid, Code: CodeCheckpointForged, Field: "signature", Op: "audit: verify checkpoint",
			Message: fmt.Sprintf("the signature of the checkpoint of record %d does not verify under audit key %s: the checkpoint was altered after it was signed", c.Seq, k.id),
			Hint:    "use the checkpoint exactly as `trustflow audit checkpoint -o json` printed it (or as the log stream or audit.checkpoint holds it)"}
	}
	return nil
}

// ParseCheckpoint parses a checkpoint as `audit checkpoint -o json`
// prints it, as the data dir's audit.checkpoint holds it, or as the
// "checkpoint" object of its log line: one JSON object with exactly the
// fields of [Checkpoint], at most MaxCheckpointSize bytes. It checks the
// form of every field and that key_id is public_key's fingerprint, not the
// signature (see [Checkpoint.VerifyBy]). Errors are *errs.Error naming the
// field.
func ParseCheckpoint(data []byte) (Checkpoint, error) {
	if len(data) > MaxCheckpointSize {
		return Checkpoint{}, &errs.Error{Kind: errs.TooLarge, Code: "checkpoint_too_large", Op: "audit: parse checkpoint",
			Message: fmt.Sprintf("the checkpoint is %d bytes, over the %d-byte limit of a checkpoint (checkpoint_too_large)", len(data), MaxCheckpointSize),
			Hint:    "give the checkpoint alone, as `trustflow audit checkpoint -o json` prints it"}
	}
	var c Checkpoint
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Checkpoint{}, &errs.Error{Kind: errs.Invalid, Code: CodeInvalidCheckpoint, Op: "audit: parse checkpoint", Err: err,
			Message: "not a checkpoint: " + jsonProblem(err),
			Hint:    "give one JSON object with seq, head_hash, keyed_from, time, key_id, public_key and signature, as `trustflow audit checkpoint -o json` prints it"}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Checkpoint{}, &errs.Error{Kind: errs.Invalid, Code: CodeInvalidCheckpoint, Op: "audit: parse checkpoint",
			Message: "not a checkpoint: data follows the JSON object", Hint: "give exactly one checkpoint"}
	}
	bad := func(field, msg string) (Checkpoint, error) {
		return Checkpoint{}, &errs.Error{Kind: errs.Invalid, Code: CodeInvalidCheckpoint, Field: field, Op: "audit: parse checkpoint", Message: msg,
			Hint: "use the checkpoint exactly as `trustflow audit checkpoint -o json` printed it"}
	}
	switch {
	case c.Seq < 1:
		return bad("seq", "must be a record number, 1 or more")
	case !isHex(c.HeadHash, 64):
		return bad("head_hash", "must be 64 lowercase hex digits")
	case c.KeyedFrom < 1 || c.KeyedFrom > c.Seq:
		return bad("keyed_from", "must be a record number from 1 to seq")
	case c.Time.IsZero():
		return bad("time", "is required")
	case c.Time.Nanosecond()%1000 != 0:
		return bad("time", "is more precise than a microsecond, which no checkpoint is")
	case !isHex(c.KeyID, 16):
		return bad("key_id", "must be 16 lowercase hex digits")
	}
	pub, err := base64.StdEncoding.DecodeString(c.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return bad("public_key", fmt.Sprintf("must be a %d-byte Ed25519 public key in standard base64", ed25519.PublicKeySize))
	}
	if KeyID(pub) != c.KeyID {
		return bad("public_key", "is not the key key_id names (key_id is the first 8 bytes of its SHA-256)")
	}
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return bad("signature", fmt.Sprintf("must be a %d-byte Ed25519 signature in standard base64", ed25519.SignatureSize))
	}
	c.Time = c.Time.UTC()
	return c, nil
}

func jsonProblem(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "it is empty"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends early"
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("%s: must be a JSON %s", typ.Field, typ.Type.Kind())
		}
		return "want a JSON object"
	}
	return err.Error()
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// LogValue makes a checkpoint one group of attributes in the log stream
// (under the key "checkpoint"), with the JSON field names, so a shipped
// line holds a checkpoint ParseCheckpoint reads.
func (c Checkpoint) LogValue() slog.Value {
	return slog.GroupValue(slog.Int64("seq", c.Seq), slog.String("head_hash", c.HeadHash), slog.Int64("keyed_from", c.KeyedFrom),
		slog.String("time", c.Time.UTC().Format(timeLayout)), slog.String("key_id", c.KeyID), slog.String("public_key", c.PublicKey),
		slog.String("signature", c.Signature))
}

// ReadCheckpointFile reads a checkpoint file such as the data dir's
// audit.checkpoint. A missing file is an error matching fs.ErrNotExist.
func ReadCheckpointFile(path string) (Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: read checkpoint %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxCheckpointSize+1))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: read checkpoint %s: %w", path, err)
	}
	c, err := ParseCheckpoint(data)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: read checkpoint %s: %w", path, err)
	}
	return c, nil
}

// writeCheckpointFile replaces path with c atomically: a synced temporary
// file in the same directory, renamed over path, and the directory synced.
func writeCheckpointFile(path string, c Checkpoint) (err error) {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func toStoreCheckpoint(c Checkpoint) store.AuditCheckpoint {
	return store.AuditCheckpoint{Seq: c.Seq, HeadHash: c.HeadHash, KeyedFrom: c.KeyedFrom, Time: c.Time, KeyID: c.KeyID, Signature: c.Signature}
}

// fromStoreCheckpoint completes a stored checkpoint with the public key
// the database records for its key id (pubs), when it has one.
func fromStoreCheckpoint(c store.AuditCheckpoint, pubs map[string]string) Checkpoint {
	return Checkpoint{Seq: c.Seq, HeadHash: c.HeadHash, KeyedFrom: c.KeyedFrom, Time: c.Time, KeyID: c.KeyID, PublicKey: pubs[c.KeyID], Signature: c.Signature}
}
