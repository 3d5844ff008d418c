package engine

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// encodings returns the forms of a secret an upstream may echo back, each
// made by the standard library (or spelled out), not by the redactor.
func encodings(secret string) map[string]string {
	jsonEsc := func(html bool) string {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(html)
		_ = enc.Encode(secret) // a string always encodes
		out := strings.TrimSuffix(b.String(), "\n")
		return out[1 : len(out)-1]
	}
	var ascii, allPct strings.Builder
	for _, r := range secret {
		switch {
		case r == '"' || r == '\\':
			ascii.WriteString(`\` + string(r))
		case r < 0x20 || r > 0x7e:
			for _, u := range utf16.Encode([]rune{r}) {
				fmt.Fprintf(&ascii, `\u%04x`, u)
			}
		default:
			ascii.WriteRune(r)
		}
	}
	for _, c := range []byte(secret) {
		fmt.Fprintf(&allPct, "%%%02x", c)
	}
	out := map[string]string{
		"raw":          secret,
		"upper":        strings.ToUpper(secret),
		"lower":        strings.ToLower(secret),
		"json":         jsonEsc(true),
		"json-nohtml":  jsonEsc(false),
		"json-ascii":   ascii.String(),
		"json-slash":   strings.ReplaceAll(jsonEsc(false), "/", `\/`),
		"query":        url.QueryEscape(secret),
		"path":         url.PathEscape(secret),
		"query-upper":  strings.ToUpper(url.QueryEscape(secret)),
		"percent-all":  allPct.String(),
		"hex":          hex.EncodeToString([]byte(secret)),
		"hex-upper":    strings.ToUpper(hex.EncodeToString([]byte(secret))),
		"base64":       base64.StdEncoding.EncodeToString([]byte(secret)),
		"base64url":    base64.URLEncoding.EncodeToString([]byte(secret)),
		"base64-raw":   base64.RawStdEncoding.EncodeToString([]byte(secret)),
		"base64url-rw": base64.RawURLEncoding.EncodeToString([]byte(secret)),
		"basic-auth":   "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+secret)),
		"basic-auth-2": base64.StdEncoding.EncodeToString([]byte("us:" + secret + ":x")),
		"json-in-url":  url.QueryEscape(`{"password":"` + jsonEsc(true) + `"}`),
	}
	for name, e := range out {
		// An upper- or lower-cased form that is no case variant (ı → I)
		// is another string, not an encoding.
		if (name == "upper" || name == "lower") && !strings.EqualFold(e, secret) {
			delete(out, name)
		}
	}
	return out
}

// The reference below is a slow, independent statement of what the
// redactor finds: decode the whole text each way, then compare windows
// with strings.EqualFold.

var (
	refJSONEscape = regexp.MustCompile(`\\(["\\/bfnrt]|u[0-9a-fA-F]{4})`)
	refPercent    = regexp.MustCompile(`%[0-9a-fA-F]{2}`)
	refBase64Run  = regexp.MustCompile(`[A-Za-z0-9+/_-]+`)
	refBase64Only = regexp.MustCompile(`^[A-Za-z0-9+/_-]+=*$`)
)

// refUnJSON decodes JSON string escapes (surrogate pairs combined).
func refUnJSON(s string) string {
	var out []byte
	var units []uint16
	flush := func() {
		out = append(out, string(utf16.Decode(units))...)
		units = units[:0]
	}
	last := 0
	for _, m := range refJSONEscape.FindAllStringIndex(s, -1) {
		if m[0] != last {
			flush()
			out = append(out, s[last:m[0]]...)
		}
		esc := s[m[0]+1 : m[1]]
		if esc[0] == 'u' {
			n, _ := strconv.ParseUint(esc[1:], 16, 16)
			units = append(units, uint16(n))
		} else {
			flush()
			out = append(out, map[byte]byte{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}[esc[0]])
		}
		last = m[1]
	}
	flush()
	return string(append(out, s[last:]...))
}

func refUnPercent(s string) string {
	return refPercent.ReplaceAllStringFunc(s, func(m string) string {
		n, _ := strconv.ParseUint(m[1:], 16, 8)
		return string([]byte{byte(n)})
	})
}

// refContainsFold reports whether h holds n in any letter case; invalid
// bytes match only themselves.
func refContainsFold(h, n string) bool {
	count := utf8.RuneCountInString(n)
	for i := 0; i < len(h); {
		j, k := i, 0
		for ; j < len(h) && k < count; k++ {
			_, size := utf8.DecodeRuneInString(h[j:])
			j += size
		}
		if k == count && refEqualFold(h[i:j], n) {
			return true
		}
		_, size := utf8.DecodeRuneInString(h[i:])
		i += size
	}
	return false
}

func refEqualFold(a, b string) bool {
	if !utf8.ValidString(a) || !utf8.ValidString(b) {
		return a == b
	}
	return strings.EqualFold(a, b)
}

func refBase64(tok string) (string, bool) {
	tok = strings.NewReplacer("-", "+", "_", "/").Replace(tok)
	if len(tok)%4 == 1 {
		tok = tok[:len(tok)-1]
	}
	dec, err := base64.RawStdEncoding.DecodeString(tok)
	return string(dec), err == nil
}

// refMentions reports whether text holds secret as the redactor must find it.
func refMentions(text, secret string) bool {
	views := []string{text, refUnJSON(text), refUnPercent(text), refUnJSON(refUnPercent(text))}
	n := utf8.RuneCountInString(secret)
	if n < minSubstringSecret {
		for _, v := range views {
			if refEqualFold(strings.TrimSpace(v), secret) {
				return true
			}
		}
		if t := strings.TrimSpace(text); refBase64Only.MatchString(t) {
			dec, ok := refBase64(strings.TrimRight(t, "="))
			return ok && refEqualFold(dec, secret)
		}
		return false
	}
	for _, v := range views {
		if refContainsFold(v, secret) || refContainsFold(v, strings.ReplaceAll(secret, " ", "+")) {
			return true
		}
	}
	if refContainsFold(text, hex.EncodeToString([]byte(secret))) {
		return true
	}
	for _, tok := range refBase64Run.FindAllString(text, -1) {
		for k := 0; k < 4 && k < len(tok); k++ {
			if dec, ok := refBase64(tok[k:]); ok && strings.Contains(dec, secret) {
				return true
			}
		}
	}
	return false
}

// markerless replaces each [redacted] with a byte the secret does not hold,
// so that the check below cannot mistake the marker for the secret.
func markerless(out, secret string) string {
	sep := "\x00"
	if strings.Contains(secret, sep) {
		sep = "\x01"
	}
	return strings.ReplaceAll(out, "[redacted]", sep)
}

func TestRedactorFindsEveryEncoding(t *testing.T) {
	t.Parallel()
	for _, secret := range []string{"sk-live-7f3a9c2e", "p@ss w0rd/+&=?", `quo"te\back`, "Ünïcödé-秘密-🔑", "<tag>&amp;"} {
		r := newRedactor()
		r.add(secret)
		for name, e := range encodings(secret) {
			text := "before " + e + " after"
			require.True(t, refMentions(text, secret), "%s: the reference finds %q", name, e)
			out := r.text(text)
			require.NotContains(t, out, e, "%s of %q survived: %q", name, secret, out)
			require.False(t, refMentions(markerless(out, secret), secret), "%s of %q: %q", name, secret, out)
			require.True(t, strings.HasPrefix(out, "before "), "%s: the text around is kept: %q", name, out)
			require.True(t, strings.HasSuffix(out, " after"), "%s: the text around is kept: %q", name, out)
		}
	}
}

func TestRedactorLeavesOtherTextAlone(t *testing.T) {
	t.Parallel()
	r := newRedactor()
	r.add("sk-live-7f3a9c2e", "ab", "    ", "\t\n")
	for _, text := range []string{
		"", "sk-live", "7f3a9c2", "a    b", "    ", "\t\n", `{"status":200,"body":"ok"}`, "abc", "a b", "about", "tab", "%61%62%63",
		"c2stbGl2ZS03ZjNhOWMy", // base64 of a prefix of the secret
		"Basic dXNlcjpwYXNz",
	} {
		require.Equal(t, text, r.text(text))
	}
}

func TestRedactorShortSecretsOnlyWhole(t *testing.T) {
	t.Parallel()
	r := newRedactor()
	r.add("ab")
	for text, want := range map[string]string{
		"ab":          "[redacted]",
		" AB\n":       "[redacted]",
		"%61%62":      "[redacted]",
		`\u0061b`:     "[redacted]",
		"YWI=":        "[redacted]",
		"YWI":         "[redacted]",
		"about":       "about",
		"ab cd":       "ab cd",
		"tab":         "tab",
		"Basic YWI=":  "Basic YWI=",
		`{"k":"ab"}`:  `{"k":"ab"}`,
		"x-ab-y":      "x-ab-y",
		"[redacted]a": "[redacted]a",
	} {
		require.Equal(t, want, r.text(text), "%q", text)
	}
	// In stored JSON, a short secret goes where it is a whole string or number.
	r.add("7")
	require.Equal(t, `{"h":{"x-pin":"[redacted]"},"k":"ab cd","n":"[redacted]","m":17}`,
		reorder(r.json(`{"h":{"x-pin":"ab"},"k":"ab cd","n":7,"m":17}`)))
}

// reorder puts the keys of the test's JSON object in the order it writes them.
func reorder(s string) string {
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return s
	}
	h, _ := json.Marshal(v["h"])
	k, _ := json.Marshal(v["k"])
	n, _ := json.Marshal(v["n"])
	m, _ := json.Marshal(v["m"])
	return fmt.Sprintf(`{"h":%s,"k":%s,"n":%s,"m":%s}`, h, k, n, m)
}

func TestRedactorJSONValues(t *testing.T) {
	t.Parallel()
	r := newRedactor()
	r.add("hunter22")
	in := `{"body":{"echo":"HUNTER22","hunter22":1,"list":["x","aHVudGVyMjI="]},"status":200}`
	require.Equal(t, `{"body":{"[redacted]":1,"echo":"[redacted]","list":["x","[redacted]"]},"status":200}`, r.json(in))
	same := `{"z":1,  "a":"plain"}`
	require.Equal(t, same, r.json(same), "JSON without a secret is returned as it was")
	require.Equal(t, "not json [redacted]", r.json("not json hunter22"))
}

func TestRedactorDerivedValues(t *testing.T) {
	t.Parallel()
	r := newRedactor()
	r.add("sk-live-7f3a9c2e")
	require.True(t, r.derive("Bearer sk-live-7f3a9c2e", "sk-liv", "pw=ab"))
	require.ElementsMatch(t, []string{"sk-live-7f3a9c2e", "sk-liv", "pw=ab"}, r.values(),
		"a value that already holds a secret is not added; the others are")
	require.Equal(t, "echo: [redacted]", r.text("echo: sk-liv"))
	for i := range maxDerivedSecrets - 2 { // two are in already
		require.True(t, r.derive(fmt.Sprintf("derived-%03d-x", i)))
	}
	require.False(t, r.derive("one-too-many"), "the limit is reported")
	require.Equal(t, "one-too-many", r.text("one-too-many"))
}

func TestRunInputEncoding(t *testing.T) {
	t.Parallel()
	in := map[string]any{"a": "x", "n": float64(3)}
	raw, err := encodeRunInput(in, nil)
	require.NoError(t, err)
	got, c, err := decodeRunInput(raw)
	require.NoError(t, err)
	require.Equal(t, in, got)
	require.Nil(t, c, "a plain input carries nothing")
	raw, err = encodeRunInput(in, &carried{Redact: []string{"s3cret"}, Inputs: []string{"a"}})
	require.NoError(t, err)
	got, c, err = decodeRunInput(raw)
	require.NoError(t, err)
	require.Equal(t, in, got)
	require.Equal(t, &carried{Redact: []string{"s3cret"}, Inputs: []string{"a"}}, c)
	_, _, err = decodeRunInput([]byte(`[{}]`))
	require.ErrorContains(t, err, "1 parts, not 2")
}

// FuzzRedactor: for any secret and text, the redactor leaves text that
// does not hold the secret (as refMentions defines it) unchanged, and
// leaves nothing of the secret in any encoding, whether the text held it
// already or had one of encodings(secret) put in at any place. The seed
// corpus is testdata/fuzz/FuzzRedactor.
func FuzzRedactor(f *testing.F) {
	f.Add("sk-live-7f3a9c2e", `{"echo":"x"}`, uint8(0), uint16(9))
	f.Add("ab", "ab", uint8(3), uint16(0))
	f.Add("p@ss w0rd", "Authorization: Basic ", uint8(17), uint16(21))
	f.Fuzz(func(t *testing.T, secret, text string, which uint8, at uint16) {
		secret = strings.ToValidUTF8(secret, "")
		if strings.TrimFunc(secret, unicode.IsSpace) == "" || len(secret) > 64 || len(text) > 4096 || strings.ContainsRune(secret, utf8.RuneError) {
			return
		}
		r := newRedactor()
		r.add(secret)
		out := r.text(text)
		if !refMentions(text, secret) {
			require.Equal(t, text, out, "text without the secret is unchanged")
		} else if utf8.RuneCountInString(secret) < minSubstringSecret {
			require.Equal(t, "[redacted]", out, "a short secret goes where it is the whole text")
		}
		if utf8.RuneCountInString(secret) < minSubstringSecret {
			return
		}
		require.False(t, refMentions(markerless(out, secret), secret), "secret %q survives in %q", secret, out)
		names := make([]string, 0, 32)
		encs := encodings(secret)
		for name := range encs {
			names = append(names, name)
		}
		slices.Sort(names)
		e := encs[names[int(which)%len(names)]]
		pos := int(at) % (len(text) + 1)
		in := text[:pos] + e + text[pos:]
		out = r.text(in)
		if !refMentions(in, secret) {
			// Put next to a broken escape ("%0" before it), the form no longer
			// decodes to the secret.
			require.Equal(t, in, out, "text without the secret is unchanged")
			return
		}
		clean := markerless(out, secret)
		require.NotContains(t, clean, e, "%s form of %q survives in %q", names[int(which)%len(names)], secret, out)
		require.False(t, refMentions(clean, secret), "secret %q survives in %q", secret, out)
	})
}

// BenchmarkRedactor measures the redactor on a stored call result (JSON
// with headers, a body and base64 and percent-encoded fields, no secret in
// it) of 4 KiB and 1 MiB, with one and with eight secrets.
func BenchmarkRedactor(b *testing.B) {
	var item strings.Builder
	item.WriteString(`{"id":"u-1234","login":"jdoe","note":"Plain text with WORDS, numbers 12345 and a path /a/b%2Fc?x=1&y=two",`)
	item.WriteString(`"blob":"` + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("payload bytes ", 8))) + `","esc":"line\nnext \"quoted\" \u00e9"}`)
	for _, size := range []int{4 << 10, 1 << 20} {
		var doc strings.Builder
		doc.WriteString(`{"status":200,"headers":{"content-type":"application/json"},"body":[`)
		for doc.Len() < size {
			doc.WriteString(item.String() + ",")
		}
		text := strings.TrimSuffix(doc.String(), ",") + `]}`
		for _, n := range []int{1, 8} {
			r := newRedactor()
			for i := range n {
				r.add(fmt.Sprintf("sk-live-%02d-7f3a9c2e", i))
			}
			b.Run(fmt.Sprintf("%dKiB/%dsecrets", size>>10, n), func(b *testing.B) {
				b.SetBytes(int64(len(text)))
				for b.Loop() {
					if r.json(text) != text {
						b.Fatal("a text without the secret changed")
					}
				}
			})
		}
	}
}
