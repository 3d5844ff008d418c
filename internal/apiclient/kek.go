package apiclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// KEKRotation reports a key-encryption key rotation: the KEKs retired,
// the new one, how many sealed values were re-wrapped (of how many wrapped
// by another key when it began), and how many were verified to open under
// the new key alone before the old one was dropped.
type KEKRotation struct {
	FromKEKs []string       `json:"from_kek_ids"`
	ToKEK    string         `json:"to_kek_id"`
	Keys     int            `json:"keys"`
	Total    int            `json:"total"`
	Verified int            `json:"verified"`
	Columns  map[string]int `json:"columns"`
}

// RotateKEK re-wraps every sealed value under a new key-encryption key,
// calling progress (when not nil) as the server reports it. The request has
// no overall timeout: a rotation of a large database takes a while.
func (c *Client) RotateKEK(ctx context.Context, progress func(done, total int)) (KEKRotation, error) {
	long := *c
	hc := *c.http
	hc.Timeout = 0
	long.http = &hc
	resp, err := long.send(ctx, "POST", "/api/v1/kek/rotate", url.Values{"progress": {"true"}}, nil)
	if err != nil {
		return KEKRotation{}, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-ndjson") {
		// A server that does not stream answers the result at once.
		var out KEKRotation
		if err := dec.Decode(&out); err != nil {
			return KEKRotation{}, fmt.Errorf("apiclient: kek rotate: decode answer: %w", err)
		}
		return out, nil
	}
	for {
		var line struct {
			Rewrapped *int         `json:"rewrapped"`
			Total     int          `json:"total"`
			Result    *KEKRotation `json:"result"`
			Error     *Error       `json:"error"`
		}
		if err := dec.Decode(&line); err != nil {
			return KEKRotation{}, fmt.Errorf("apiclient: kek rotate: the server's answer ended before the result (the rotation goes on, or finishes at the server's next start; check `trustflow kek status`): %w", err)
		}
		switch {
		case line.Error != nil:
			line.Error.Status = http.StatusInternalServerError
			return KEKRotation{}, line.Error
		case line.Result != nil:
			return *line.Result, nil
		case line.Rewrapped != nil && progress != nil:
			progress(*line.Rewrapped, line.Total)
		}
	}
}

// KEKStatus is the server's key custody: the recorded key-encryption keys
// (ids, never keys), where this node's keys come from, whether it holds the
// active one, and how many sealed values each column holds under each key.
type KEKStatus struct {
	ActiveKEK string                    `json:"active_kek_id"`
	Source    string                    `json:"source"`
	Ready     bool                      `json:"ready"`
	Problem   string                    `json:"problem,omitempty"`
	KEKs      []KEKInfo                 `json:"keks"`
	Sealed    map[string]map[string]int `json:"sealed"`
}

// KEKInfo is one recorded key-encryption key.
type KEKInfo struct {
	ID          string     `json:"id"`
	State       string     `json:"state"`
	Source      string     `json:"source"`
	Held        bool       `json:"held"`
	CreatedAt   time.Time  `json:"created_at"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
	RetiredAt   *time.Time `json:"retired_at,omitempty"`
}

// KEKStatus reports the server's key custody.
func (c *Client) KEKStatus(ctx context.Context) (KEKStatus, error) {
	var out KEKStatus
	err := c.Do(ctx, "GET", "/api/v1/kek", nil, nil, &out)
	return out, err
}
