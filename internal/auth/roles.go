// Package auth owns who may do what: API tokens (random, shown once, stored
// as SHA-256 hashes, revocable, optionally expiring), the four roles and
// their permissions, and the principal a request acts as.
package auth

import (
	"context"
	"fmt"
	"slices"
)

// Role is a named set of permissions.
type Role string

// The roles.
const (
	RoleAdmin    Role = "admin"    // everything
	RoleEditor   Role = "editor"   // connectors and flows; reads the trust store and runs
	RoleOperator Role = "operator" // runs flows and reads runs
	RoleAuditor  Role = "auditor"  // reads everything, exports the audit log, changes nothing
)

// Roles lists every role, most powerful first.
var Roles = []Role{RoleAdmin, RoleEditor, RoleOperator, RoleAuditor}

// ParseRole validates a role name.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !slices.Contains(Roles, r) {
		return "", fmt.Errorf("auth: unknown role %q: use admin, editor, operator or auditor", s)
	}
	return r, nil
}

// Permission names one kind of action on one kind of resource.
type Permission string

// The permissions. Read permissions never expose secrets.
const (
	PermSystemRead      Permission = "system:read"
	PermTokensRead      Permission = "tokens:read"
	PermTokensWrite     Permission = "tokens:write"
	PermAuditRead       Permission = "audit:read"
	PermCAsRead         Permission = "cas:read"
	PermCAsWrite        Permission = "cas:write"
	PermIdentitiesRead  Permission = "identities:read"
	PermIdentitiesWrite Permission = "identities:write"
	PermConnectorsRead  Permission = "connectors:read"
	PermConnectorsWrite Permission = "connectors:write"
	PermConnectorsUse   Permission = "connectors:use"
	PermFlowsRead       Permission = "flows:read"
	PermFlowsWrite      Permission = "flows:write"
	PermRunsRead        Permission = "runs:read"
	PermRunsWrite       Permission = "runs:write"
	PermKEKWrite        Permission = "kek:write"
	PermPolicyRead      Permission = "policy:read"
	PermPolicyWrite     Permission = "policy:write"
)

var grants = map[Role][]Permission{
	RoleEditor: {
		PermSystemRead, PermCAsRead, PermIdentitiesRead, PermPolicyRead,
		PermConnectorsRead, PermConnectorsWrite, PermConnectorsUse,
		PermFlowsRead, PermFlowsWrite, PermRunsRead, PermRunsWrite,
	},
	RoleOperator: {
		PermSystemRead, PermFlowsRead, PermRunsRead, PermRunsWrite, PermConnectorsRead,
	},
	RoleAuditor: {
		PermSystemRead, PermTokensRead, PermAuditRead, PermCAsRead, PermIdentitiesRead,
		PermConnectorsRead, PermFlowsRead, PermRunsRead, PermPolicyRead,
	},
}

// Can reports whether r holds permission p.
func (r Role) Can(p Permission) bool {
	if r == RoleAdmin {
		return true
	}
	return slices.Contains(grants[r], p)
}

// Principal is who an authenticated request acts as.
type Principal struct {
	TokenID string `json:"token_id"`
	Name    string `json:"name"`
	Role    Role   `json:"role"`
}

type principalKey struct{}

// WithPrincipal returns a context carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal in ctx, if any.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
