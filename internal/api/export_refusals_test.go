package api

import (
	"context"
	"net/http"
	"net/netip"
)

// FlushRefusals writes the aggregated auth.denied records now, as the
// interval's tick does.
func (s *Server) FlushRefusals(ctx context.Context) { s.refusals.flush(ctx) }

// TrackedSources is how many sources the refusal table holds.
func (s *Server) TrackedSources() int { return s.refusals.tracked() }

// SourceOf exposes sourceOf to the external tests.
func SourceOf(r *http.Request, trusted []netip.Prefix) string { return sourceOf(r, trusted) }

// ParseQuery exposes parseQuery to the external tests.
func ParseQuery(raw string, params []Param) (Query, error) { return parseQuery(raw, params) }
