package audit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
)

// Codes of checkpointing errors.
const (
	CodeNotKeyed    = "audit_not_keyed"
	CodeChainBroken = "audit_chain_broken"
)

// BrokenError means the chain failed verification, so no checkpoint was
// signed over it. It is an *errs.Error of kind Conflict with code
// audit_chain_broken (see AsError).
type BrokenError struct {
	// Seq is the first record found broken.
	Seq int64
	// Problem says what is wrong with it.
	Problem string
}

func (e *BrokenError) Error() string {
	return fmt.Sprintf("audit: audit chain broken at record %d: %s; no checkpoint was signed", e.Seq, e.Problem)
}

// Unwrap returns the public error, a Conflict naming the record, so that
// errors.As finds an *errs.Error.
func (e *BrokenError) Unwrap() error {
	return &errs.Error{Kind: errs.Conflict, Code: CodeChainBroken, Op: "audit: checkpoint",
		Message: fmt.Sprintf("audit chain broken at record %d: %s; no checkpoint was signed over it", e.Seq, e.Problem),
		Hint:    "run `trustflow audit verify` and compare with your exported copy; the checkpoints signed before the break still stand"}
}

func errNotKeyed() *errs.Error {
	return &errs.Error{Kind: errs.Unavailable, Code: CodeNotKeyed, Op: "audit: checkpoint",
		Message: "this server's audit log has no audit key, so it cannot sign checkpoints",
		Hint:    "run trustflow serve, which keys the chain (--audit-key)"}
}

// Checkpoint verifies the records appended since the latest checkpoint this
// node trusts (the newer of its data dir's copy and the database's newest,
// each validly signed), then signs the head and keeps the checkpoint in
// the database, in the data dir (audit.checkpoint, atomically replaced)
// and in the log stream. With by set (an on-demand checkpoint), it first
// appends an audit.checkpoint record by that actor, so the checkpoint
// covers its own request. A chain that fails verification is never signed:
// the error is a *BrokenError.
func (l *Log) Checkpoint(ctx context.Context, by *Actor) (Checkpoint, error) {
	cp, err := l.checkpoint(ctx, by)
	l.noteBroken(err)
	return cp, err
}

// noteBroken logs a broken chain at error level, once per distinct
// problem, so that a tampered database is an alarm and not a flood.
func (l *Log) noteBroken(err error) {
	var broken *BrokenError
	if !errors.As(err, &broken) {
		return
	}
	l.problemMu.Lock()
	defer l.problemMu.Unlock()
	if broken.Problem == l.lastProblem {
		return
	}
	l.lastProblem = broken.Problem
	l.log.Error("audit chain broken: no checkpoint signed", "first_bad_seq", broken.Seq, "problem", broken.Problem)
}

func (l *Log) checkpoint(ctx context.Context, by *Actor) (Checkpoint, error) {
	if l.key == nil {
		return Checkpoint{}, errNotKeyed()
	}
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	base, err := l.trustedBase(ctx)
	if err != nil {
		return Checkpoint{}, err
	}
	head, err := l.store.AuditHead(ctx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint: %w", err)
	}
	// Most of the segment is verified before the head is locked, so that
	// appends wait only for the records that arrive meanwhile.
	if err := l.verifySegment(ctx, l.store.ListAudit, base, head); err != nil {
		return Checkpoint{}, err
	}
	var cp Checkpoint
	err = l.store.InTx(ctx, func(tx *store.Tx) error {
		locked, err := tx.LockAuditHead(ctx)
		if err != nil {
			return err
		}
		if locked.Seq < head.Seq {
			return &BrokenError{Seq: locked.Seq + 1, Problem: fmt.Sprintf("the head moved back from record %d to %d while the checkpoint was made: records at the end were removed", head.Seq, locked.Seq)}
		}
		if locked.Seq > head.Seq {
			if err := l.verifySegment(ctx, tx.ListAudit, anchor{Seq: head.Seq, Hash: head.Hash, Source: "the verified head"}, locked); err != nil {
				return err
			}
		}
		if by != nil {
			details, err := json.Marshal(map[string]any{"after_seq": locked.Seq})
			if err != nil {
				return err
			}
			rec, err := l.appendAt(ctx, tx, locked, *by, "audit.checkpoint", "audit/checkpoint", OutcomeSuccess, details)
			if err != nil {
				return err
			}
			locked = store.AuditHead{Seq: rec.Seq, Hash: rec.Hash, KeyID: rec.KeyID}
		}
		cp = l.key.sign(locked.Seq, locked.Hash, l.keyedFrom, l.clock.Now())
		inserted, err := tx.PutAuditCheckpoint(ctx, toStoreCheckpoint(cp))
		if err != nil || inserted {
			return err
		}
		// The head was checkpointed already (by another node, or by a
		// call with nothing appended since): that one is the record.
		sc, err := tx.AuditCheckpoint(ctx, locked.Seq)
		if err != nil {
			return err
		}
		cp = fromStoreCheckpoint(sc, map[string]string{l.key.id: cp.PublicKey})
		if err := cp.VerifyBy(l.key); err != nil {
			return &BrokenError{Seq: cp.Seq, Problem: "the database's checkpoint of record " + fmt.Sprint(cp.Seq) + " is not a valid checkpoint of this deployment (forged or altered)"}
		}
		return nil
	})
	if err != nil {
		var broken *BrokenError
		if errors.As(err, &broken) {
			return Checkpoint{}, broken
		}
		return Checkpoint{}, fmt.Errorf("audit: checkpoint: %w", err)
	}
	l.log.Info("audit checkpoint", "checkpoint", cp)
	if err := l.keepFile(cp); err != nil {
		return cp, err
	}
	return cp, nil
}

// keepFile replaces the data dir's checkpoint with c unless it holds a
// newer one. The caller holds cpMu.
func (l *Log) keepFile(c Checkpoint) error {
	path := l.checkpointFile()
	if path == "" {
		return nil
	}
	if cur, err := ReadCheckpointFile(path); err == nil && cur.Seq >= c.Seq && cur.VerifyBy(l.key) == nil {
		return nil
	}
	if err := writeCheckpointFile(path, c); err != nil {
		return fmt.Errorf("audit: keep checkpoint of record %d in %s: %w", c.Seq, path, err)
	}
	return nil
}

// anchor is a head the chain must pass through: record Seq has MAC Hash.
type anchor struct {
	Seq    int64
	Hash   string
	Time   time.Time
	Source string // "given", "data dir", "database", for messages
	// KeyedFrom is the checkpoint's keyed_from; 0 when it has none.
	KeyedFrom int64
}

func (a anchor) describe() string {
	if a.Time.IsZero() {
		return a.Source
	}
	return fmt.Sprintf("the checkpoint signed at %s (%s)", a.Time.UTC().Format(time.RFC3339), a.Source)
}

// trustedBase returns the newest checkpoint this node trusts, as the
// anchor a new checkpoint's segment starts from; without one, the record
// before the first keyed record (whose link is not checked: it commits to
// the unkeyed records, which Verify checks). A data dir copy or newest
// database checkpoint that does not verify under the key is a
// *BrokenError.
func (l *Log) trustedBase(ctx context.Context) (anchor, error) {
	base := anchor{Seq: l.keyedFrom - 1, Source: "the first keyed record"}
	if f, ok, err := l.fileCheckpoint(); err != nil {
		return anchor{}, err
	} else if ok && f.Seq > base.Seq {
		base = anchorOf(f, "data dir")
	}
	db, ok, err := l.latestDBCheckpoint(ctx)
	if err != nil {
		return anchor{}, err
	}
	if ok && db.Seq > base.Seq {
		base = anchorOf(db, "database")
	}
	return base, nil
}

func anchorOf(c Checkpoint, source string) anchor {
	return anchor{Seq: c.Seq, Hash: c.HeadHash, Time: c.Time, Source: source, KeyedFrom: c.KeyedFrom}
}

// fileCheckpoint reads the data dir's copy; ok is false when the node keeps
// none or has none yet. A copy that does not parse or verify is a
// *BrokenError: the anchor outside the database was replaced.
func (l *Log) fileCheckpoint() (Checkpoint, bool, error) {
	path := l.checkpointFile()
	if path == "" {
		return Checkpoint{}, false, nil
	}
	c, err := ReadCheckpointFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Checkpoint{}, false, nil
	}
	if err == nil {
		err = c.VerifyBy(l.key)
	}
	if err != nil {
		if e, ok := errs.As(err); ok && e.Kind != errs.Internal {
			return Checkpoint{}, false, &BrokenError{Seq: max(c.Seq, 1), Problem: "the data dir's checkpoint " + path + " is not a valid checkpoint of this deployment: " + e.Public()}
		}
		return Checkpoint{}, false, err
	}
	return c, true, nil
}

// latestDBCheckpoint returns the database's newest checkpoint, checked
// against the key.
func (l *Log) latestDBCheckpoint(ctx context.Context) (Checkpoint, bool, error) {
	sc, err := l.store.LatestAuditCheckpoint(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: checkpoint: %w", err)
	}
	c := fromStoreCheckpoint(sc, map[string]string{l.key.id: base64.StdEncoding.EncodeToString(l.key.pub)})
	if err := c.VerifyBy(l.key); err != nil {
		e, _ := errs.As(err)
		return Checkpoint{}, false, &BrokenError{Seq: c.Seq, Problem: "the database's newest checkpoint is not a valid checkpoint of this deployment (forged or altered): " + e.Public()}
	}
	return c, true, nil
}

// lister reads one page of records (the store's or a transaction's).
type lister func(ctx context.Context, f store.AuditFilter) ([]store.AuditRecord, error)

// verifySegment checks the keyed records from base to head: record
// base.Seq (when base.Hash is set) has base.Hash, every later one follows
// its predecessor, is keyed under the key and carries a valid MAC, and the
// last is the head. A problem is a *BrokenError.
func (l *Log) verifySegment(ctx context.Context, list lister, base anchor, head store.AuditHead) error {
	if head.Seq < base.Seq {
		return &BrokenError{Seq: head.Seq + 1, Problem: fmt.Sprintf("%s removed: the chain ends at record %d, but %s covers record %d",
			span(head.Seq+1, base.Seq), head.Seq, base.describe(), base.Seq)}
	}
	w := l.newWalker(l.keyedFrom)
	from := base.Seq
	if base.Hash != "" {
		w.anchors = []anchor{base}
		from = base.Seq - 1
	}
	w.prevSeq, w.skipLink = from, true
	f := store.AuditFilter{Ascending: true, AfterSeq: from, Limit: 1000}
	for {
		page, err := list(ctx, f)
		if err != nil {
			return fmt.Errorf("audit: checkpoint: %w", err)
		}
		for _, sr := range page {
			if sr.Seq > head.Seq {
				break
			}
			if seq, problem := w.step(fromStore(sr)); problem != "" {
				return &BrokenError{Seq: seq, Problem: problem}
			}
		}
		if len(page) < f.Limit || page[len(page)-1].Seq >= head.Seq {
			break
		}
		f.AfterSeq = page[len(page)-1].Seq
	}
	if seq, problem := w.end(head, true); problem != "" {
		return &BrokenError{Seq: seq, Problem: problem}
	}
	return nil
}

// Tick makes a checkpoint when one is due: records were appended since the
// latest checkpoint, and CheckpointEvery has passed since it or
// CheckpointRecords records were appended. Otherwise, when the database
// holds a newer checkpoint (another node's) than the data dir, it verifies
// the records up to it and copies it to the data dir, so every node keeps a
// fresh anchor. made reports whether Tick signed a checkpoint.
func (l *Log) Tick(ctx context.Context) (made bool, err error) {
	made, err = l.tick(ctx)
	l.noteBroken(err)
	return made, err
}

func (l *Log) tick(ctx context.Context) (bool, error) {
	if l.key == nil {
		return false, errNotKeyed()
	}
	base, err := l.trustedBase(ctx)
	if err != nil {
		return false, err
	}
	head, err := l.store.AuditHead(ctx)
	if err != nil {
		return false, fmt.Errorf("audit: checkpoint: %w", err)
	}
	due := head.Seq > base.Seq && (base.Time.IsZero() || l.clock.Now().Sub(base.Time) >= l.cfg.CheckpointEvery || head.Seq-base.Seq >= l.cfg.CheckpointRecords)
	if due {
		if _, err := l.checkpoint(ctx, nil); err != nil {
			return false, err
		}
		return true, nil
	}
	return false, l.adopt(ctx)
}

// adopt copies the database's newest checkpoint to the data dir when it is
// newer than the copy there, after checking the records between them.
func (l *Log) adopt(ctx context.Context) error {
	if l.checkpointFile() == "" {
		return nil
	}
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	db, ok, err := l.latestDBCheckpoint(ctx)
	if err != nil || !ok {
		return err
	}
	base := anchor{Seq: l.keyedFrom - 1, Source: "the first keyed record"}
	f, fok, err := l.fileCheckpoint()
	if err != nil {
		return err
	}
	if fok {
		if f.Seq >= db.Seq {
			return nil
		}
		base = anchorOf(f, "data dir")
	}
	if err := l.verifySegment(ctx, l.store.ListAudit, base, store.AuditHead{Seq: db.Seq, Hash: db.HeadHash, KeyID: l.key.id}); err != nil {
		return err
	}
	return l.keepFile(db)
}

// Start runs Tick every PollEvery until Stop. Problems are logged: a
// broken chain at error level, naming the record.
func (l *Log) Start(ctx context.Context) error {
	if l.key == nil {
		return errNotKeyed()
	}
	if !l.started.CompareAndSwap(false, true) {
		return errors.New("audit: checkpointer already started")
	}
	go func() {
		defer close(l.done)
		t := time.NewTicker(l.cfg.PollEvery)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if _, err := l.Tick(ctx); err != nil && ctx.Err() == nil {
					var broken *BrokenError
					if !errors.As(err, &broken) { // Tick logged a broken chain
						l.log.Warn("audit checkpoint failed", "err", err)
					}
				}
			}
		}
	}()
	return nil
}

// Stop ends the checkpointer and waits for it. It is idempotent and safe
// without Start.
func (l *Log) Stop() {
	l.stopOnce.Do(func() { close(l.stop) })
	if l.started.Load() {
		<-l.done
	}
}
