package connector

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/store"
)

// TestResult is the outcome of `connector test`.
type TestResult struct {
	OK       bool       `json:"ok"`
	Error    *Diagnosis `json:"error,omitempty"`
	Evidence *Evidence  `json:"evidence,omitempty"`
	// Status is the HTTP status when a path was requested.
	Status int `json:"status,omitempty"`
}

// Test checks a connector end to end: a fresh mutual handshake (never a
// resumed session), and when path is set, a GET of it. The outcome is
// stored as the connector's last test and audited.
func (s *Service) Test(ctx context.Context, actor audit.Actor, name, path string) (TestResult, error) {
	c, err := s.client(ctx, name)
	if err != nil {
		var ce *CallError
		if errors.As(err, &ce) {
			return s.recordTest(ctx, actor, name, TestResult{Error: &ce.Diagnosis})
		}
		return TestResult{}, err
	}
	var res TestResult
	if path != "" {
		resp, err := s.Do(ctx, name, Request{Method: "GET", Path: path, Actor: actor})
		var ce *CallError
		switch {
		case errors.As(err, &ce):
			res = TestResult{Error: &ce.Diagnosis, Evidence: ce.Evidence}
		case err != nil:
			return TestResult{}, err
		default:
			res = TestResult{OK: true, Evidence: resp.Evidence, Status: resp.Status}
		}
		return s.recordTest(ctx, actor, name, res)
	}
	res = s.handshake(ctx, c)
	return s.recordTest(ctx, actor, name, res)
}

// handshake dials the connector's host and completes one handshake under
// its policy, without sending a request.
func (s *Service) handshake(ctx context.Context, c *client) TestResult {
	if c.base.Scheme != "https" {
		return TestResult{Error: &Diagnosis{Code: "plaintext", Message: "connector " + c.conn.Name + " uses plain http://: there is no handshake to test", Hint: "pass --path to test a request"}}
	}
	host := c.base.Host
	if c.base.Port() == "" {
		host = net.JoinHostPort(c.base.Hostname(), "443")
	}
	if ce := c.policyCallError(c.currentPolicy()); ce != nil {
		return TestResult{Error: &ce.Diagnosis}
	}
	hctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// A test must prove a full handshake, not a resumed one.
	c.sessions.Clear()
	conn, err := c.dialTLS(hctx, c.dial, "tcp", host)
	if err != nil {
		ce := c.diagnose(ctx, err, nil)
		return TestResult{Error: &ce.Diagnosis, Evidence: ce.Evidence}
	}
	defer conn.Close()
	ev := c.evidenceFor(conn)
	// In TLS 1.3 the server judges our certificate after our side of the
	// handshake is done: read briefly so that a rejection alert surfaces.
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, rerr := conn.Read(make([]byte, 1)); rerr != nil && isAlert(rerr) {
		ce := c.diagnose(ctx, rerr, ev)
		return TestResult{Error: &ce.Diagnosis, Evidence: ev}
	}
	return TestResult{OK: true, Evidence: ev}
}

func (s *Service) recordTest(ctx context.Context, actor audit.Actor, name string, res TestResult) (TestResult, error) {
	lastErr := ""
	outcome := audit.OutcomeSuccess
	details := map[string]any{"ok": res.OK, "evidence": res.Evidence}
	if res.Error != nil {
		lastErr = res.Error.Code + ": " + res.Error.Message
		outcome = audit.OutcomeFailure
		details["error"] = res.Error
	}
	err := s.store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.RecordConnectorTest(ctx, name, s.clock.Now(), res.OK, lastErr); err != nil {
			return err
		}
		_, err := s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "connector.test", Target: "connector/" + name, Outcome: outcome, Details: details})
		return err
	})
	return res, err
}
