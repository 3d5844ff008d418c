package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"slices"

	"github.com/trustflow/trustflow/internal/errs"
)

// CRL extensions (RFC 5280 5.2) and entry extensions (5.3).
var (
	oidCRLNumber             = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidDeltaCRLIndicator     = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidIssuingDistribution   = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidAuthorityKeyID        = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidIssuerAltName         = asn1.ObjectIdentifier{2, 5, 29, 18}
	oidFreshestCRL           = asn1.ObjectIdentifier{2, 5, 29, 46}
	oidAuthorityInfoAccess   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1}
	oidEntryReasonCode       = asn1.ObjectIdentifier{2, 5, 29, 21}
	oidEntryInvalidityDate   = asn1.ObjectIdentifier{2, 5, 29, 24}
	oidEntryCertificateIssue = asn1.ObjectIdentifier{2, 5, 29, 29}
)

// crlReasons names RFC 5280 CRLReason codes.
var crlReasons = map[int]string{
	0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged",
	4: "superseded", 5: "cessationOfOperation", 6: "certificateHold",
	8: "removeFromCRL", 9: "privilegeWithdrawn", 10: "aACompromise",
}

const reasonRemoveFromCRL = 8

// checkRevocation checks every certificate of chain but the trust anchor
// against the CRLs of opts.
func checkRevocation(chain []*x509.Certificate, opts *VerifyOptions) *errs.Error {
	if len(opts.CRLs) == 0 && !opts.RequireCRLs {
		return nil
	}
	for i := 0; i+1 < len(chain); i++ {
		if e := checkCertRevocation(chain[i], chain[i+1], opts); e != nil {
			return e
		}
	}
	return nil
}

func checkCertRevocation(cert, issuer *x509.Certificate, opts *VerifyOptions) *errs.Error {
	var (
		usable  []*x509.RevocationList
		problem *errs.Error
		matched bool
	)
	for _, crl := range opts.CRLs {
		if crl == nil || !bytes.Equal(crl.RawIssuer, cert.RawIssuer) {
			continue
		}
		applies, e := crlApplies(crl, cert, issuer, opts)
		if e != nil {
			problem = cmpProblem(problem, e)
			matched = true
			continue
		}
		if applies {
			matched = true
			usable = append(usable, crl)
		}
	}
	if len(usable) == 0 {
		if matched && problem != nil {
			return problem
		}
		if opts.RequireCRLs {
			return newError(CodeCRLMissing, fmt.Sprintf("add the current CRL of %s (from its CRL distribution point%s)", certName(issuer), cdpText(cert)), nil,
				"no CRL of %s covers certificate %s, and revocation checking is required", certName(issuer), certName(cert))
		}
		return nil
	}
	for _, crl := range usable {
		for _, entry := range crl.RevokedCertificateEntries {
			if entry.SerialNumber == nil || entry.SerialNumber.Cmp(cert.SerialNumber) != 0 || entry.ReasonCode == reasonRemoveFromCRL {
				continue
			}
			reason := ""
			if name, ok := crlReasons[entry.ReasonCode]; ok && entry.ReasonCode != 0 {
				reason = ", reason " + name
			}
			return newError(CodeRevoked, "the certificate's owner must get a new certificate; if it is one of your identities, rotate it", nil,
				"certificate %s (serial %s) was revoked by %s on %s%s (CRL issued %s)",
				certName(cert), serialHex(cert), certName(issuer), timeText(entry.RevocationTime), reason, timeText(crl.ThisUpdate))
		}
	}
	return nil
}

// cmpProblem keeps the more useful of two CRL problems: one about time
// (a stale CRL) over one about structure.
func cmpProblem(have, e *errs.Error) *errs.Error {
	if have == nil || (have.Code != CodeCRLExpired && e.Code == CodeCRLExpired) {
		return e
	}
	return have
}

func cdpText(cert *x509.Certificate) string {
	if len(cert.CRLDistributionPoints) == 0 {
		return ""
	}
	return " " + cert.CRLDistributionPoints[0]
}

// crlApplies validates crl, whose issuer name matches cert's issuer, for
// checking cert, and reports whether its scope covers cert.
func crlApplies(crl *x509.RevocationList, cert, issuer *x509.Certificate, opts *VerifyOptions) (bool, *errs.Error) {
	who := "the CRL of " + certName(issuer)
	const hintRefetch = "download the current CRL from the CA and replace this one"
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		if issuer.KeyUsage != 0 && issuer.KeyUsage&x509.KeyUsageCRLSign == 0 {
			return false, newError(CodeCRLInvalid, "reissue the CA certificate with keyUsage cRLSign, or have CRLs signed by a CA allowed to", err,
				"%s is signed by a CA whose keyUsage lacks cRLSign, so it may not sign CRLs", who)
		}
		return false, newError(CodeCRLInvalid, "use the CRL published by the CA that issued the certificate; the CA may have been re-keyed", err,
			"%s (issued %s) is not signed by the key of that CA", who, timeText(crl.ThisUpdate))
	}
	var number bool
	for _, ext := range crl.Extensions {
		switch {
		case ext.Id.Equal(oidCRLNumber):
			if ext.Critical {
				return false, newError(CodeCRLInvalid, "have the CA fix its CRL profile", nil,
					"%s marks its CRL number extension critical, which RFC 5280 forbids", who)
			}
			number = true
		case ext.Id.Equal(oidDeltaCRLIndicator):
			return false, newError(CodeCRLInvalid, "provide the CA's complete (base) CRL", nil, "%s is a delta CRL, which trustflow does not use", who)
		case ext.Id.Equal(oidIssuingDistribution):
			applies, e := idpApplies(ext.Value, cert, who)
			if e != nil || !applies {
				return false, e
			}
		case ext.Id.Equal(oidAuthorityKeyID), ext.Id.Equal(oidIssuerAltName), ext.Id.Equal(oidFreshestCRL), ext.Id.Equal(oidAuthorityInfoAccess):
		default:
			if ext.Critical {
				return false, newError(CodeCRLInvalid, "have the CA fix its CRL profile", nil,
					"%s has a critical extension trustflow does not understand (%s)", who, ext.Id)
			}
		}
	}
	if !number {
		return false, newError(CodeCRLInvalid, "have the CA fix its CRL profile", nil,
			"%s lacks the CRL number extension that RFC 5280 requires", who)
	}
	for _, entry := range crl.RevokedCertificateEntries {
		for _, ext := range entry.Extensions {
			if ext.Id.Equal(oidEntryCertificateIssue) {
				return false, newError(CodeCRLInvalid, "provide a CRL issued directly by the CA", nil, "%s is an indirect CRL, which trustflow does not support", who)
			}
			if ext.Critical && !ext.Id.Equal(oidEntryReasonCode) && !ext.Id.Equal(oidEntryInvalidityDate) {
				return false, newError(CodeCRLInvalid, "have the CA fix its CRL profile", nil,
					"%s has an entry with a critical extension trustflow does not understand (%s)", who, ext.Id)
			}
		}
	}
	if opts.Time.Before(crl.ThisUpdate) {
		return false, newError(CodeCRLExpired, "check this machine's clock", nil,
			"%s is not valid until %s (checked at %s)", who, timeText(crl.ThisUpdate), timeText(opts.Time))
	}
	if !crl.NextUpdate.IsZero() && opts.Time.After(crl.NextUpdate) {
		return false, newError(CodeCRLExpired, hintRefetch, nil,
			"%s expired at %s (its nextUpdate; checked at %s)", who, timeText(crl.NextUpdate), timeText(opts.Time))
	}
	return true, nil
}

// issuingDistributionPoint is the issuingDistributionPoint CRL extension
// (RFC 5280 5.2.5).
type issuingDistributionPoint struct {
	DistributionPoint          asn1.RawValue  `asn1:"optional,tag:0"`
	OnlyContainsUserCerts      bool           `asn1:"optional,tag:1"`
	OnlyContainsCACerts        bool           `asn1:"optional,tag:2"`
	OnlySomeReasons            asn1.BitString `asn1:"optional,tag:3"`
	IndirectCRL                bool           `asn1:"optional,tag:4"`
	OnlyContainsAttributeCerts bool           `asn1:"optional,tag:5"`
}

// idpApplies reads an issuingDistributionPoint extension and reports whether
// the CRL's scope covers cert.
func idpApplies(value []byte, cert *x509.Certificate, who string) (bool, *errs.Error) {
	var idp issuingDistributionPoint
	if rest, err := asn1.Unmarshal(value, &idp); err != nil || len(rest) != 0 {
		return false, newError(CodeCRLInvalid, "have the CA fix its CRL profile", err, "%s has a malformed issuing distribution point extension", who)
	}
	if idp.IndirectCRL {
		return false, newError(CodeCRLInvalid, "provide a CRL issued directly by the CA", nil, "%s is an indirect CRL, which trustflow does not support", who)
	}
	isCA := cert.BasicConstraintsValid && cert.IsCA
	if idp.OnlyContainsAttributeCerts || (idp.OnlyContainsUserCerts && isCA) || (idp.OnlyContainsCACerts && !isCA) {
		return false, nil
	}
	if len(idp.DistributionPoint.Bytes) > 0 && len(cert.CRLDistributionPoints) > 0 {
		// The CRL covers one partition: it applies when the certificate
		// points at the same distribution point.
		uris := distributionPointURIs(idp.DistributionPoint.Bytes)
		if len(uris) > 0 && !slices.ContainsFunc(uris, func(u string) bool { return slices.Contains(cert.CRLDistributionPoints, u) }) {
			return false, nil
		}
	}
	return true, nil
}

// distributionPointURIs returns the URIs of a DistributionPointName's
// fullName.
func distributionPointURIs(dpName []byte) []string {
	var full asn1.RawValue
	if _, err := asn1.Unmarshal(dpName, &full); err != nil || full.Class != asn1.ClassContextSpecific || full.Tag != 0 {
		return nil
	}
	var uris []string
	for rest := full.Bytes; len(rest) > 0; {
		var gn asn1.RawValue
		var err error
		if rest, err = asn1.Unmarshal(rest, &gn); err != nil {
			break
		}
		if gn.Class == asn1.ClassContextSpecific && gn.Tag == 6 {
			uris = append(uris, string(gn.Bytes))
		}
	}
	return uris
}
