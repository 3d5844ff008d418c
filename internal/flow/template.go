package flow

import (
	"strings"
	"unicode/utf8"
)

// segment is a piece of a templated string: literal text, or an expression
// with the byte offsets of its "${" (start) and of its source (src).
type segment struct {
	text       string
	expr       string
	isExpr     bool
	start      int
	src        int
	terminated bool
}

// scanTemplate splits a string into literal text and ${...} expressions.
// "$${" is a literal "${". An expression ends at the first "}" outside CEL
// string literals and nested braces. When an expression is not closed, the
// last segment is that expression with terminated false.
func scanTemplate(s string) []segment {
	var segs []segment
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			segs = append(segs, segment{text: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		if s[i] != '$' {
			j := strings.IndexByte(s[i:], '$')
			if j < 0 {
				lit.WriteString(s[i:])
				break
			}
			lit.WriteString(s[i : i+j])
			i += j
			continue
		}
		if strings.HasPrefix(s[i:], "$${") {
			lit.WriteString("${")
			i += 3
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			lit.WriteByte('$')
			i++
			continue
		}
		flush()
		end, ok := exprEnd(s, i+2)
		if !ok {
			segs = append(segs, segment{expr: s[i+2:], isExpr: true, start: i, src: i + 2})
			return segs
		}
		segs = append(segs, segment{expr: s[i+2 : end], isExpr: true, start: i, src: i + 2, terminated: true})
		i = end + 1
	}
	flush()
	return segs
}

// exprEnd returns the index of the "}" that closes an expression starting
// at i.
func exprEnd(s string, i int) (int, bool) {
	depth := 0
	for i < len(s) {
		switch c := s[i]; c {
		case '{':
			depth++
		case '}':
			if depth == 0 {
				return i, true
			}
			depth--
		case '\'', '"':
			i = stringEnd(s, i)
			continue
		}
		i++
	}
	return 0, false
}

// stringEnd returns the index just past the CEL string literal whose
// opening quote is at i (or len(s) when it is not closed).
func stringEnd(s string, i int) int {
	q := s[i]
	raw := i > 0 && (s[i-1] == 'r' || s[i-1] == 'R') ||
		i > 1 && (s[i-2] == 'r' || s[i-2] == 'R') && (s[i-1] == 'b' || s[i-1] == 'B')
	delim := string(q)
	if strings.HasPrefix(s[i:], strings.Repeat(delim, 3)) {
		delim = strings.Repeat(delim, 3)
	}
	j := i + len(delim)
	for j < len(s) {
		if !raw && s[j] == '\\' {
			j += 2
			continue
		}
		if strings.HasPrefix(s[j:], delim) {
			return j + len(delim)
		}
		if len(delim) == 1 && s[j] == '\n' {
			return j
		}
		j++
	}
	return len(s)
}

// unescapeKey turns "$${" into "${" in a map key, which is never evaluated.
func unescapeKey(k string) string {
	return strings.ReplaceAll(k, "$${", "${")
}

// hasExpr reports whether s holds a ${ that is not escaped.
func hasExpr(s string) bool {
	for _, seg := range scanTemplate(s) {
		if seg.isExpr {
			return true
		}
	}
	return false
}

// runeOffset converts a byte offset in s to a character offset.
func runeOffset(s string, byteOff int) int {
	if byteOff > len(s) {
		byteOff = len(s)
	}
	return utf8.RuneCountInString(s[:byteOff])
}
