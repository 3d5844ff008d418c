package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/trustflow/trustflow/internal/connector"
)

// remoteAlert returns the RFC name of a TLS alert the server sent, if err
// is one; the names are the connectors' (connector.RemoteAlert).
func remoteAlert(err error) (string, bool) { return connector.RemoteAlert(err) }

// isTimeout reports whether err is a deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// isClosed reports whether err is the server closing or resetting the
// connection without an alert.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// describe phrases a failure to reach or talk to the server, for a check
// that could not be run to its end.
func describe(err error, addr string, timeout time.Duration) string {
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve %q: %s", dnsErr.Name, dnsErr.Err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("%s refused the connection: nothing listens there", addr)
	case errors.Is(err, context.Canceled):
		return "the probe was cancelled"
	case isTimeout(err):
		return fmt.Sprintf("no answer from %s within %s", addr, timeout)
	case isClosed(err):
		return fmt.Sprintf("%s closed the connection", addr)
	}
	if alert, ok := remoteAlert(err); ok {
		return "the server sent the alert " + alert
	}
	return err.Error()
}
