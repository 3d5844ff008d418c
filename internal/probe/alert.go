package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// alertNames maps the text crypto/tls gives each TLS alert to its RFC 8446
// name, as connector diagnoses name them.
var alertNames = map[string]string{
	"tls: close notify":                    "close_notify",
	"tls: unexpected message":              "unexpected_message",
	"tls: bad record MAC":                  "bad_record_mac",
	"tls: decryption failed":               "decryption_failed",
	"tls: record overflow":                 "record_overflow",
	"tls: decompression failure":           "decompression_failure",
	"tls: handshake failure":               "handshake_failure",
	"tls: bad certificate":                 "bad_certificate",
	"tls: unsupported certificate":         "unsupported_certificate",
	"tls: revoked certificate":             "certificate_revoked",
	"tls: expired certificate":             "certificate_expired",
	"tls: unknown certificate":             "certificate_unknown",
	"tls: illegal parameter":               "illegal_parameter",
	"tls: unknown certificate authority":   "unknown_ca",
	"tls: access denied":                   "access_denied",
	"tls: error decoding message":          "decode_error",
	"tls: error decrypting message":        "decrypt_error",
	"tls: export restriction":              "export_restriction",
	"tls: protocol version not supported":  "protocol_version",
	"tls: insufficient security level":     "insufficient_security",
	"tls: internal error":                  "internal_error",
	"tls: inappropriate fallback":          "inappropriate_fallback",
	"tls: user canceled":                   "user_canceled",
	"tls: no renegotiation":                "no_renegotiation",
	"tls: missing extension":               "missing_extension",
	"tls: unsupported extension":           "unsupported_extension",
	"tls: certificate unobtainable":        "certificate_unobtainable",
	"tls: unrecognized name":               "unrecognized_name",
	"tls: bad certificate status response": "bad_certificate_status_response",
	"tls: bad certificate hash value":      "bad_certificate_hash_value",
	"tls: unknown PSK identity":            "unknown_psk_identity",
	"tls: certificate required":            "certificate_required",
	"tls: no application protocol":         "no_application_protocol",
	"tls: encrypted client hello required": "ech_required",
}

// remoteAlert returns the RFC name of a TLS alert the server sent, if err
// is one.
func remoteAlert(err error) (string, bool) {
	var op *net.OpError
	for e := err; e != nil; e = errors.Unwrap(e) {
		if errors.As(e, &op) && op.Op == "remote error" && op.Err != nil {
			if name, ok := alertNames[op.Err.Error()]; ok {
				return name, true
			}
			return strings.TrimPrefix(op.Err.Error(), "tls: "), true
		}
	}
	return "", false
}

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
