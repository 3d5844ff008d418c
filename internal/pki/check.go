package pki

import (
	"bytes"
	"crypto/x509"
	"slices"
	"time"
)

// issuedBy reports whether parent's name and key issued child. It checks the
// signature only, not whether parent may act as a CA (CheckCA does that), and
// accepts SHA-1 signatures so that chains can be diagnosed; Verify decides
// whether they are acceptable.
func issuedBy(child, parent *x509.Certificate) bool {
	return bytes.Equal(child.RawIssuer, parent.RawSubject) &&
		parent.CheckSignature(child.SignatureAlgorithm, child.RawTBSCertificate, child.Signature) == nil
}

// isSelfSigned reports whether cert is signed by its own key under its own name.
func isSelfSigned(cert *x509.Certificate) bool {
	return issuedBy(cert, cert)
}

// CheckCA checks that cert may act as a certificate authority: basicConstraints
// CA:TRUE and, when keyUsage is present, keyCertSign. Version 1 self-signed
// certificates (old roots, which have no extensions) are accepted as CAs.
//
// With allowLeafAnchor, a self-signed certificate that is not a CA (a
// server's self-signed certificate pinned as its own trust anchor) is
// accepted too; a CA-signed leaf never is.
func CheckCA(cert *x509.Certificate, allowLeafAnchor bool) error {
	if cert == nil {
		return newError(CodeNotACA, "give the CA certificate", nil, "no certificate given")
	}
	selfSigned := isSelfSigned(cert)
	switch {
	case cert.BasicConstraintsValid && cert.IsCA:
		if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
			return newError(CodeNotACA, "reissue the CA certificate with keyUsage including keyCertSign (and cRLSign)", nil,
				"certificate %s says CA:TRUE but its keyUsage does not include keyCertSign, so it may not sign certificates", certName(cert))
		}
		return nil
	case cert.Version == 1 && selfSigned:
		return nil
	case allowLeafAnchor && selfSigned:
		return nil
	}
	what := "it has no basicConstraints extension"
	if cert.BasicConstraintsValid {
		what = "its basicConstraints extension says CA:FALSE"
	}
	hint := "import the CA that issued it instead (issuer " + quoteName(cert.Issuer.String()) + ")"
	switch {
	case selfSigned:
		hint = "this is a self-signed end-entity certificate: to trust exactly this certificate as its own anchor, import it with --allow-leaf-anchor; otherwise import the CA certificate"
	case allowLeafAnchor:
		hint += "; --allow-leaf-anchor accepts only self-signed certificates, and this one was issued by " + quoteName(cert.Issuer.String())
	}
	return newError(CodeNotACA, hint, nil, "certificate %s is not a CA: %s", certName(cert), what)
}

// CheckValidity checks that now lies within cert's validity period. The
// message gives the dates.
func CheckValidity(cert *x509.Certificate, now time.Time) error {
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return validityError(cert, "certificate "+certName(cert), now, nil)
	}
	return nil
}

func renewHint(cert *x509.Certificate) string {
	if cert.IsCA {
		return "obtain the renewed CA certificate and import it"
	}
	return "renew the certificate and import the new one"
}

// CheckClientAuth checks that cert may be used for TLS client
// authentication: either it has no extended key usage extension (any usage),
// or that extension lists clientAuth or anyExtendedKeyUsage.
func CheckClientAuth(cert *x509.Certificate) error {
	if len(cert.ExtKeyUsage) == 0 && len(cert.UnknownExtKeyUsage) == 0 {
		return nil
	}
	if slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return nil
	}
	return newError(CodeNoClientAuthEKU,
		"reissue the certificate with extendedKeyUsage clientAuth (OpenSSL: `-addext extendedKeyUsage=clientAuth`; many CAs call the profile \"client\" or \"user\")",
		nil, "certificate %s may not be used for TLS client authentication: its extended key usage is %s",
		certName(cert), listOrNone(ekuNames(cert)))
}

// CheckChain checks that chain is the issuing chain of leaf, in order: each
// element's name and key issued the certificate before it, starting with
// leaf's issuer. A trailing root may be included. It checks signatures only;
// Verify decides whether the chain is trusted.
func CheckChain(leaf *x509.Certificate, chain []*x509.Certificate) error {
	const hint = "give the chain in order: the leaf's issuer first, then that CA's issuer, up to (optionally) the root, with no unrelated certificates"
	cur := leaf
	for i, c := range chain {
		if !bytes.Equal(cur.RawIssuer, c.RawSubject) {
			if j := slices.IndexFunc(chain, func(x *x509.Certificate) bool { return issuedBy(cur, x) }); j >= 0 {
				return newError(CodeChainBroken, hint, nil,
					"chain certificate #%d is %s, but %s was issued by %s, which is chain certificate #%d: the chain is out of order",
					i+1, certName(c), certName(cur), quoteName(cur.Issuer.String()), j+1)
			}
			return newError(CodeChainBroken, hint, nil,
				"chain certificate #%d is %s, but %s was issued by %s", i+1, certName(c), certName(cur), quoteName(cur.Issuer.String()))
		}
		if !issuedBy(cur, c) {
			return newError(CodeChainBroken, "the CA may have been re-keyed: get the CA certificate that matches the key that signed "+certName(cur),
				nil, "chain certificate #%d, %s, has the right name but its key did not sign %s", i+1, certName(c), certName(cur))
		}
		cur = c
	}
	return nil
}

var ekuText = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageAny:                        "any",
	x509.ExtKeyUsageServerAuth:                 "serverAuth",
	x509.ExtKeyUsageClientAuth:                 "clientAuth",
	x509.ExtKeyUsageCodeSigning:                "codeSigning",
	x509.ExtKeyUsageEmailProtection:            "emailProtection",
	x509.ExtKeyUsageIPSECEndSystem:             "ipsecEndSystem",
	x509.ExtKeyUsageIPSECTunnel:                "ipsecTunnel",
	x509.ExtKeyUsageIPSECUser:                  "ipsecUser",
	x509.ExtKeyUsageTimeStamping:               "timeStamping",
	x509.ExtKeyUsageOCSPSigning:                "OCSPSigning",
	x509.ExtKeyUsageMicrosoftServerGatedCrypto: "msSGC",
	x509.ExtKeyUsageNetscapeServerGatedCrypto:  "nsSGC",
}

// ekuNames lists cert's extended key usages for messages.
func ekuNames(cert *x509.Certificate) []string {
	var names []string
	for _, u := range cert.ExtKeyUsage {
		if n, ok := ekuText[u]; ok {
			names = append(names, n)
		} else {
			names = append(names, "unknown")
		}
	}
	for _, oid := range cert.UnknownExtKeyUsage {
		names = append(names, oid.String())
	}
	return names
}
