package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// A binary refuses a database migrated by a newer one, naming both versions.
func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := store.Config{Dialect: d, DSN: storetest.DSN(t, d)}
			latest, err := store.LatestSchema(d)
			require.NoError(t, err)
			st, err := store.Open(ctx, cfg)
			require.NoError(t, err)
			_, err = st.DB().ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
				latest+1, fmt.Sprintf("%04d_from_the_future.sql", latest+1), 0)
			require.NoError(t, err)
			require.NoError(t, st.Close())

			_, err = store.Open(ctx, cfg)
			require.ErrorIs(t, err, store.ErrSchemaTooNew)
			var tooNew *store.SchemaTooNewError
			require.ErrorAs(t, err, &tooNew)
			require.Equal(t, store.SchemaTooNewError{Database: latest + 1, Binary: latest}, *tooNew)
			require.EqualError(t, err, fmt.Sprintf("store: the database schema is version %d, newer than this trustflow binary knows (%d); "+
				"upgrade trustflow to a version that knows schema %d, or restore a backup taken before the upgrade", latest+1, latest, latest+1))

			// However far it would migrate, an older binary is refused.
			chk, err := store.OpenAt(ctx, cfg, 1)
			require.ErrorIs(t, err, store.ErrSchemaTooNew)
			require.Nil(t, chk)
		})
	}
}
