package connector

import (
	"context"
)

// HeldClient returns a function that completes one handshake with the
// connector's server through the client the service holds now, as a
// request already in flight keeps using it after a change, and returns the
// connection's evidence or the call's diagnosis.
func (s *Service) HeldClient(ctx context.Context, name string) (func(context.Context) (*Evidence, error), error) {
	c, err := s.client(ctx, name)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (*Evidence, error) {
		conn, err := c.dialTLS(ctx, c.dial, "tcp", hostPort(c.base))
		if err != nil {
			return nil, c.diagnose(ctx, err, nil)
		}
		defer conn.Close()
		return c.evidenceFor(conn), nil
	}, nil
}
