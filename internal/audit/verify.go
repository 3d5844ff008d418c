package audit

import (
	"context"
	"fmt"
)

// Verification is the outcome of walking the chain.
type Verification struct {
	// OK is true when every record and the head are intact.
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
}

// Verify walks the whole chain, oldest first, and reports the first record
// that was edited, deleted, inserted or reordered.
func (l *Log) Verify(ctx context.Context) (Verification, error) {
	head, err := l.store.AuditHead(ctx)
	if err != nil {
		return Verification{}, fmt.Errorf("audit: verify: %w", err)
	}
	v := Verification{HeadSeq: head.Seq, HeadHash: head.Hash}
	fail := func(seq int64, format string, args ...any) (Verification, error) {
		v.FirstBadSeq = seq
		v.Problem = fmt.Sprintf(format, args...)
		return v, nil
	}
	var prevSeq int64
	prevHash := ""
	f := Filter{Ascending: true, Limit: 1000}
	for {
		page, err := l.List(ctx, f)
		if err != nil {
			return Verification{}, fmt.Errorf("audit: verify: %w", err)
		}
		for _, r := range page {
			v.Records++
			if r.Seq != prevSeq+1 {
				return fail(prevSeq+1, "record %d is missing: the chain jumps from %d to %d (deleted or reordered)", prevSeq+1, prevSeq, r.Seq)
			}
			if r.PrevHash != prevHash {
				return fail(r.Seq, "record %d does not follow record %d: its prev_hash %.16s… is not %.16s… (a record before it was changed, removed or swapped)", r.Seq, prevSeq, r.PrevHash, prevHash)
			}
			want, err := Hash(r)
			if err != nil {
				return Verification{}, err
			}
			if want != r.Hash {
				return fail(r.Seq, "record %d was altered: its content hashes to %.16s…, not the stored %.16s…", r.Seq, want, r.Hash)
			}
			prevSeq, prevHash = r.Seq, r.Hash
		}
		if len(page) < f.Limit {
			break
		}
		f.AfterSeq = page[len(page)-1].Seq
	}
	if prevSeq != head.Seq || prevHash != head.Hash {
		return fail(prevSeq+1, "the chain ends at record %d but the head says %d: records at the end were removed (or the head was edited)", prevSeq, head.Seq)
	}
	v.OK = true
	return v, nil
}
