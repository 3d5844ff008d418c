// Package pki owns trustflow's certificate and key handling as pure functions:
// parsing what users bring (PEM and DER certificates, PKCS#7 bundles, PKCS#1,
// SEC 1 and PKCS#8 keys including encrypted PKCS#8, PKCS#12 files, CSRs and
// CRLs), summarising certificates (fingerprints, SPKI pins, key types),
// checking them (key/certificate match, CA constraints, validity, client
// authentication usage, chain order, FIPS 140 policy), generating keys and
// CSRs, and verifying certificate chains.
//
// Verify is the single verification path: `trustflow ca verify`, every
// connector's tls.Config VerifyConnection and the probe all call it, so they
// accept and reject exactly the same certificates. It builds on
// crypto/x509.Certificate.Verify and adds revocation checking against CRLs,
// a maximum chain depth and diagnostics a user can act on.
//
// Every failure is a *errs.Error carrying a stable Code, a Message that names the
// certificate or field at fault and a Hint on how to fix it. The package does
// no I/O and keeps no state; parsers bound their input (MaxInputSize, key
// derivation work) and never panic.
package pki
