package app

import (
	"context"
	"fmt"

	"github.com/trustflow/trustflow/internal/policy"
)

// policyViolations lists the connectors and identities that break p: what
// `policy check` shows, and what a policy change reports (and audits) it
// breaks.
func (a *App) policyViolations(ctx context.Context, p *policy.Policy) ([]policy.Violation, error) {
	var out []policy.Violation
	if a.Connectors != nil {
		vs, err := a.Connectors.CheckPolicy(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("app: check connectors against the policy: %w", err)
		}
		out = append(out, vs...)
	}
	if a.Trust != nil {
		vs, err := a.Trust.CheckPolicy(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("app: check identities against the policy: %w", err)
		}
		out = append(out, vs...)
	}
	return out, nil
}
