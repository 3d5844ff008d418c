package connector

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/trustflow/trustflow/internal/truststore"
)

// TrustStore is what connectors need of the trust store, and all they may
// use: the anchors a server's chain must reach (CASource), the identity to
// present (IdentitySource), whether either changed, the existence checks of
// a spec's references, and sealing of connector secrets.
// *truststore.Service implements it.
type TrustStore interface {
	CASource
	IdentitySource
	// Generation counts local changes to CAs and identities; RevalidateAfter
	// bounds how long a cached view may be trusted without a re-read.
	Generation() int64
	RevalidateAfter() time.Duration
	// GetCA and Get check that a spec's CAs and identity exist.
	GetCA(ctx context.Context, name string) (truststore.CA, error)
	Get(ctx context.Context, name string) (truststore.Identity, error)
	// SealSecret and OpenSecret seal connector secrets under the KEK.
	SealSecret(plaintext, aad []byte) ([]byte, string, error)
	OpenSecret(blob, aad []byte) ([]byte, error)
}

// CASource gives the certificates of named CA bundles, live.
type CASource interface {
	Anchors(ctx context.Context, names ...string) ([]*x509.Certificate, error)
}

// IdentitySource gives the certificate and signer an identity presents now.
type IdentitySource interface {
	Active(ctx context.Context, name string) (truststore.ActiveCertificate, error)
}
