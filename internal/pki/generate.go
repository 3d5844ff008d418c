package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// DefaultKeyType is the key GenerateKey makes when given "".
const DefaultKeyType = "ecdsa-p256"

var keyTypes = []string{"ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"}

// KeyTypes lists the key types GenerateKey accepts.
func KeyTypes() []string { return append([]string(nil), keyTypes...) }

// GenerateKey generates a private key of keyType, one of KeyTypes();
// "" means DefaultKeyType.
func GenerateKey(keyType string) (crypto.Signer, error) {
	var (
		key crypto.Signer
		err error
	)
	switch strings.ToLower(keyType) {
	case "", "ecdsa-p256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa-p384":
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ecdsa-p521":
		key, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "rsa-2048":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	case "rsa-4096":
		key, err = rsa.GenerateKey(rand.Reader, 4096)
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, newError(CodeInvalidKeyType, "use one of: "+strings.Join(keyTypes, ", "), nil,
			"unknown key type %q", keyType)
	}
	if err != nil {
		return nil, newError(CodeInvalidKeyType, "use one of: "+strings.Join(keyTypes, ", "), err, "generating a %s key failed", keyType)
	}
	return key, nil
}

// Attribute types ParseSubject accepts besides dotted OIDs.
var (
	oidEmailAddress    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
	oidDomainComponent = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}
	oidUserID          = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}
	oidTitle           = asn1.ObjectIdentifier{2, 5, 4, 12}
	oidGivenName       = asn1.ObjectIdentifier{2, 5, 4, 42}
	oidSurname         = asn1.ObjectIdentifier{2, 5, 4, 4}
	oidOrgIdentifier   = asn1.ObjectIdentifier{2, 5, 4, 97}
)

var extraAttributes = map[string]asn1.ObjectIdentifier{
	"EMAILADDRESS":           oidEmailAddress,
	"E":                      oidEmailAddress,
	"DC":                     oidDomainComponent,
	"UID":                    oidUserID,
	"TITLE":                  oidTitle,
	"GN":                     oidGivenName,
	"GIVENNAME":              oidGivenName,
	"SN":                     oidSurname,
	"SURNAME":                oidSurname,
	"ORGANIZATIONIDENTIFIER": oidOrgIdentifier,
}

const subjectAttributes = "CN, O, OU, C, L, ST, STREET, POSTALCODE, SERIALNUMBER, DC, UID, EMAILADDRESS, TITLE, GN, SN or a dotted OID"

const hintSubject = "write the subject as comma-separated TYPE=value pairs, e.g. \"CN=payments-client,O=Acme,OU=IT,C=US\"; escape a comma inside a value as \\,"

// ParseSubject parses a distinguished name written RFC 4514 style, most
// significant attribute last: "CN=svc,O=Acme\, Inc.,OU=IT,C=US,L=Paris,ST=IDF".
// Attribute types are case-insensitive: CN, O, OU, C, L, ST, STREET,
// POSTALCODE, SERIALNUMBER, DC, UID, EMAILADDRESS (or E), TITLE, GN, SN,
// ORGANIZATIONIDENTIFIER, or a dotted OID. Values may use RFC 4514 escapes
// (\, \+ \" \\ \< \> \; \= and \XX hex pairs); spaces around "=" and ","
// are ignored. The OpenSSL form "/C=US/O=Acme/CN=svc" (most significant
// first) is accepted too.
//
// The attributes keep the order written: the returned Name's ExtraNames
// hold them all in encoding order (so certificates and CSRs carry exactly the
// name given), and its fields (CommonName, Organization, ...) are filled for
// reading. emailAddress and DC values are encoded as IA5String.
func ParseSubject(s string) (pkix.Name, error) {
	var name pkix.Name
	if !utf8.ValidString(s) {
		return name, newError(CodeInvalidSubject, hintSubject, nil, "the subject is not valid UTF-8")
	}
	if len(s) > 4096 {
		return name, newError(CodeInvalidSubject, hintSubject, nil, "the subject is %d bytes, over the 4096-byte limit", len(s))
	}
	sep, mostSignificantFirst := byte(','), false
	if t := strings.TrimSpace(s); strings.HasPrefix(t, "/") {
		sep, s, mostSignificantFirst = '/', t[1:], true
	}
	rdns, err := splitUnescaped(s, sep)
	if err != nil {
		return name, err
	}
	if len(rdns) == 1 && strings.TrimSpace(rdns[0]) == "" {
		return name, newError(CodeInvalidSubject, hintSubject, nil, "the subject is empty")
	}
	var attrs []pkix.AttributeTypeAndValue
	for i, rdn := range rdns {
		typ, rawValue, ok := cutUnescaped(rdn, '=')
		typ = strings.TrimSpace(typ)
		if !ok || typ == "" {
			return pkix.Name{}, newError(CodeInvalidSubject, hintSubject, nil, "attribute #%d %q is not of the form TYPE=value", i+1, strings.TrimSpace(rdn))
		}
		if _, _, multi := cutUnescaped(rawValue, '+'); multi {
			return pkix.Name{}, newError(CodeInvalidSubject, hintSubject+"; multi-valued RDNs (+) are not supported, escape a literal plus as \\+", nil,
				"attribute %s has a multi-valued RDN", typ)
		}
		value, verr := unescapeDNValue(strings.TrimSpace(rawValue))
		if verr != "" {
			return pkix.Name{}, newError(CodeInvalidSubject, hintSubject, nil, "attribute %s: %s", typ, verr)
		}
		if value == "" {
			return pkix.Name{}, newError(CodeInvalidSubject, hintSubject, nil, "attribute %s has an empty value", typ)
		}
		atv, err := addAttribute(&name, typ, value)
		if err != nil {
			return pkix.Name{}, err
		}
		attrs = append(attrs, atv)
	}
	if !mostSignificantFirst {
		slices.Reverse(attrs)
	}
	name.ExtraNames = attrs
	return name, nil
}

// Standard attribute types (RFC 4519).
var (
	oidCommonName         = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidSerialNumber       = asn1.ObjectIdentifier{2, 5, 4, 5}
	oidCountry            = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidLocality           = asn1.ObjectIdentifier{2, 5, 4, 7}
	oidProvince           = asn1.ObjectIdentifier{2, 5, 4, 8}
	oidStreetAddress      = asn1.ObjectIdentifier{2, 5, 4, 9}
	oidOrganization       = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidOrganizationalUnit = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidPostalCode         = asn1.ObjectIdentifier{2, 5, 4, 17}
)

// addAttribute validates one attribute, fills the matching field of name and
// returns the attribute as it is encoded.
func addAttribute(name *pkix.Name, typ, value string) (pkix.AttributeTypeAndValue, error) {
	upper := strings.ToUpper(typ)
	atv := pkix.AttributeTypeAndValue{Value: value}
	limit := 0 // upper bound on the length, from RFC 5280 Appendix A
	switch upper {
	case "CN", "COMMONNAME":
		if name.CommonName != "" {
			return atv, newError(CodeInvalidSubject, hintSubject, nil, "attribute CN is given twice")
		}
		name.CommonName, atv.Type, limit = value, oidCommonName, 64
	case "O", "ORGANIZATIONNAME":
		name.Organization = append(name.Organization, value)
		atv.Type, limit = oidOrganization, 64
	case "OU", "ORGANIZATIONALUNITNAME":
		name.OrganizationalUnit = append(name.OrganizationalUnit, value)
		atv.Type, limit = oidOrganizationalUnit, 64
	case "C", "COUNTRYNAME":
		if len(value) != 2 || strings.ToUpper(value) != value || !isLetters(value) {
			return atv, newError(CodeInvalidSubject, "use the two-letter ISO 3166 country code, e.g. C=US or C=DE", nil,
				"attribute C must be a two-letter country code, not %q", value)
		}
		name.Country = append(name.Country, value)
		atv.Type = oidCountry
	case "L", "LOCALITYNAME":
		name.Locality = append(name.Locality, value)
		atv.Type, limit = oidLocality, 128
	case "ST", "S", "STATEORPROVINCENAME":
		name.Province = append(name.Province, value)
		atv.Type, limit = oidProvince, 128
	case "STREET", "STREETADDRESS":
		name.StreetAddress = append(name.StreetAddress, value)
		atv.Type = oidStreetAddress
	case "POSTALCODE":
		name.PostalCode = append(name.PostalCode, value)
		atv.Type, limit = oidPostalCode, 40
	case "SERIALNUMBER":
		if name.SerialNumber != "" {
			return atv, newError(CodeInvalidSubject, hintSubject, nil, "attribute SERIALNUMBER is given twice")
		}
		name.SerialNumber, atv.Type, limit = value, oidSerialNumber, 64
	default:
		oid, ok := extraAttributes[upper]
		if !ok {
			parsed, perr := parseOID(typ)
			if perr != nil {
				return atv, newError(CodeInvalidSubject, "use one of "+subjectAttributes, nil, "unknown attribute type %q", typ)
			}
			oid = parsed
		}
		atv.Type = oid
		if oid.Equal(oidEmailAddress) || oid.Equal(oidDomainComponent) {
			// IA5String (ASCII) attributes.
			if oid.Equal(oidEmailAddress) {
				if _, err := mail.ParseAddress(value); err != nil || strings.ContainsAny(value, "<> ") {
					return atv, newError(CodeInvalidSubject, hintSubject, err, "attribute %s is not a valid e-mail address: %q", typ, value)
				}
			}
			for _, r := range value {
				if r > 0x7f {
					return atv, newError(CodeInvalidSubject, hintSubject, nil, "attribute %s must be ASCII: %q", typ, value)
				}
			}
			atv.Value = asn1.RawValue{Tag: asn1.TagIA5String, Bytes: []byte(value)}
		}
	}
	if limit > 0 && utf8.RuneCountInString(value) > limit {
		return atv, newError(CodeInvalidSubject, hintSubject, nil, "attribute %s is %d characters long, over the limit of %d (RFC 5280)", typ, utf8.RuneCountInString(value), limit)
	}
	return atv, nil
}

func isLetters(s string) bool {
	for _, r := range s {
		if (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') {
			return false
		}
	}
	return true
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 32 {
		return nil, fmt.Errorf("not a dotted OID")
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		if p == "" || len(p) > 9 || (len(p) > 1 && p[0] == '0') {
			return nil, fmt.Errorf("not a dotted OID")
		}
		n := 0
		for _, c := range p {
			if c < '0' || c > '9' {
				return nil, fmt.Errorf("not a dotted OID")
			}
			n = n*10 + int(c-'0')
		}
		oid[i] = n
	}
	if oid[0] > 2 || (oid[0] < 2 && oid[1] > 39) {
		return nil, fmt.Errorf("not a dotted OID")
	}
	return oid, nil
}

// splitUnescaped splits s at every sep not preceded by a backslash escape.
func splitUnescaped(s string, sep byte) ([]string, error) {
	var (
		parts []string
		start int
	)
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // skip the escaped byte; unescapeDNValue validates it
		case sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	parts = append(parts, s[start:])
	if len(parts) > 64 {
		return nil, newError(CodeInvalidSubject, hintSubject, nil, "the subject has %d attributes, over the limit of 64", len(parts))
	}
	return parts, nil
}

// cutUnescaped cuts s at the first sep not escaped with a backslash.
func cutUnescaped(s string, sep byte) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// unescapeDNValue resolves RFC 4514 escapes; the string result names the
// problem, if any.
func unescapeDNValue(v string) (string, string) {
	if strings.HasPrefix(v, "#") {
		return "", "hex-encoded (#...) values are not supported; write the value as text"
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '\\' {
			if c == '"' {
				return "", "a double quote must be escaped as \\\""
			}
			b.WriteByte(c)
			continue
		}
		if i+1 >= len(v) {
			return "", "the value ends with a lone backslash"
		}
		n := v[i+1]
		if isHex(n) && i+2 < len(v) && isHex(v[i+2]) {
			b.WriteByte(unhex(n)<<4 | unhex(v[i+2]))
			i += 2
			continue
		}
		if !strings.ContainsRune(`,+"\<>;= #/`, rune(n)) {
			return "", fmt.Sprintf("\\%c is not a valid escape", n)
		}
		b.WriteByte(n)
		i++
	}
	out := b.String()
	if !utf8.ValidString(out) {
		return "", "the hex escapes do not form valid UTF-8"
	}
	return out, ""
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// CreateCSR creates a PEM certificate signing request signed by key, for
// subject and the given subjectAltNames: DNS names, IP literals, e-mail
// addresses (containing "@") and URIs (containing "://", e.g. SPIFFE IDs)
// are each put in their own SAN type.
func CreateCSR(key crypto.Signer, subject pkix.Name, dnsNames []string) (pemCSR []byte, err error) {
	if key == nil {
		return nil, newError(CodeInvalidOption, "generate a key first (GenerateKey)", nil, "no private key given for the CSR")
	}
	tmpl := &x509.CertificateRequest{Subject: subject}
	for _, n := range dnsNames {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
			return nil, newError(CodeInvalidOption, "remove the empty entry", nil, "an empty subjectAltName was given")
		case net.ParseIP(n) != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(n))
		case strings.Contains(n, "://"):
			u, perr := url.Parse(n)
			if perr != nil {
				return nil, newError(CodeInvalidOption, "give a valid URI such as spiffe://example.org/service", perr, "subjectAltName %q is not a valid URI", n)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		case strings.Contains(n, "@"):
			tmpl.EmailAddresses = append(tmpl.EmailAddresses, n)
		default:
			if !validDNSName(n) {
				return nil, newError(CodeInvalidOption, "give a host name such as api.example.com or *.example.com, or an IP address", nil,
					"subjectAltName %q is not a valid DNS name", n)
			}
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if subject.String() == "" && len(dnsNames) == 0 {
		return nil, newError(CodeInvalidSubject, hintSubject, nil, "the CSR needs a subject or at least one subjectAltName")
	}
	der, cerr := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if cerr != nil {
		return nil, newError(CodeInvalidOption, "use a key from GenerateKey or ParsePrivateKey", cerr, "creating the CSR failed")
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// validDNSName accepts host names with an optional leading "*." wildcard.
func validDNSName(n string) bool {
	n = strings.TrimPrefix(n, "*.")
	n = strings.TrimSuffix(n, ".")
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// EncodeCertificatesPEM encodes certificates as concatenated PEM CERTIFICATE blocks.
func EncodeCertificatesPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// EncodePrivateKeyPEM encodes key as an unencrypted PKCS#8 PEM block
// ("PRIVATE KEY"). The result is secret: seal it before it leaves memory.
func EncodePrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, newError(CodeUnsupportedFormat, "use an ECDSA, RSA or Ed25519 key", err, "encoding the %s private key failed", KeyType(key.Public()))
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
