package custody_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/custody"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// node opens a manager over st with the KEK file at path, as one node of
// several would.
func node(t *testing.T, st *store.Store, path string) (*custody.Manager, error) {
	t.Helper()
	return custody.Open(context.Background(), custody.Config{Store: st, Audit: audit.New(st, nil), Source: seal.FileSource{Path: path},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RefreshEvery: 10 * time.Millisecond, BatchSize: 2})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(to), 0o700))
	require.NoError(t, os.WriteFile(to, b, 0o600))
}

// sealWebhooks stores n flows whose webhook secrets are sealed by kr.
func sealWebhooks(t *testing.T, st *store.Store, kr *seal.Keyring, n int) []string {
	t.Helper()
	var names []string
	for i := range n {
		name := "flow-" + string(rune('a'+i))
		blob, err := kr.Seal([]byte("whsec-"+name), store.WebhookSecretAAD(name))
		require.NoError(t, err)
		_, err = st.DB().ExecContext(context.Background(),
			"INSERT INTO flows (name, current_version, trigger_kind, webhook_secret, kek_id, created_at, updated_at) VALUES ($1, 1, 'webhook', $2, $3, 0, 0)",
			name, blob, kr.CurrentID())
		require.NoError(t, err)
		names = append(names, name)
	}
	return names
}

func requireWebhooksOpen(t *testing.T, st *store.Store, kr *seal.Keyring, names []string) {
	t.Helper()
	for _, name := range names {
		var blob []byte
		require.NoError(t, st.DB().QueryRowContext(context.Background(), "SELECT webhook_secret FROM flows WHERE name = $1", name).Scan(&blob))
		plain, err := kr.Open(blob, store.WebhookSecretAAD(name))
		require.NoError(t, err, name)
		require.Equal(t, "whsec-"+name, string(plain))
	}
}

// Two nodes on one database: a rotation on one leaves the other not ready
// (and sealing nothing) until its source has the new key, then it resumes
// without a restart; a node that shares the rotating node's source follows
// at once.
func TestNodesFollowARotation(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		dir := t.TempDir()
		pathA, pathB := filepath.Join(dir, "a", "kek"), filepath.Join(dir, "b", "kek")
		a, err := node(t, st, pathA)
		require.NoError(t, err)
		require.True(t, a.Created)
		first := a.ActiveID()

		// A node with no key, or another key, refuses to start.
		_, err = node(t, st, pathB)
		var wrong *custody.WrongKEKError
		require.ErrorAs(t, err, &wrong)
		require.Equal(t, custody.WrongKEKError{Expected: first, Source: "file://" + pathB, Holds: []string{}}, *wrong)
		_, statErr := os.Stat(pathB)
		require.ErrorIs(t, statErr, os.ErrNotExist, "no key was created for a database that has one")

		copyFile(t, pathA, pathB)
		b, err := node(t, st, pathB)
		require.NoError(t, err)
		require.False(t, b.Created)
		shared, err := node(t, st, pathA)
		require.NoError(t, err)
		names := sealWebhooks(t, st, a.Keyring(), 5)

		var mu sync.Mutex
		var progress [][2]int
		res, err := a.Rotate(ctx, audit.System, func(done, total int) {
			mu.Lock()
			progress = append(progress, [2]int{done, total})
			mu.Unlock()
		})
		require.NoError(t, err)
		second := res.ToKEK
		require.Equal(t, custody.Result{FromKEKs: []string{first}, ToKEK: second, Keys: 5, Total: 5, Verified: 5,
			Columns: map[string]int{"webhook secret": 5}}, res)
		require.Equal(t, [][2]int{{2, 5}, {4, 5}, {5, 5}}, progress, "batches of two")
		requireWebhooksOpen(t, st, seal.NewKeyring(a.Keyring().KEKs()[0]), names)

		// b lacks the new key: not ready, and it seals nothing.
		require.NoError(t, b.Refresh(ctx))
		require.ErrorAs(t, b.Ready(), &wrong)
		require.Equal(t, second, wrong.Expected)
		require.Equal(t, "", b.Keyring().CurrentID())
		_, err = b.Keyring().Seal([]byte("x"), nil)
		require.ErrorContains(t, err, "keyring has no current key-encryption key")
		st2, err := b.Status(ctx)
		require.NoError(t, err)
		require.False(t, st2.Ready)
		require.Equal(t, second, st2.ActiveKEK)
		require.Equal(t, map[string]int{second: 5}, st2.Sealed["flows.webhook_secret"])

		// The shared node loads the new key from the file it shares.
		require.NoError(t, shared.Refresh(ctx))
		require.NoError(t, shared.Ready())
		require.Equal(t, second, shared.Keyring().CurrentID())

		// Once b's file has the key, b is ready again, no restart needed.
		copyFile(t, pathA, pathB)
		require.NoError(t, b.Start(ctx))
		t.Cleanup(b.Stop)
		require.Eventually(t, func() bool { return b.Ready() == nil }, 5*time.Second, 10*time.Millisecond)
		require.Equal(t, second, b.Keyring().CurrentID())
		requireWebhooksOpen(t, st, b.Keyring(), names)
		b.Stop()
		b.Stop() // idempotent

		recs, err := st.KEKs(ctx)
		require.NoError(t, err)
		states := map[string]string{}
		for _, r := range recs {
			states[r.ID] = r.State
		}
		require.Equal(t, map[string]string{first: store.KEKRetired, second: store.KEKActive}, states)
	})
}
