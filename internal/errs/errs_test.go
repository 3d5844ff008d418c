package errs_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/errs"
)

func TestErrorFormsAndMatching(t *testing.T) {
	t.Parallel()
	notFound := errs.E(errs.NotFound, "not_found", "the resource does not exist", "check the name")
	cause := errors.New("sql: no rows")
	wrapped := fmt.Errorf("truststore: get ca: %w", notFound.Wrap("store: get", cause))
	require.ErrorIs(t, wrapped, notFound, "a copy of a sentinel still matches it")
	require.ErrorIs(t, wrapped, cause)
	require.Equal(t, errs.NotFound, errs.KindOf(wrapped))
	require.Equal(t, "not_found", errs.CodeOf(wrapped))
	require.EqualError(t, wrapped, "truststore: get ca: store: get: the resource does not exist: sql: no rows")
	require.NotErrorIs(t, wrapped, errs.E(errs.NotFound, "other_code", "", ""))
	require.ErrorIs(t, wrapped, &errs.Error{Kind: errs.NotFound})
	require.Equal(t, errs.Internal, errs.KindOf(cause))
	require.Equal(t, "", errs.CodeOf(cause))

	in := errs.InvalidField("url", "must be https", "write https://host/path")
	require.Equal(t, "url: must be https", in.Public())
	require.Equal(t, "url: must be https", in.Error())
	require.Equal(t, "must be https", in.WithField("").Public())

	lim := errs.LimitReached("subflow_depth", 8, "sub-flows nest too deep", "flatten the flows")
	require.Equal(t, "sub-flows nest too deep (limit subflow_depth: 8)", lim.Public())
	require.Equal(t, "limit", lim.Kind.String())
	require.Equal(t, "kind(200)", errs.Kind(200).String())
}

func TestProblemString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "f.yaml:3:7: steps[0].call: unknown connector (create it first)",
		errs.Problem{File: "f.yaml", Line: 3, Column: 7, Path: "steps[0].call", Message: "unknown connector", Hint: "create it first"}.String())
	require.Equal(t, "bad", errs.Problem{Message: "bad"}.String())
}
