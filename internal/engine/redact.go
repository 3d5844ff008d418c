package engine

// Secret run data. A run keeps the values of its secret inputs out of
// everything it stores or logs, in two ways:
//
//   - By field: a value the run computes from a secret (flow.Secrets: an
//     expression that reads input.<secret>, or a value computed from one)
//     is masked where the engine stores it: a set step's field, the run's
//     output, a fail step's message, a sub-flow's input. This covers a
//     secret of any length.
//   - By value: every stored text (step outputs, errors, evidence, the
//     run's output and error, its audit records and log lines) passes
//     through the run's redactor, which knows the secret values, the
//     values the run computed from them, and those of the runs that
//     started it. It finds a secret of 4 or more characters anywhere,
//     as is or encoded (see redactor); a shorter one only where it is a
//     whole value (a JSON string or number, a header, a path segment, an
//     error message): anywhere else it would destroy unrelated text.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/trustflow/trustflow/internal/flow"
	"github.com/trustflow/trustflow/internal/store"
)

// minSubstringSecret is the length, in characters, from which a secret is
// redacted wherever it appears in a text; a shorter one is redacted only
// where it is the whole value.
const minSubstringSecret = 4

// Limits of the values a run adds to its redactor as it computes them from
// its secrets (the secrets themselves are never limited). Past either, a
// value computed from a secret is still masked where the engine stores it,
// but an upstream that echoes it back is not caught.
const (
	maxDerivedSecrets = 256
	maxDerivedBytes   = 1 << 20
)

// redactor removes a run's secret values from the text it stores. It
// finds a secret (of at least minSubstringSecret characters) in a text
//
//   - as it is, in any letter case (Unicode simple case folding);
//   - JSON-escaped (\", \\, \/, \n, \uXXXX with either hex case and
//     surrogate pairs, ...);
//   - percent-encoded (query, form and path encoding, any set of escaped
//     characters, either hex case; a space as + or %20);
//   - hex-encoded, either case;
//   - inside standard or URL base64, padded or not, at any alignment (the
//     base64 of "user:secret" as sent in Basic authentication): a run of
//     base64 characters whose decoding holds the secret (as it is) is
//     redacted whole.
//
// A secret shorter than minSubstringSecret characters is redacted only
// where it is the whole text (trimmed): as is, JSON-escaped,
// percent-encoded or in base64. A value of white space only is no secret
// to look for. It is safe for concurrent use.
type redactor struct {
	mu      sync.Mutex
	secrets []secret
	known   map[string]bool
	// derived and bytes count the values derive added.
	derived, bytes int
}

// secret is one value to redact, with its forms to look for.
type secret struct {
	value  string
	folded string   // case-folded
	plus   string   // folded, with each space as '+'; "" when it has none
	hex    string   // lower-case hex of the value
	cores  []string // base64Cores of the value
	short  bool     // fewer than minSubstringSecret characters
}

func newRedactor() *redactor { return &redactor{known: map[string]bool{}} }

// add adds secret values.
func (r *redactor) add(values ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range values {
		r.addLocked(v)
	}
}

func (r *redactor) addLocked(v string) {
	if strings.TrimSpace(v) == "" || r.known[v] {
		return
	}
	r.known[v] = true
	s := secret{value: v, folded: foldString(v), hex: hex.EncodeToString([]byte(v)), short: utf8.RuneCountInString(v) < minSubstringSecret}
	if strings.Contains(s.folded, " ") {
		s.plus = strings.ReplaceAll(s.folded, " ", "+")
	}
	if !s.short {
		s.cores = base64Cores(v)
	}
	r.secrets = append(r.secrets, s)
}

// derive adds values the run computed from its secrets, unless the
// redactor already finds a secret in them (then an echo of the value holds
// that secret too). It reports false when the limits stopped it.
func (r *redactor) derive(values ...string) bool {
	ok := true
	for _, v := range values {
		if v == "" || r.has(v) || r.text(v) != v {
			continue
		}
		r.mu.Lock()
		if r.derived >= maxDerivedSecrets || r.bytes+len(v) > maxDerivedBytes {
			ok = false
		} else if !r.known[v] {
			r.derived++
			r.bytes += len(v)
			r.addLocked(v)
		}
		r.mu.Unlock()
	}
	return ok
}

func (r *redactor) has(v string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.known[v]
}

// values lists the values to redact, for the runs this one starts.
func (r *redactor) values() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.secrets))
	for i, s := range r.secrets {
		out[i] = s.value
	}
	return out
}

func (r *redactor) snapshot() []secret {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.secrets[:len(r.secrets):len(r.secrets)]
}

// text returns s with every secret found in it replaced by [redacted].
func (r *redactor) text(s string) string {
	list := r.snapshot()
	if len(list) == 0 || s == "" {
		return s
	}
	spans := findSecrets(s, list)
	if len(spans) == 0 {
		return s
	}
	return replaceSpans(s, spans)
}

// whole reports whether s, all of it, is a secret value (for numbers).
func (r *redactor) whole(s string) bool {
	f := foldString(strings.TrimSpace(s))
	for _, sec := range r.snapshot() {
		if f == sec.folded {
			return true
		}
	}
	return false
}

// json redacts a stored JSON text value by value: each string (and object
// key) as a text of its own, each number that is a secret. Text that is
// not JSON is redacted as text. Unchanged JSON is returned as it was.
func (r *redactor) json(s string) string {
	if s == "" || len(r.snapshot()) == 0 {
		return s
	}
	v, err := flow.DecodeJSON([]byte(s))
	if err != nil {
		return r.text(s)
	}
	out, changed := r.value(v)
	if !changed {
		return s
	}
	return encode(out)
}

// value redacts a JSON-like value; it reports whether anything changed.
func (r *redactor) value(v any) (any, bool) {
	switch x := v.(type) {
	case string:
		t := r.text(x)
		return t, t != x
	case int64, float64, int:
		if r.whole(flow.Text(x)) {
			return flow.Redacted, true
		}
	case []any:
		var out []any
		for i, e := range x {
			n, c := r.value(e)
			if c && out == nil {
				out = slices.Clone(x)
			}
			if out != nil {
				out[i] = n
			}
		}
		if out != nil {
			return out, true
		}
	case map[string]any:
		var out map[string]any
		for k, e := range x {
			nk := r.text(k)
			n, c := r.value(e)
			if (c || nk != k) && out == nil {
				out = make(map[string]any, len(x))
				for k2, e2 := range x {
					out[k2] = e2
				}
			}
			if out != nil {
				if nk != k {
					delete(out, k)
				}
				out[nk] = n
			}
		}
		if out != nil {
			return out, true
		}
	}
	return v, false
}

// error returns rerr with secrets redacted from its text.
func (r *redactor) error(rerr *RunError) *RunError {
	if rerr == nil {
		return nil
	}
	out := *rerr
	out.Message, out.Hint, out.Code = r.text(out.Message), r.text(out.Hint), r.text(out.Code)
	return &out
}

// span is a byte range [start, end) of a text.
type span struct{ start, end int }

// findSecrets returns the spans of s that hold a secret.
func findSecrets(s string, list []secret) []span {
	var out []span
	views := []view{foldView(s)}
	if strings.IndexByte(s, '\\') >= 0 {
		views = append(views, foldDecoded(unescapeJSON(identity(s))))
	}
	if strings.IndexByte(s, '%') >= 0 {
		d := unescapePercent(identity(s))
		views = append(views, foldDecoded(d))
		if bytes.IndexByte(d.b, '\\') >= 0 {
			// JSON sent URL-encoded (a query parameter holding JSON).
			views = append(views, foldDecoded(unescapeJSON(d)))
		}
	}
	long := false
	for _, sec := range list {
		if sec.short {
			for _, v := range views {
				if strings.TrimSpace(v.text) == sec.folded {
					out = append(out, span{0, len(s)})
					break
				}
			}
			continue
		}
		long = true
		for _, v := range views {
			v.findAll(sec.folded, &out)
			if sec.plus != "" {
				v.findAll(sec.plus, &out)
			}
		}
		views[0].findAll(sec.hex, &out)
	}
	out = append(out, base64Secrets(s, list, long)...)
	return out
}

// replaceSpans replaces the spans of s (merged where they overlap or
// touch) with [redacted].
func replaceSpans(s string, spans []span) string {
	slices.SortFunc(spans, func(a, b span) int { return a.start - b.start })
	var b strings.Builder
	b.Grow(len(s))
	at := 0
	for i := 0; i < len(spans); {
		cur := spans[i]
		for i++; i < len(spans) && spans[i].start <= cur.end; i++ {
			cur.end = max(cur.end, spans[i].end)
		}
		b.WriteString(s[at:cur.start])
		b.WriteString(flow.Redacted)
		at = cur.end
	}
	b.WriteString(s[at:])
	return b.String()
}

// view is a text as one way of reading it (case-folded, JSON-unescaped,
// percent-decoded), each byte with the span of the original text it comes
// from.
type view struct {
	text       string
	start, end []int32 // nil: the bytes are the original's, one for one
}

func (v view) findAll(needle string, out *[]span) {
	if needle == "" {
		return
	}
	for off := 0; off <= len(v.text)-len(needle); {
		k := strings.Index(v.text[off:], needle)
		if k < 0 {
			return
		}
		i := off + k
		if v.start == nil {
			*out = append(*out, span{i, i + len(needle)})
		} else {
			*out = append(*out, span{int(v.start[i]), int(v.end[i+len(needle)-1])})
		}
		off = i + 1
	}
}

// decoded is text decoded from an original, each byte b[i] with the span
// [start[i], end[i]) of the original it comes from.
type decoded struct {
	b          []byte
	start, end []int32
}

func identity(s string) decoded {
	d := decoded{b: []byte(s), start: make([]int32, len(s)), end: make([]int32, len(s))}
	for i := 0; i < len(s); i++ {
		d.start[i], d.end[i] = int32(i), int32(i+1)
	}
	return d
}

// emit appends bs, all from the span of d's bytes [from, to).
func (d *decoded) emit(src decoded, from, to int, bs ...byte) {
	for _, c := range bs {
		d.b, d.start, d.end = append(d.b, c), append(d.start, src.start[from]), append(d.end, src.end[to-1])
	}
}

// foldView is s case-folded.
func foldView(s string) view {
	ascii, upper := true, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
		if 'A' <= c && c <= 'Z' {
			upper = true
		}
	}
	switch {
	case ascii && !upper:
		return view{text: s}
	case ascii:
		return view{text: strings.ToLower(s)}
	}
	return foldDecoded(identity(s))
}

// foldDecoded case-folds decoded text.
func foldDecoded(d decoded) view {
	b := d.b
	out := make([]byte, 0, len(b))
	os, oe := make([]int32, 0, len(b)), make([]int32, 0, len(b))
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		from, to := d.start[i], d.end[i+n-1]
		if r == utf8.RuneError && n == 1 {
			out = append(out, b[i])
		} else {
			out = utf8.AppendRune(out, foldRune(r))
		}
		for len(os) < len(out) {
			os, oe = append(os, from), append(oe, to)
		}
		i += n
	}
	return view{text: string(out), start: os, end: oe}
}

// foldRune maps a rune to one representative of its case-folding orbit.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		m = min(m, f)
	}
	if 'A' <= m && m <= 'Z' {
		m += 'a' - 'A'
	}
	return m
}

// foldString case-folds s (invalid bytes are kept as they are).
func foldString(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteByte(s[i])
		} else {
			b.WriteRune(foldRune(r))
		}
		i += n
	}
	return b.String()
}

// unescapeJSON decodes JSON string escapes (\", \\, \/, \b, \f, \n, \r,
// \t, \uXXXX with surrogate pairs); anything else is kept.
func unescapeJSON(src decoded) decoded {
	s := src.b
	out := decoded{b: make([]byte, 0, len(s)), start: make([]int32, 0, len(s)), end: make([]int32, 0, len(s))}
	for i := 0; i < len(s); {
		if s[i] != '\\' || i+1 >= len(s) {
			out.emit(src, i, i+1, s[i])
			i++
			continue
		}
		switch c := s[i+1]; c {
		case '"', '\\', '/':
			out.emit(src, i, i+2, c)
			i += 2
		case 'b', 'f', 'n', 'r', 't':
			out.emit(src, i, i+2, jsonControl(c))
			i += 2
		case 'u':
			r, ok := hex4(s, i+2)
			if !ok {
				out.emit(src, i, i+1, '\\')
				i++
				continue
			}
			to := i + 6
			if utf16.IsSurrogate(r) && i+7 < len(s) && s[i+6] == '\\' && s[i+7] == 'u' {
				if lo, ok := hex4(s, i+8); ok {
					if pair := utf16.DecodeRune(r, lo); pair != unicode.ReplacementChar {
						r, to = pair, i+12
					}
				}
			}
			out.emit(src, i, to, utf8.AppendRune(nil, r)...)
			i = to
		default:
			out.emit(src, i, i+1, '\\')
			i++
		}
	}
	return out
}

// jsonControl is the control character of a JSON escape (\n: newline).
func jsonControl(c byte) byte {
	switch c {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	}
	return '\t'
}

// hex4 reads four hex digits at s[i:].
func hex4(s []byte, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range s[i : i+4] {
		d, ok := hexDigit(c)
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, true
}

func hexDigit(c byte) (byte, bool) {
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

// unescapePercent decodes %XX escapes (a + stays a +).
func unescapePercent(src decoded) decoded {
	s := src.b
	out := decoded{b: make([]byte, 0, len(s)), start: make([]int32, 0, len(s)), end: make([]int32, 0, len(s))}
	for i := 0; i < len(s); {
		if s[i] == '%' && i+2 < len(s) {
			hi, ok1 := hexDigit(s[i+1])
			lo, ok2 := hexDigit(s[i+2])
			if ok1 && ok2 {
				out.emit(src, i, i+3, hi<<4|lo)
				i += 3
				continue
			}
		}
		out.emit(src, i, i+1, s[i])
		i++
	}
	return out
}

// isBase64 reports whether c is in the standard or the URL base64 alphabet.
func isBase64(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_'
}

// base64Cores returns, for each alignment of a value in base64 data, the
// base64 characters (standard alphabet) that its bytes alone determine: a
// run of base64 whose decoding holds the value holds one of them.
func base64Cores(v string) []string {
	n := len(v)
	out := make([]string, 0, 3)
	for r := range 3 {
		buf := make([]byte, r+n+2)
		copy(buf[r:], v)
		enc := base64.RawStdEncoding.EncodeToString(buf)
		from, to := (8*r+5)/6, 8*(r+n)/6
		out = append(out, enc[from:to])
	}
	return out
}

// base64Secrets returns the runs of base64 characters of s (with their
// padding) whose decoding, at some alignment, holds a long secret as it is;
// with short secrets, s itself when it is one run decoding to one.
func base64Secrets(s string, list []secret, long bool) []span {
	var out []span
	if long {
		// The URL alphabet's - and _ stand for + and /.
		norm := s
		if strings.ContainsAny(s, "-_") {
			norm = strings.NewReplacer("-", "+", "_", "/").Replace(s)
		}
		for _, sec := range list {
			if sec.short {
				continue
			}
			for _, core := range sec.cores {
				for off := 0; off <= len(norm)-len(core); {
					k := strings.Index(norm[off:], core)
					if k < 0 {
						break
					}
					i, j := off+k, off+k+len(core)
					for i > 0 && isBase64(norm[i-1]) {
						i--
					}
					for j < len(norm) && isBase64(norm[j]) {
						j++
					}
					end := j
					for end < len(s) && s[end] == '=' {
						end++
					}
					if base64Holds([]byte(norm[i:j]), sec.value) {
						out = append(out, span{i, end})
					}
					off = end
				}
			}
		}
	}
	if !slices.ContainsFunc(list, func(sec secret) bool { return sec.short }) {
		return out
	}
	// A short secret: the whole (trimmed) text as one run.
	t := strings.TrimFunc(s, unicode.IsSpace)
	tok := strings.TrimRight(t, "=")
	if tok == "" || strings.IndexFunc(tok, func(r rune) bool { return r > 0x7f || !isBase64(byte(r)) }) >= 0 {
		return out
	}
	norm := []byte(strings.NewReplacer("-", "+", "_", "/").Replace(tok))
	if dec, ok := decodeBase64(norm); ok {
		f := foldString(string(dec))
		for _, sec := range list {
			if sec.short && f == sec.folded {
				first := len(s) - len(strings.TrimLeftFunc(s, unicode.IsSpace))
				return append(out, span{first, first + len(t)})
			}
		}
	}
	return out
}

// base64Holds reports whether the base64 run tok, decoded from any of its
// first four characters on, holds v.
func base64Holds(tok []byte, v string) bool {
	for k := 0; k < 4 && k < len(tok); k++ {
		if dec, ok := decodeBase64(tok[k:]); ok && bytes.Contains(dec, []byte(v)) {
			return true
		}
	}
	return false
}

// decodeBase64 decodes standard base64 without padding, dropping a last
// character that cannot complete a byte.
func decodeBase64(tok []byte) ([]byte, bool) {
	if len(tok)%4 == 1 {
		tok = tok[:len(tok)-1]
	}
	dec := make([]byte, base64.RawStdEncoding.DecodedLen(len(tok)))
	n, err := base64.RawStdEncoding.Decode(dec, tok)
	if err != nil {
		return nil, false
	}
	return dec[:n], true
}

// secretValues lists the values of a run's secret inputs, declared and
// marked: every string and number inside them.
func secretValues(sec *flow.Secrets, input map[string]any) []string {
	var out []string
	for _, name := range sec.Inputs() {
		out = leafValues(input[name], out)
	}
	return out
}

func leafValues(v any, out []string) []string {
	switch x := v.(type) {
	case string:
		return append(out, x)
	case int64, float64, int, json.Number:
		return append(out, flow.Text(x))
	case []any:
		for _, e := range x {
			out = leafValues(e, out)
		}
	case map[string]any:
		for _, e := range x {
			out = leafValues(e, out)
		}
	}
	return out
}

// carried is what a sub-flow's run inherits from the run that started it,
// sealed with its input (so at any depth, without reading its callers).
type carried struct {
	// Redact lists the callers' secret values and values computed from them.
	Redact []string `json:"redact,omitempty"`
	// Inputs names the input fields the caller computed from its secrets:
	// they are this run's secret inputs too.
	Inputs []string `json:"secret_inputs,omitempty"`
}

// encodeRunInput is the sealed form of a run's input: the input as JSON,
// or, for a run that carries its caller's secrets, [input, carried].
func encodeRunInput(in map[string]any, c *carried) ([]byte, error) {
	if c == nil {
		return json.Marshal(in)
	}
	return json.Marshal([]any{in, c})
}

// decodeRunInput reads encodeRunInput's form; carried is nil for a run
// that carries nothing (a top-level run, or one started before runs
// carried their callers' secrets).
func decodeRunInput(raw []byte) (map[string]any, *carried, error) {
	var in map[string]any
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '[' {
		if err := json.Unmarshal(raw, &in); err != nil {
			return nil, nil, err
		}
		return in, nil, nil
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return nil, nil, err
	}
	if len(parts) != 2 {
		return nil, nil, fmt.Errorf("a sealed run input has %d parts, not 2", len(parts))
	}
	c := &carried{}
	if err := json.Unmarshal(parts[0], &in); err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(parts[1], c); err != nil {
		return nil, nil, err
	}
	return in, c, nil
}

// openInput opens a run's sealed input.
func (e *Engine) openInput(r store.Run) (map[string]any, *carried, error) {
	raw, err := e.trust.OpenSecret(r.InputSealed, runAAD(r.ID))
	if err != nil {
		return nil, nil, fmt.Errorf("engine: run %s: open its input: %w", r.ID, err)
	}
	in, c, err := decodeRunInput(raw)
	clear(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("engine: run %s: decode its input: %w", r.ID, err)
	}
	return in, c, nil
}

// ancestorSecrets returns the secret values of a run's callers, for a run
// started before runs carried them: it walks the parent chain, however
// long, to its root or to the first run that carries its own callers'.
func (e *Engine) ancestorSecrets(ctx context.Context, pid string) ([]string, error) {
	var out []string
	for pid != "" {
		parent, err := e.st.Run(ctx, pid)
		if err != nil {
			return nil, fmt.Errorf("engine: parent run %s: %w", pid, err)
		}
		doc, err := e.document(ctx, parent.FlowName, parent.FlowVersion)
		if err != nil {
			return nil, err
		}
		in, c, err := e.openInput(parent)
		if err != nil {
			return nil, err
		}
		var marked []string
		if c != nil {
			marked = c.Inputs
		}
		out = append(out, secretValues(doc.Secrets(marked), in)...)
		if c != nil {
			return append(out, c.Redact...), nil
		}
		pid = parent.ParentRunID
	}
	return out, nil
}

// eval evaluates a value in scope sc, adding what it computed from secrets
// to the run's redactor.
func (x *execution) eval(ctx context.Context, v *flow.Value, sc *scope) (flow.Evaluation, error) {
	ev, err := x.sec.Eval(ctx, v, x.flowScope(sc), sc.secretVars)
	if err == nil && len(ev.Derived) > 0 && !x.red.derive(ev.Derived...) {
		x.warnFull.Do(func() {
			x.e.log.Warn("run computes more values from its secrets than its redactor keeps; the rest are masked only where the engine stores them",
				"run", x.run.ID, "limit_values", maxDerivedSecrets, "limit_bytes", maxDerivedBytes)
		})
	}
	return ev, err
}

// cond evaluates a condition in scope sc.
func (x *execution) cond(ctx context.Context, e *flow.Expr, sc *scope) (bool, error) {
	return x.sec.EvalBool(ctx, e, x.flowScope(sc), sc.secretVars)
}

func (x *execution) redact(s string) string { return x.red.text(s) }

// redactError returns rerr with secrets redacted from its text.
func (x *execution) redactError(rerr *RunError) *RunError { return x.red.error(rerr) }

// completeMasked is completeStep for a step whose stored output (cp.Output)
// masks what it computed from secrets: real, its result in clear, is kept
// in its sealed state for the steps after it (in this advance and after a
// resume).
func (x *execution) completeMasked(ctx context.Context, s *flow.Step, cp store.Step, sc *scope, real any) outcome {
	if whole := encode(real); whole != cp.Output {
		cp.State = withResult(cp.State, whole)
	}
	return x.completeStep(ctx, s, cp, sc)
}

// withResult returns a step state that also keeps the step's result in
// clear (the state is then stored sealed), unless it already keeps one. A
// step that failed and was continued keeps only its stored result.
func withResult(state, result string) string {
	if state == `{"continued":true}` {
		return state
	}
	m := map[string]json.RawMessage{}
	if state != "" {
		if err := json.Unmarshal([]byte(state), &m); err != nil {
			return state
		}
	}
	if _, ok := m["result"]; ok {
		return state
	}
	m["result"], m["secret"] = json.RawMessage(result), json.RawMessage("true")
	return encode(m)
}

// stateResult returns the clear result a step state keeps (withResult).
func stateResult(state string) (any, bool) {
	if !strings.Contains(state, `"result"`) {
		return nil, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(state), &m); err != nil || m["result"] == nil {
		return nil, false
	}
	v, err := flow.DecodeJSON(m["result"])
	if err != nil || v == nil {
		return nil, false
	}
	return v, true
}

// shownResults returns a foreach's iteration results as stored: each body
// step's stored (masked) result where it has a checkpoint.
func (x *execution) shownResults(path string, body []*flow.Step, results []any) []any {
	if x.sec.None() {
		// Nothing is masked: the results are stored as they are.
		return results
	}
	shown := make([]any, len(results))
	for i, r := range results {
		iter, _ := r.(map[string]any)
		out := make(map[string]any, len(iter))
		for k, v := range iter {
			out[k] = v
		}
		for _, b := range body {
			if cp, ok := x.checkpoint(fmt.Sprintf("%s[%d].%s", path, i, b.ID)); ok && completed(cp) {
				out[b.ID] = x.result(store.Step{Output: cp.Output})
			}
		}
		shown[i] = out
	}
	return shown
}

// sealState reports whether a step's state must be stored sealed: it holds
// a secret, a foreach's items from a list that reads one, or a result in
// clear (withResult).
func (x *execution) sealState(state string) bool {
	return x.red.json(state) != state || readState(store.Step{State: state}).Secret
}
