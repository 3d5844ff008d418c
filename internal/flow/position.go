package flow

import (
	"gopkg.in/yaml.v3"
)

// locator maps a character offset inside a scalar's value to a line and
// column of the document, so problems inside expressions point at the right
// character whatever the scalar's quoting.
type locator struct {
	lines [][]rune
	// tables caches the positions of the characters of scalars already
	// located.
	tables map[*yaml.Node]*posTable
}

// posTable holds the 1-based line and column of each character of a
// scalar's value, and of the end of the value.
type posTable struct {
	lines, cols []int32
}

// newLocator splits a document into lines as the YAML parser counts them:
// CR LF, CR, LF, NEL, LS and PS each end a line.
func newLocator(src []byte) *locator {
	var lines [][]rune
	var line []rune
	text := []rune(string(src))
	for i := 0; i < len(text); i++ {
		switch r := text[i]; r {
		case '\r', '\n', '\u0085', '\u2028', '\u2029':
			if r == '\r' && i+1 < len(text) && text[i+1] == '\n' {
				i++
			}
			lines = append(lines, line)
			line = nil
		default:
			line = append(line, r)
		}
	}
	return &locator{lines: append(lines, line), tables: map[*yaml.Node]*posTable{}}
}

// Search windows, in characters: how far past the scalar's start its first
// character may be (block scalar headers, quotes), and how far any later
// character may be from the one before (escapes, line folding, indentation).
const (
	firstWindow = 256
	nextWindow  = 64
)

// at returns the source character at (line, col), 0-based, with '\n' at the
// end of each line; ok is false past the end of the document.
func (l *locator) at(line, col int) (rune, bool) {
	if line < 0 || line >= len(l.lines) {
		return 0, false
	}
	if col < len(l.lines[line]) {
		return l.lines[line][col], true
	}
	if line == len(l.lines)-1 {
		return 0, false
	}
	return '\n', true
}

// next advances one character.
func (l *locator) next(line, col int) (int, int) {
	if col < len(l.lines[line]) {
		return line, col + 1
	}
	return line + 1, 0
}

// pos returns the 1-based line and column of the character at offset off
// (in characters) of the value of scalar n.
func (l *locator) pos(n *yaml.Node, value string, off int) (int, int) {
	if n == nil {
		return 0, 0
	}
	t, ok := l.tables[n]
	if !ok {
		t = l.table(n, value)
		l.tables[n] = t
	}
	if t == nil || off < 0 || off >= len(t.lines) {
		return n.Line, n.Column
	}
	return int(t.lines[off]), int(t.cols[off])
}

// table locates every character of the value of scalar n. It walks the
// source from the scalar's start, matching the value's characters one by
// one and skipping what the value does not hold (quotes, escapes,
// indentation). It returns nil when the source does not match: positions
// then fall back to the scalar's own.
func (l *locator) table(n *yaml.Node, value string) *posTable {
	t := &posTable{}
	line, col := n.Line-1, n.Column-1
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		col++
	}
	window := firstWindow
	for _, c := range value {
		found := false
		for range window {
			r, ok := l.at(line, col)
			if !ok {
				return nil
			}
			if r == c || r == '\n' && (c == ' ' || c == '\n') {
				found = true
				break
			}
			line, col = l.next(line, col)
		}
		if !found {
			return nil
		}
		t.lines = append(t.lines, int32(line+1))
		t.cols = append(t.cols, int32(col+1))
		line, col = l.next(line, col)
		window = nextWindow
	}
	t.lines = append(t.lines, int32(line+1))
	t.cols = append(t.cols, int32(col+1))
	return t
}
