// Package hsm keeps trustflow's private keys and key-encryption keys inside
// a PKCS#11 token (a hardware security module, a smart card, SoftHSM2), so
// that they never enter trustflow's memory: it parses pkcs11: URIs (RFC
// 7512), opens one session pool per token and caches it ([Tokens]),
// generates and finds identity keys that sign TLS handshakes in the token,
// and serves an AES-256 key in the token as a [seal.Source] ([KEKSource]).
//
// It works over github.com/ThalesGroup/crypto11, which needs cgo. A binary
// built with CGO_ENABLED=0 keeps the same API, and every operation that
// would load a module returns an [*errs.Error] that says to rebuild with cgo.
package hsm
