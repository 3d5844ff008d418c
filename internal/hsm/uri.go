package hsm

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/trustflow/trustflow/internal/errs"
)

// URI names a token, and optionally an object in it, with the module that
// drives the device, as an RFC 7512 PKCS#11 URI:
//
//	pkcs11:token=T;object=O?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/pin
//
// Path attributes (separated by ';'): token, object, id, serial,
// manufacturer, model, type. Query attributes (separated by '&'):
// module-path (required), and the PIN as pin-source (file:/path,
// file:///path, or trustflow's extension env:NAME) or pin-value. Values are
// percent-decoded; vendor attributes (x-...) are ignored.
//
// String redacts pin-value; KeyRef drops it. Neither ever prints a PIN.
type URI struct {
	Token        string
	Object       string
	ID           []byte
	Serial       string
	Manufacturer string
	Model        string
	// Type is the object class: public, private, cert, secret-key or data.
	Type string
	// ModulePath is the PKCS#11 module (a shared library) to load.
	ModulePath string
	// PinSource says where the PIN is read from: "file:/path" or "env:NAME".
	PinSource string
	// PinValue is the PIN itself. Prefer PinSource: a PIN in a URI ends up
	// in shell history and process listings.
	PinValue string
}

// objectTypes are the values RFC 7512 allows for type.
var objectTypes = map[string]bool{"public": true, "private": true, "cert": true, "secret-key": true, "data": true}

// ParseURI parses a PKCS#11 URI (see [URI]). Errors name the attribute at
// fault and how to fix it; they never quote a pin-value.
func ParseURI(s string) (URI, error) {
	var u URI
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return u, uriError("", "does not start with pkcs11:", "write the key store as pkcs11:token=LABEL;object=NAME?module-path=/path/to/module.so&pin-source=file:/path/to/pin")
	}
	path, query, _ := strings.Cut(rest, "?")
	seen := map[string]bool{}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			if err := u.setAttr(attr, false, seen); err != nil {
				return URI{}, err
			}
		}
	}
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			if err := u.setAttr(attr, true, seen); err != nil {
				return URI{}, err
			}
		}
	}
	if u.ModulePath == "" {
		return URI{}, uriError("module-path", "is missing", "add ?module-path=/path/to/the/pkcs11-module.so (for SoftHSM2 on Debian: /usr/lib/softhsm/libsofthsm2.so)")
	}
	if u.Token == "" && u.Serial == "" {
		return URI{}, uriError("token", "is missing", "name the token with token=LABEL (its label, as `softhsm2-util --show-slots` or `pkcs11-tool -L` print it) or serial=SERIAL")
	}
	if u.PinSource != "" && u.PinValue != "" {
		return URI{}, uriError("pin-value", "is given together with pin-source", "keep one of them, preferably pin-source=file:/path")
	}
	return u, nil
}

func uriError(attr, problem, hint string) error {
	if attr == "" {
		return &errs.Error{Kind: errs.Invalid, Code: CodeInvalidURI, Message: "the PKCS#11 URI " + problem, Hint: hint, Op: "hsm"}
	}
	return &errs.Error{Kind: errs.Invalid, Code: CodeInvalidURI, Message: fmt.Sprintf("the PKCS#11 URI attribute %s %s", attr, problem), Hint: hint, Op: "hsm"}
}

// CodeInvalidURI is the code of a PKCS#11 URI that does not parse; the
// message names the attribute at fault and the hint how to fix it.
const CodeInvalidURI = "invalid_pkcs11_uri"

func (u *URI) setAttr(attr string, query bool, seen map[string]bool) error {
	if attr == "" {
		return nil // "a;;b" or a trailing separator
	}
	name, raw, ok := strings.Cut(attr, "=")
	if !ok {
		return uriError(strings.ToLower(name), "has no value", "write it as name=value")
	}
	if strings.HasPrefix(name, "x-") {
		return nil
	}
	val, err := pctDecode(raw)
	if err != nil {
		hint := "encode reserved characters as %XX, e.g. a space as %20"
		if name == "pin-value" {
			return uriError(name, "is not validly percent-encoded", hint)
		}
		return uriError(name, "is not validly percent-encoded ("+err.Error()+")", hint)
	}
	var dst *string
	switch {
	case !query && name == "token":
		dst = &u.Token
	case !query && name == "object":
		dst = &u.Object
	case !query && name == "serial":
		dst = &u.Serial
	case !query && name == "manufacturer":
		dst = &u.Manufacturer
	case !query && name == "model":
		dst = &u.Model
	case !query && name == "type":
		if !objectTypes[val] {
			return uriError(name, fmt.Sprintf("is %q", val), "use one of: public, private, cert, secret-key, data")
		}
		dst = &u.Type
	case !query && name == "id":
		if seen[name] {
			return uriError(name, "is given twice", "keep one")
		}
		seen[name] = true
		if val == "" {
			return uriError(name, "is empty", "give the object's CKA_ID percent-encoded, e.g. id=%01%02, or drop it")
		}
		u.ID = []byte(val)
		return nil
	case query && name == "module-path":
		if !strings.HasPrefix(val, "/") {
			return uriError(name, fmt.Sprintf("%q is not an absolute path", val), "give the module's full path, e.g. module-path=/usr/lib/softhsm/libsofthsm2.so")
		}
		dst = &u.ModulePath
	case query && name == "pin-source":
		src, err := normalPinSource(val)
		if err != nil {
			return err
		}
		val = src
		dst = &u.PinSource
	case query && name == "pin-value":
		dst = &u.PinValue
	case query && name == "module-name":
		return uriError(name, "is not supported", "give the module's full path with module-path=/path/to/module.so instead")
	default:
		where := "path"
		if query {
			where = "query"
		}
		return uriError(name, "is not a supported "+where+" attribute",
			"path attributes (before ?, separated by ;): token, object, id, serial, manufacturer, model, type; query attributes (after ?, separated by &): module-path, pin-source, pin-value")
	}
	if seen[name] {
		return uriError(name, "is given twice", "keep one")
	}
	seen[name] = true
	if val == "" {
		return uriError(name, "is empty", "give it a value or drop it")
	}
	*dst = val
	return nil
}

// normalPinSource accepts file:/path, file:///path and env:NAME, and
// returns file:/path or env:NAME.
func normalPinSource(v string) (string, error) {
	switch {
	case strings.HasPrefix(v, "file://"):
		p := strings.TrimPrefix(v, "file://")
		if !strings.HasPrefix(p, "/") {
			return "", uriError("pin-source", fmt.Sprintf("%q names a host or a relative path", v), "use file:/absolute/path or file:///absolute/path")
		}
		return "file:" + p, nil
	case strings.HasPrefix(v, "file:"):
		p := strings.TrimPrefix(v, "file:")
		if !strings.HasPrefix(p, "/") {
			return "", uriError("pin-source", fmt.Sprintf("%q is not an absolute path", v), "use file:/absolute/path")
		}
		return v, nil
	case strings.HasPrefix(v, "env:"):
		name := strings.TrimPrefix(v, "env:")
		if name == "" || strings.ContainsAny(name, "= \x00") {
			return "", uriError("pin-source", fmt.Sprintf("%q is not a valid variable name", v), "use env:NAME, e.g. env:TRUSTFLOW_HSM_PIN")
		}
		return v, nil
	}
	return "", uriError("pin-source", fmt.Sprintf("%q is neither file: nor env:", v), "use pin-source=file:/run/secrets/hsm-pin (a file holding the PIN) or pin-source=env:NAME")
}

func pctDecode(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", errors.New("% at the end")
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", errors.New("% not followed by two hex digits")
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// pctEncode encodes every byte outside RFC 7512's unreserved set and a few
// harmless path characters.
func pctEncode(s string, query bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~', c == ':', c == '[', c == ']', c == '@', c == '!', c == '$', c == '\'', c == '(', c == ')', c == '*', c == '+', c == ',':
			b.WriteByte(c)
		case c == '/' || c == '?' || c == '|':
			if query {
				b.WriteByte(c)
			} else {
				fmt.Fprintf(&b, "%%%02X", c)
			}
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func pctEncodeBytes(p []byte) string {
	var b strings.Builder
	for _, c := range p {
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func (u URI) format(pin string) string {
	var path []string
	add := func(name, v string) {
		if v != "" {
			path = append(path, name+"="+pctEncode(v, false))
		}
	}
	add("token", u.Token)
	add("serial", u.Serial)
	add("manufacturer", u.Manufacturer)
	add("model", u.Model)
	add("object", u.Object)
	if len(u.ID) > 0 {
		path = append(path, "id="+pctEncodeBytes(u.ID))
	}
	add("type", u.Type)
	q := []string{"module-path=" + pctEncode(u.ModulePath, true)}
	if u.PinSource != "" {
		q = append(q, "pin-source="+pctEncode(u.PinSource, true))
	}
	if pin != "" {
		q = append(q, "pin-value="+pin)
	}
	return "pkcs11:" + strings.Join(path, ";") + "?" + strings.Join(q, "&")
}

// String formats the URI with a pin-value, if any, replaced by "redacted".
func (u URI) String() string {
	if u.PinValue != "" {
		return u.format("redacted")
	}
	return u.format("")
}

// KeyRef formats the URI without any pin-value: what trustflow stores to
// find the key again. Only a pin-source lets it log in again later.
func (u URI) KeyRef() string { return u.format("") }

// TokenName names the token for errors and logs: its label, or its serial.
func (u URI) TokenName() string {
	if u.Token != "" {
		return u.Token
	}
	return "serial " + u.Serial
}

// WithObject returns u naming the object labelled label, with no id.
func (u URI) WithObject(label string) URI {
	u.Object, u.ID = label, nil
	return u
}

// WithID returns u naming the object with CKA_ID id as well as its label.
func (u URI) WithID(id []byte) URI {
	u.ID = append([]byte(nil), id...)
	return u
}

// pin returns the PIN from pin-value, or reads it from pin-source. A file's
// trailing newline is dropped.
func (u URI) pin() (string, error) {
	switch {
	case u.PinValue != "":
		return u.PinValue, nil
	case strings.HasPrefix(u.PinSource, "file:"):
		p := strings.TrimPrefix(u.PinSource, "file:")
		data, err := os.ReadFile(p)
		if err != nil {
			return "", tokenError(u.TokenName(), CodePINSourceUnreadable, "the PIN file "+p+" cannot be read", "create it holding the user PIN, readable by trustflow only (chmod 600), or fix pin-source", err)
		}
		pin := strings.TrimRight(string(data), "\r\n")
		clear(data)
		if pin == "" {
			return "", tokenError(u.TokenName(), CodePINSourceUnreadable, "the PIN file "+p+" is empty", "write the token's user PIN into it", nil)
		}
		return pin, nil
	case strings.HasPrefix(u.PinSource, "env:"):
		name := strings.TrimPrefix(u.PinSource, "env:")
		pin := os.Getenv(name)
		if pin == "" {
			return "", tokenError(u.TokenName(), CodePINSourceUnreadable, "the PIN variable "+name+" is empty or unset", "set "+name+" to the token's user PIN in trustflow's environment, or fix pin-source", nil)
		}
		return pin, nil
	}
	return "", tokenError(u.TokenName(), CodePINSourceUnreadable, "the URI gives no PIN", "add &pin-source=file:/path/to/pin-file (or env:NAME) to the pkcs11: URI", nil)
}
