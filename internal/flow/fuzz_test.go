package flow

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/errs"
)

// FuzzParse feeds Parse arbitrary documents: it must never panic, and
// whatever it returns must keep its contract. The seed corpus
// (testdata/fuzz/FuzzParse) holds every valid and invalid fixture.
func FuzzParse(f *testing.F) {
	f.Add([]byte("apiVersion: trustflow/v1\nkind: Flow\nname: t\ntrigger: {manual: {}}\nsteps: [{id: a, set: {x: '${1}'}}]\n"))
	f.Add([]byte(`{"steps": [{"id": "a", "set": {"x": "${ {'a': '}'} }"}}]}`))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse("fuzz.yaml", data)
		if err != nil {
			require.Nil(t, d)
			var verr *errs.Error
			require.True(t, errors.As(err, &verr), "error is a *errs.Error: %v", err)
			require.NotEmpty(t, verr.Problems)
			require.LessOrEqual(t, len(verr.Problems), maxProblems+1)
			lines := len(newLocator(data).lines)
			for _, p := range verr.Problems {
				require.Equal(t, "fuzz.yaml", p.File)
				require.NotEmpty(t, p.Message)
				require.NotEmpty(t, p.Hint)
				require.GreaterOrEqual(t, p.Line, 0)
				require.LessOrEqual(t, p.Line, lines+1)
				require.GreaterOrEqual(t, p.Column, 0)
			}
			return
		}
		require.Len(t, d.Digest, 64)
		require.Equal(t, data, d.Source)
		again, err := Parse("fuzz.yaml", data)
		require.NoError(t, err)
		require.Equal(t, d.Digest, again.Digest)
		require.True(t, slices.IsSorted(d.Connectors()))
		require.True(t, slices.IsSorted(d.SubFlows()))
		ids := map[string]bool{}
		require.NoError(t, d.Walk(func(path string, s *Step) error {
			require.NotEmpty(t, s.ID)
			require.False(t, ids[s.ID], "step ids are unique")
			ids[s.ID] = true
			require.True(t, strings.HasSuffix(path, s.ID))
			require.Contains(t, stepKinds, s.Kind)
			return nil
		}))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, err := d.Output.Eval(ctx, Scope{}); err != nil {
			var eerr *EvalError
			require.ErrorAs(t, err, &eerr)
		}
	})
}

func TestFuzzCorpusHoldsFixtures(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/*/*")
	require.NoError(t, err)
	for _, f := range files {
		kind := filepath.Base(filepath.Dir(f))
		if kind != "valid" && kind != "invalid" {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(f), filepath.Ext(f))
		seed := filepath.Join("testdata", "fuzz", "FuzzParse", kind+"-"+name+strings.ReplaceAll(filepath.Ext(f), ".", "-"))
		_, err := os.Stat(seed)
		require.NoError(t, err, "%s has no seed in the fuzz corpus", f)
	}
}
