// Package seal owns trustflow's encryption of secrets at rest: identities'
// private keys, connector secrets, webhook secrets, run inputs and sealed step
// states are stored in the database only as sealed blobs, and the key that
// opens them never enters the database. Where that key lives is a [Source]:
// a file ([FileSource]), an environment variable ([EnvSource]), or a PKCS#11
// token (package hsm, through [NewExternalKEK]).
//
// # Envelope encryption
//
// [Keyring.Seal] encrypts each record with AES-256-GCM under a fresh random
// 256-bit data key (DEK). The DEK is itself encrypted ("wrapped") with
// AES-256-GCM under a key-encryption key ([KEK]) from a [Source]; a KEK held
// by a device ([NewExternalKEK]) wraps inside the device. The caller's additional authenticated data,
// normally the record id, is bound to the payload, so a blob copied to another
// row does not open there. The byte layout is described at [Overhead].
//
// The DEK is wrapped with AES-256-GCM rather than AES key wrap (RFC 3394,
// SP 800-38F KW): GCM is in the standard library, so nothing here is hand-rolled
// cryptography, and it is an approved mode for the FIPS 140-3 module when the
// nonce is generated inside the module, as [crypto/cipher.NewGCMWithRandomNonce]
// does. Each KEK wraps one DEK per record; the 2^32 random-nonce limit per key is
// far above any realistic number of stored secrets. Each DEK encrypts exactly
// one payload, once.
//
// # Errors
//
// Opening fails closed: a blob that was altered anywhere, truncated, extended,
// or opened with the wrong additional data returns an error matching
// [ErrTampered]; a blob wrapped by a KEK the keyring does not hold returns an
// [*UnknownKEKError], which matches [ErrUnknownKEK]. No input makes the parser
// panic.
//
// # Rotating the KEK without downtime
//
// [Keyring.Rewrap] re-encrypts only the 60-byte wrapped DEK of a blob under a
// new KEK; the payload ciphertext is copied unchanged. A rotation proceeds as:
//
//  1. Create the new KEK and give it to every node as a previous (open-only)
//     key: NewKeyring(old, new). Nodes can now open blobs wrapped by either.
//  2. Make the new KEK current on every node: NewKeyring(new, old). New
//     seals use it; blobs wrapped by the old KEK still open.
//  3. Rewrap every stored blob whose [KEKID] is not the new id, in small
//     batches, each row updated only if it still holds the blob that was read.
//  4. When no stored blob names the old KEK, drop it: NewKeyring(new).
//
// Package custody runs these steps across every sealed column and node.
//
// A [Keyring] is immutable and safe for concurrent use; switching keyrings at
// run time is done by the owner swapping its pointer.
//
// # Secrets in memory
//
// Seal, Open and Rewrap zero the DEKs they unwrap, and the file loaders zero the
// file contents they read, once done. This is best effort: the AES key schedules
// held by [crypto/cipher] values cannot be zeroed, and the Go runtime may have
// copied any buffer. Plaintext passed to Seal and returned by Open belongs to the
// caller, who should zero it when practical.
package seal
