package auth_test

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/auth"
)

// TestRoleMatrix pins every role's permissions: admin everything; editor
// connectors and flows; operator runs; auditor reads everything and
// changes nothing.
func TestRoleMatrix(t *testing.T) {
	t.Parallel()
	const (
		a = auth.RoleAdmin
		e = auth.RoleEditor
		o = auth.RoleOperator
		u = auth.RoleAuditor
	)
	matrix := map[auth.Permission][]auth.Role{
		auth.PermSystemRead:      {a, e, o, u},
		auth.PermTokensRead:      {a, u},
		auth.PermTokensWrite:     {a},
		auth.PermAuditRead:       {a, u},
		auth.PermCAsRead:         {a, e, u},
		auth.PermCAsWrite:        {a},
		auth.PermIdentitiesRead:  {a, e, u},
		auth.PermIdentitiesWrite: {a},
		auth.PermConnectorsRead:  {a, e, o, u},
		auth.PermConnectorsWrite: {a, e},
		auth.PermConnectorsUse:   {a, e},
		auth.PermFlowsRead:       {a, e, o, u},
		auth.PermFlowsWrite:      {a, e},
		auth.PermRunsRead:        {a, e, o, u},
		auth.PermRunsWrite:       {a, e, o},
		auth.PermKEKWrite:        {a},
		auth.PermPolicyRead:      {a, e, u},
		auth.PermPolicyWrite:     {a},
	}
	require.Equal(t, []auth.Role{a, e, o, u}, auth.Roles)
	for perm, allowed := range matrix {
		for _, r := range auth.Roles {
			require.Equal(t, slices.Contains(allowed, r), r.Can(perm), "%s %s", r, perm)
		}
	}
	require.True(t, a.Can("anything:new"), "admin holds permissions added later")
	for _, r := range []auth.Role{e, o, u, "", "root"} {
		require.False(t, r.Can("anything:new"), "%q", r)
	}
}

func TestParseRole(t *testing.T) {
	t.Parallel()
	for _, r := range auth.Roles {
		got, err := auth.ParseRole(string(r))
		require.NoError(t, err)
		require.Equal(t, r, got)
	}
	for _, s := range []string{"", "Admin", "root", "admin "} {
		_, err := auth.ParseRole(s)
		require.ErrorContains(t, err, "unknown role")
	}
}

func TestPrincipalContext(t *testing.T) {
	t.Parallel()
	_, ok := auth.PrincipalFrom(context.Background())
	require.False(t, ok)
	p := auth.Principal{TokenID: "tok_1", Name: "ci", Role: auth.RoleOperator}
	got, ok := auth.PrincipalFrom(auth.WithPrincipal(context.Background(), p))
	require.True(t, ok)
	require.Equal(t, p, got)
}
