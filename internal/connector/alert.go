package connector

// RemoteAlert returns the RFC 8446 name of the TLS alert a server sent
// (bad_certificate, certificate_required, unknown_ca, …), if err carries one.
// The probe diagnoses handshakes with the same names.
func RemoteAlert(err error) (string, bool) { return remoteAlert(err) }
