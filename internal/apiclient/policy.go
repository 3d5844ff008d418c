package apiclient

import (
	"context"

	"github.com/trustflow/trustflow/internal/policy"
)

// PolicyCheck lists what the policy in force breaks.
type PolicyCheck struct {
	Revision   int64              `json:"revision"`
	Violations []policy.Violation `json:"violations"`
}

// Policy returns the egress and TLS policy in force.
func (c *Client) Policy(ctx context.Context) (policy.View, error) {
	var out policy.View
	err := c.Do(ctx, "GET", "/api/v1/policy", nil, nil, &out)
	return out, err
}

// SetPolicy replaces the policy (admin).
func (c *Client) SetPolicy(ctx context.Context, doc policy.Document) (policy.View, error) {
	var out policy.View
	err := c.Do(ctx, "PUT", "/api/v1/policy", nil, doc, &out)
	return out, err
}

// AllowEgress adds one egress allow rule (admin).
func (c *Client) AllowEgress(ctx context.Context, r policy.Rule) (policy.View, error) {
	var out policy.View
	err := c.Do(ctx, "POST", "/api/v1/policy/allow", nil, r, &out)
	return out, err
}

// DisallowEgress removes one egress allow rule (admin).
func (c *Client) DisallowEgress(ctx context.Context, r policy.Rule) (policy.View, error) {
	var out policy.View
	err := c.Do(ctx, "POST", "/api/v1/policy/disallow", nil, r, &out)
	return out, err
}

// CheckPolicy lists the connectors and identities that break the policy.
func (c *Client) CheckPolicy(ctx context.Context) (PolicyCheck, error) {
	var out PolicyCheck
	err := c.Do(ctx, "GET", "/api/v1/policy/check", nil, nil, &out)
	return out, err
}
