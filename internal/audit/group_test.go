package audit_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// allTargets returns every stored record's target, and fails on a
// duplicate.
func allTargets(t testing.TB, log *audit.Log) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	f := audit.Filter{Ascending: true, Limit: 1000}
	for {
		page, err := log.List(context.Background(), f)
		require.NoError(t, err)
		for _, r := range page {
			_, dup := got[r.Target]
			require.False(t, dup, "target %s stored twice", r.Target)
			got[r.Target] = r.Seq
		}
		if len(page) < f.Limit {
			return got
		}
		f.AfterSeq = page[len(page)-1].Seq
	}
}

var errRecordTest = errors.New("the change failed")

// TestGroupedRecordsKeepChainLinear appends from many goroutines at once,
// through Record and through grouped transactions of which some append and
// then fail: the chain verifies and holds exactly the successful records.
func TestGroupedRecordsKeepChainLinear(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		log := audit.New(st, nil)
		const writers, each = 16, 30
		var wg sync.WaitGroup
		var mu sync.Mutex
		want := map[string]bool{}
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					target := fmt.Sprintf("w%d/%d", w, i)
					var err error
					switch i % 6 {
					case 0: // appends, then the change it records fails
						err = st.InTxGrouped(ctx, func(tx *store.Tx) error {
							if _, err := log.Append(ctx, tx, audit.Entry{Actor: alice, Action: "test.write", Target: target}); err != nil {
								return err
							}
							return errRecordTest
						})
						require.ErrorIs(t, err, errRecordTest)
					case 1: // refused before any statement
						err = log.Record(ctx, audit.Entry{Actor: alice, Target: target})
						require.Error(t, err)
					default:
						err = log.Record(ctx, audit.Entry{Actor: alice, Action: "test.write", Target: target})
						require.NoError(t, err)
					}
					if err == nil {
						mu.Lock()
						want[target] = true
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		v, err := log.Verify(ctx)
		require.NoError(t, err)
		require.True(t, v.OK, v.Problem)
		require.Equal(t, int64(len(want)), v.Records)
		require.Equal(t, int64(writers*each*4/6), v.Records)
		got := allTargets(t, log)
		require.Len(t, got, len(want))
		for target := range want {
			require.Contains(t, got, target)
		}
	})
}

// TestGroupedRecordPanicAndCancel: a panic in one grouped append and a
// caller that gives up leave the chain intact and the writer serving.
func TestGroupedRecordPanicAndCancel(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		log := audit.New(st, nil)
		require.NoError(t, log.Record(ctx, audit.Entry{Actor: alice, Action: "test.write", Target: "a"}))
		require.PanicsWithValue(t, "boom", func() {
			_ = st.InTxGrouped(ctx, func(tx *store.Tx) error {
				if _, err := log.Append(ctx, tx, audit.Entry{Actor: alice, Action: "test.write", Target: "panicked"}); err != nil {
					return err
				}
				panic("boom")
			})
		})
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		require.ErrorIs(t, log.Record(cctx, audit.Entry{Actor: alice, Action: "test.write", Target: "cancelled"}), context.Canceled)
		require.NoError(t, log.Record(ctx, audit.Entry{Actor: alice, Action: "test.write", Target: "b"}))
		v, err := log.Verify(ctx)
		require.NoError(t, err)
		require.True(t, v.OK, v.Problem)
		require.Equal(t, int64(2), v.Records)
		require.Equal(t, map[string]int64{"a": 1, "b": 2}, allTargets(t, log))
	})
}

// envCrashChild makes the test binary the child of
// TestGroupCommitSurvivesKill: it appends to the SQLite database named by
// the variable until it is killed.
const envCrashChild = "TRUSTFLOW_TEST_GROUP_CRASH_DB"

// crashChild appends pairs of records from many goroutines, each pair in
// one grouped transaction, and prints "ack <seq> <target>" for the second
// record of a pair once InTxGrouped has returned nil.
func crashChild(path string) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Dialect: store.SQLite, DSN: path})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := audit.New(st, nil)
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	for w := range 24 {
		go func() {
			for i := 0; ; i++ {
				target := fmt.Sprintf("%s/%d/%d", run, w, i)
				var seq int64
				err := st.InTxGrouped(ctx, func(tx *store.Tx) error {
					if _, err := log.Append(ctx, tx, audit.Entry{Actor: alice, Action: "crash.first", Target: target + "/a"}); err != nil {
						return err
					}
					if i%5 == 4 {
						return errRecordTest // some fail, after writing
					}
					r, err := log.Append(ctx, tx, audit.Entry{Actor: alice, Action: "crash.second", Target: target + "/b"})
					seq = r.Seq
					return err
				})
				if errors.Is(err, errRecordTest) {
					continue
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(out, "ack %d %s\n", seq, target)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	select {}
}

// TestGroupCommitSurvivesKill runs a child process that appends in grouped
// transactions from many goroutines and kills it with SIGKILL at a random
// moment, several times over one database. After each kill every
// acknowledged pair is stored, the chain verifies up to its head, and no
// transaction is visible in part: every pair has both records or neither,
// no failed pair left a record, and the records are exactly 1..head.
func TestGroupCommitSurvivesKill(t *testing.T) {
	if path := os.Getenv(envCrashChild); path != "" {
		crashChild(path)
		return
	}
	if testing.Short() {
		t.Skip("runs a child process")
	}
	path := storetest.DSN(t, store.SQLite)
	acked := map[string]int64{}
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGroupCommitSurvivesKill$")
		cmd.Env = append(os.Environ(), envCrashChild+"="+path)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Kill once the child is acknowledging, after a random further while.
		first := <-lines
		require.NotEmpty(t, first, "round %d: the child acknowledged nothing", round)
		pending := []string{first}
		killAt := time.After(time.Duration(20+rand.IntN(300)) * time.Millisecond)
	read:
		for {
			select {
			case l := <-lines:
				pending = append(pending, l)
			case <-killAt:
				require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
				break read
			}
		}
		for l := range lines { // what it printed before it died
			pending = append(pending, l)
		}
		_ = cmd.Wait()
		for _, l := range pending {
			f := strings.Fields(l)
			require.Len(t, f, 3, "line %q", l)
			seq, err := strconv.ParseInt(f[1], 10, 64)
			require.NoError(t, err)
			acked[f[2]] = seq
		}

		ctx := context.Background()
		st, err := store.Open(ctx, store.Config{Dialect: store.SQLite, DSN: path})
		require.NoError(t, err)
		log := audit.New(st, nil)
		v, err := log.Verify(ctx)
		require.NoError(t, err)
		require.True(t, v.OK, "round %d: %s", round, v.Problem)
		got := allTargets(t, log)
		require.Equal(t, v.HeadSeq, int64(len(got)), "round %d: records are exactly 1..head", round)
		for target, seq := range acked {
			require.Equal(t, seq, got[target+"/b"], "round %d: acknowledged %s is stored at its seq", round, target)
			require.Equal(t, seq-1, got[target+"/a"], "round %d: acknowledged %s keeps its first record", round, target)
		}
		for target, seq := range got {
			base, half := target[:len(target)-2], target[len(target)-1:]
			i, err := strconv.Atoi(base[strings.LastIndexByte(base, '/')+1:])
			require.NoError(t, err)
			require.NotEqual(t, 4, i%5, "round %d: failed pair %s left a record", round, base)
			other := map[string]string{"a": "/b", "b": "/a"}[half]
			oseq, ok := got[base+other]
			require.True(t, ok, "round %d: %s is stored without its pair", round, target)
			require.Equal(t, int64(1), max(seq, oseq)-min(seq, oseq), "round %d: pair %s is consecutive", round, base)
		}
		t.Logf("round %d: %d records, %d pairs acknowledged in all", round, len(got), len(acked))
		require.NoError(t, st.Close())
	}
}
