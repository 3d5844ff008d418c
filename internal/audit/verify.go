package audit

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
)

// Verification is the outcome of walking the chain.
type Verification struct {
	// OK is true when every record and the head are intact, and the chain
	// matches every checkpoint checked.
	OK bool `json:"ok"`
	// Records is how many records were checked.
	Records int64 `json:"records"`
	// HeadSeq and HeadHash are the chain head as stored.
	HeadSeq  int64  `json:"head_seq"`
	HeadHash string `json:"head_hash"`
	// FirstBadSeq is the first record found broken (0 when OK).
	FirstBadSeq int64 `json:"first_bad_seq,omitempty"`
	// Problem says what is wrong with it.
	Problem string `json:"problem,omitempty"`
	// KeyID is the audit key the chain is keyed under, and KeyedFrom the
	// first record chained with it (earlier ones keep their SHA-256 link).
	// Both are empty for a chain without an audit key.
	KeyID     string `json:"key_id,omitempty"`
	KeyedFrom int64  `json:"keyed_from,omitempty"`
	// Checkpoints is how many signed checkpoints the chain was checked
	// against (the database's, the data dir's copy, a given one).
	Checkpoints int `json:"checkpoints,omitempty"`
	// CheckpointSeq is the record the newest of them covers (the given
	// one's, when one was given), CheckpointTime when it was signed, and
	// CheckpointSource where it came from: "given", "data dir" or
	// "database".
	CheckpointSeq    int64      `json:"checkpoint_seq,omitempty"`
	CheckpointTime   *time.Time `json:"checkpoint_time,omitempty"`
	CheckpointSource string     `json:"checkpoint_source,omitempty"`
}

// walker checks records in seq order: each follows its predecessor, is
// keyed as the chain's keyed_from says, carries a valid hash or MAC, and
// passes through every anchor on its way.
type walker struct {
	key       *Key
	keyedFrom int64 // 0: the database records no audit key
	prevSeq   int64
	prevHash  string
	// skipLink leaves the next record's prev_hash unchecked (a segment
	// that starts mid-chain).
	skipLink bool
	anchors  []anchor // sorted by Seq
	next     int      // first anchor not yet passed
	records  int64
}

func (l *Log) newWalker(keyedFrom int64) *walker {
	return &walker{key: l.key, keyedFrom: keyedFrom}
}

// step checks r; a problem names the first bad record.
func (w *walker) step(r Record) (int64, string) {
	w.records++
	if r.Seq != w.prevSeq+1 {
		return w.prevSeq + 1, fmt.Sprintf("record %d is missing: the chain jumps from %d to %d (deleted or reordered)", w.prevSeq+1, w.prevSeq, r.Seq)
	}
	if !w.skipLink && r.PrevHash != w.prevHash {
		return r.Seq, fmt.Sprintf("record %d does not follow record %d: its prev_hash %.16s… is not %.16s… (a record before it was changed, removed or swapped)", r.Seq, w.prevSeq, r.PrevHash, w.prevHash)
	}
	w.skipLink = false
	keyed := w.keyedFrom > 0 && r.Seq >= w.keyedFrom
	switch {
	case !keyed && r.KeyID != "" && w.keyedFrom == 0:
		return r.Seq, fmt.Sprintf("record %d is keyed under audit key %s, but the database records no audit key (its audit_keys row was deleted)", r.Seq, r.KeyID)
	case !keyed && r.KeyID != "":
		return r.Seq, fmt.Sprintf("record %d is keyed under audit key %s, but the database says the chain is keyed only from record %d (keyed_from was moved)", r.Seq, r.KeyID, w.keyedFrom)
	case !keyed:
		want, err := Hash(r)
		if err != nil {
			return r.Seq, err.Error()
		}
		if want != r.Hash {
			return r.Seq, fmt.Sprintf("record %d was altered: its content hashes to %.16s…, not the stored %.16s…", r.Seq, want, r.Hash)
		}
	case r.KeyID == "":
		return r.Seq, fmt.Sprintf("record %d is not keyed, but the chain is keyed from record %d: a keyed record was replaced by an unkeyed one", r.Seq, w.keyedFrom)
	case w.key == nil:
		return r.Seq, fmt.Sprintf("record %d is keyed under audit key %s, which this log does not hold; verify through the server", r.Seq, r.KeyID)
	case r.KeyID != w.key.id:
		return r.Seq, fmt.Sprintf("record %d is keyed under audit key %s, not this deployment's %s: it was forged with another key", r.Seq, r.KeyID, w.key.id)
	default:
		// The expected MAC is never shown: it would let someone who can
		// write the database forge records through this report.
		want, err := w.key.MAC(r)
		if err != nil {
			return r.Seq, err.Error()
		}
		if want != r.Hash {
			return r.Seq, fmt.Sprintf("record %d was altered: its MAC does not verify under audit key %s", r.Seq, w.key.id)
		}
	}
	for w.next < len(w.anchors) && w.anchors[w.next].Seq <= r.Seq {
		a := w.anchors[w.next]
		w.next++
		if a.Seq == r.Seq && a.Hash != r.Hash {
			return r.Seq, fmt.Sprintf("record %d does not match %s: it signed %.16s…, the record holds %.16s… (the record, or one before it, was rewritten)", r.Seq, a.describe(), a.Hash, r.Hash)
		}
	}
	w.prevSeq, w.prevHash = r.Seq, r.Hash
	return 0, ""
}

// end checks the walk against the head and the anchors beyond the last
// record: one there means records at the end were removed.
func (w *walker) end(head store.AuditHead, haveHead bool) (int64, string) {
	if !haveHead {
		return max(w.prevSeq, 1), fmt.Sprintf("the chain head row (audit_head) is missing, so nothing says where the chain ends; the last record is %d (the row was deleted)", w.prevSeq)
	}
	for _, a := range w.anchors[w.next:] {
		if a.Seq > w.prevSeq {
			return w.prevSeq + 1, fmt.Sprintf("%s removed: the chain ends at record %d, but %s covers record %d (records at the end were removed and the head moved back)",
				span(w.prevSeq+1, a.Seq), w.prevSeq, a.describe(), a.Seq)
		}
	}
	if w.prevSeq != head.Seq || w.prevHash != head.Hash {
		return w.prevSeq + 1, fmt.Sprintf("the chain ends at record %d but the head says %d: records at the end were removed (or the head was edited)", w.prevSeq, head.Seq)
	}
	return 0, ""
}

// span names records from to to: "record 7 was" or "records 7 to 9 were".
func span(from, to int64) string {
	if from == to {
		return fmt.Sprintf("record %d was", from)
	}
	return fmt.Sprintf("records %d to %d were", from, to)
}

// Verify walks the whole chain, oldest first, and reports the first record
// that was edited, deleted, inserted or reordered, or that does not match a
// checkpoint. A keyed Log checks every checkpoint in the database and its
// data dir's copy: a removal of records that any of them covers is found.
func (l *Log) Verify(ctx context.Context) (Verification, error) {
	return l.verify(ctx, nil)
}

// VerifyCheckpoint is Verify with c as one more checkpoint, reported as
// CheckpointSeq: it proves that no record up to c.Seq was removed or
// altered since c was signed. A checkpoint of another deployment, or one
// whose signature does not verify, is refused with an *errs.Error (see
// [Checkpoint.VerifyBy]) before anything is walked.
func (l *Log) VerifyCheckpoint(ctx context.Context, c Checkpoint) (Verification, error) {
	if l.key == nil {
		return Verification{}, errNotKeyed()
	}
	if err := c.VerifyBy(l.key); err != nil {
		return Verification{}, err
	}
	return l.verify(ctx, &c)
}

func (l *Log) verify(ctx context.Context, given *Checkpoint) (Verification, error) {
	var v Verification
	fail := func(seq int64, problem string) (Verification, error) {
		v.FirstBadSeq, v.Problem = seq, problem
		return v, nil
	}
	head, err := l.store.AuditHead(ctx)
	haveHead := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return Verification{}, fmt.Errorf("audit: verify: %w", err)
	}
	v.HeadSeq, v.HeadHash = head.Seq, head.Hash
	keys, err := l.store.AuditKeys(ctx)
	if err != nil {
		return Verification{}, fmt.Errorf("audit: verify: %w", err)
	}
	var keyedFrom int64
	switch {
	case len(keys) > 1:
		return fail(1, fmt.Sprintf("the database records %d audit keys; the chain is keyed under exactly one", len(keys)))
	case len(keys) == 1:
		keyedFrom = keys[0].KeyedFrom
		v.KeyID, v.KeyedFrom = keys[0].ID, keyedFrom
		if l.key != nil && keys[0].ID != l.key.id {
			return fail(keyedFrom, fmt.Sprintf("the database records audit key %s, not this deployment's %s (the audit_keys row was replaced)", keys[0].ID, l.key.id))
		}
	case l.keyedFrom > 0:
		return fail(l.keyedFrom, fmt.Sprintf("the database records no audit key, but the chain was keyed under %s from record %d when this node started (the audit_keys row was deleted)", l.key.id, l.keyedFrom))
	}
	if l.keyedFrom > 0 && keyedFrom != l.keyedFrom {
		return fail(min(keyedFrom, l.keyedFrom), fmt.Sprintf("the database says the chain is keyed from record %d, but it was keyed from record %d when this node started (keyed_from was moved)", keyedFrom, l.keyedFrom))
	}

	var anchors []anchor
	if l.key != nil {
		anchors, err = l.anchors(ctx, given)
		if err != nil {
			var broken *BrokenError
			if errors.As(err, &broken) {
				return fail(broken.Seq, broken.Problem)
			}
			return Verification{}, err
		}
		for _, a := range anchors {
			if a.KeyedFrom != keyedFrom {
				return fail(min(a.KeyedFrom, keyedFrom), fmt.Sprintf("%s says the chain is keyed from record %d, but the database says from record %d (keyed_from was moved)", a.describe(), a.KeyedFrom, keyedFrom))
			}
		}
		v.Checkpoints = len(anchors)
		if len(anchors) > 0 {
			newest := anchors[len(anchors)-1]
			if given != nil {
				newest = anchorOf(*given, "given")
			}
			t := newest.Time
			v.CheckpointSeq, v.CheckpointTime, v.CheckpointSource = newest.Seq, &t, newest.Source
		}
	}

	w := l.newWalker(keyedFrom)
	w.anchors = anchors
	f := Filter{Ascending: true, Limit: 1000}
	for {
		page, err := l.List(ctx, f)
		if err != nil {
			return Verification{}, fmt.Errorf("audit: verify: %w", err)
		}
		for _, r := range page {
			if seq, problem := w.step(r); problem != "" {
				v.Records = w.records
				return fail(seq, problem)
			}
		}
		if len(page) < f.Limit {
			break
		}
		f.AfterSeq = page[len(page)-1].Seq
	}
	v.Records = w.records
	if seq, problem := w.end(head, haveHead); problem != "" {
		return fail(seq, problem)
	}
	v.OK = true
	return v, nil
}

// anchors returns every checkpoint the chain must pass through, sorted by
// seq: each in the database, the data dir's copy and given. One that does
// not verify under the key is a *BrokenError.
func (l *Log) anchors(ctx context.Context, given *Checkpoint) ([]anchor, error) {
	var out []anchor
	pubs := map[string]string{l.key.id: base64.StdEncoding.EncodeToString(l.key.pub)}
	var after int64
	for {
		page, err := l.store.AuditCheckpoints(ctx, after, 1000)
		if err != nil {
			return nil, fmt.Errorf("audit: verify: %w", err)
		}
		for _, sc := range page {
			c := fromStoreCheckpoint(sc, pubs)
			if err := c.VerifyBy(l.key); err != nil {
				e, _ := errs.As(err)
				return nil, &BrokenError{Seq: c.Seq, Problem: fmt.Sprintf("the database's checkpoint of record %d is not a valid checkpoint of this deployment (forged or altered): %s", c.Seq, e.Public())}
			}
			out = append(out, anchorOf(c, "database"))
		}
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].Seq
	}
	if f, ok, err := l.fileCheckpoint(); err != nil {
		return nil, err
	} else if ok {
		out = append(out, anchorOf(f, "data dir"))
	}
	if given != nil {
		out = append(out, anchorOf(*given, "given"))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

// Status is what `audit status` shows: the audit key (its id and public
// key, never a secret), where the chain is keyed from, the head, and the
// newest checkpoints.
type Status struct {
	KeyID string `json:"key_id"`
	// PublicKey is the raw Ed25519 checkpoint public key in standard
	// base64, and PublicKeyPEM the same key as a PEM SubjectPublicKeyInfo
	// (what `openssl pkeyutl -verify -pubin` reads).
	PublicKey    string `json:"public_key"`
	PublicKeyPEM string `json:"public_key_pem"`
	KeyedFrom    int64  `json:"keyed_from"`
	HeadSeq      int64  `json:"head_seq"`
	HeadHash     string `json:"head_hash"`
	// Latest is the database's newest checkpoint, and DataDir this node's
	// copy (data dir/audit.checkpoint); nil when there is none.
	Latest  *Checkpoint `json:"latest_checkpoint,omitempty"`
	DataDir *Checkpoint `json:"data_dir_checkpoint,omitempty"`
	// CheckpointEvery and CheckpointRecords are when the node makes the
	// next periodic checkpoint.
	CheckpointEvery   string `json:"checkpoint_every"`
	CheckpointRecords int64  `json:"checkpoint_records"`
}

// Status reports the audit key and the checkpoints. It does not verify
// the chain (Verify does).
func (l *Log) Status(ctx context.Context) (Status, error) {
	if l.key == nil {
		return Status{}, errNotKeyed()
	}
	pemKey, err := publicKeyPEM(l.key.pub)
	if err != nil {
		return Status{}, err
	}
	s := Status{KeyID: l.key.id, PublicKey: base64.StdEncoding.EncodeToString(l.key.pub), PublicKeyPEM: pemKey, KeyedFrom: l.keyedFrom,
		CheckpointEvery: l.cfg.CheckpointEvery.String(), CheckpointRecords: l.cfg.CheckpointRecords}
	head, err := l.store.AuditHead(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("audit: status: %w", err)
	}
	s.HeadSeq, s.HeadHash = head.Seq, head.Hash
	sc, err := l.store.LatestAuditCheckpoint(ctx)
	switch {
	case err == nil:
		c := fromStoreCheckpoint(sc, map[string]string{l.key.id: s.PublicKey})
		s.Latest = &c
	case !errors.Is(err, store.ErrNotFound):
		return Status{}, fmt.Errorf("audit: status: %w", err)
	}
	if path := l.checkpointFile(); path != "" {
		if c, err := ReadCheckpointFile(path); err == nil {
			s.DataDir = &c
		}
	}
	return s, nil
}
