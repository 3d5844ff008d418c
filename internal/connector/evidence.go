package connector

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"sync"
	"time"

	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/truststore"
)

// Evidence is what one connection's handshake proved, kept with every step
// result and audit record of a request made over it.
type Evidence struct {
	TLSVersion                string                 `json:"tls_version"`
	CipherSuite               string                 `json:"cipher_suite"`
	ServerName                string                 `json:"server_name"`
	ServerRequestedClientCert bool                   `json:"server_requested_client_cert"`
	AcceptableCAs             []string               `json:"acceptable_cas"`
	ClientCertificate         *truststore.ActiveInfo `json:"client_certificate"`
	ServerChain               []ChainCert            `json:"server_chain"`
	// Resumed sessions carry the client side (request, acceptable CAs,
	// certificate) of the full handshake that established them.
	Resumed bool   `json:"resumed"`
	ALPN    string `json:"alpn"`
	// HandshakeAt is when the connection's handshake completed.
	HandshakeAt time.Time `json:"handshake_at"`
}

// ChainCert is one certificate of the server's chain.
type ChainCert struct {
	Subject           string    `json:"subject"`
	Issuer            string    `json:"issuer"`
	FingerprintSHA256 string    `json:"fingerprint_sha256"`
	NotAfter          time.Time `json:"not_after"`
}

// connEvidence is filled in during one connection's handshake.
type connEvidence struct {
	mu            sync.Mutex
	requested     bool
	acceptableCAs []string
	client        *truststore.ActiveInfo
	clientErr     error
	final         *Evidence
}

func (e *connEvidence) sawRequest(cri *tls.CertificateRequestInfo) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.requested = true
	e.acceptableCAs = make([]string, 0, len(cri.AcceptableCAs))
	for _, raw := range cri.AcceptableCAs {
		var rdn pkix.RDNSequence
		if _, err := asn1.Unmarshal(raw, &rdn); err != nil {
			continue
		}
		var n pkix.Name
		n.FillFromRDNSequence(&rdn)
		e.acceptableCAs = append(e.acceptableCAs, n.String())
	}
}

func (e *connEvidence) presented(info truststore.ActiveInfo) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.client = &info
}

func (e *connEvidence) failed(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.clientErr = err
}

// finish freezes the evidence once the handshake is done.
func (e *connEvidence) finish(cs tls.ConnectionState, at time.Time) *Evidence {
	e.mu.Lock()
	defer e.mu.Unlock()
	ev := &Evidence{
		TLSVersion:                tls.VersionName(cs.Version),
		CipherSuite:               tls.CipherSuiteName(cs.CipherSuite),
		ServerName:                cs.ServerName,
		ServerRequestedClientCert: e.requested,
		AcceptableCAs:             e.acceptableCAs,
		ClientCertificate:         e.client,
		ServerChain:               chainOf(cs.PeerCertificates),
		Resumed:                   cs.DidResume,
		ALPN:                      cs.NegotiatedProtocol,
		HandshakeAt:               at,
	}
	if ev.AcceptableCAs == nil {
		ev.AcceptableCAs = []string{}
	}
	e.final = ev
	return ev
}

func chainOf(certs []*x509.Certificate) []ChainCert {
	out := make([]ChainCert, 0, len(certs))
	for _, c := range certs {
		out = append(out, ChainCert{Subject: c.Subject.String(), Issuer: c.Issuer.String(), FingerprintSHA256: pki.FingerprintSHA256(c), NotAfter: c.NotAfter.UTC()})
	}
	return out
}
