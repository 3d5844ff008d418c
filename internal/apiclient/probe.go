package apiclient

import (
	"context"
	"time"
)

// ProbeRequest asks the server to probe an endpoint. Timeout is a Go
// duration bounding each check's connection (empty: the server's default,
// 10s).
type ProbeRequest struct {
	URL      string   `json:"url"`
	CAs      []string `json:"cas,omitempty"`
	Identity string   `json:"identity,omitempty"`
	Timeout  string   `json:"timeout,omitempty"`
}

// Probe verdicts.
const (
	ProbeEnforced    = "enforced"
	ProbeNotEnforced = "not_enforced"
)

// ProbeReport is a probe's outcome: Verdict is "enforced" when the server
// refused both a client without a certificate and one with an untrusted
// certificate, else "not_enforced".
type ProbeReport struct {
	URL       string       `json:"url"`
	Verdict   string       `json:"verdict"`
	Checks    []ProbeCheck `json:"checks"`
	CheckedAt time.Time    `json:"checked_at"`
}

// ProbeCheck is one check: Status is pass, fail, warn or skip; Layer,
// when set, says where the server refused the client (tls or http).
type ProbeCheck struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Layer  string `json:"layer,omitempty"`
	Hint   string `json:"hint,omitempty"`
}

// Probe checks whether an endpoint enforces mutual TLS, refuses TLS 1.0
// and 1.1, and presents a valid chain. The probe runs on the server (it
// holds the CAs and identities) and is audited there.
func (c *Client) Probe(ctx context.Context, req ProbeRequest) (ProbeReport, error) {
	var r ProbeReport
	err := c.Do(ctx, "POST", "/api/v1/probe", nil, req, &r)
	return r, err
}
