package flow

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// maxProblems bounds the problems one ValidationError lists; the rest are
// counted in a final problem.
const maxProblems = 100

// Problem is one thing wrong with a flow document or a run's input.
type Problem struct {
	// File is the file name given to Parse; empty for run input.
	File string
	// Line and Column (1-based, columns counted in characters) point at the
	// offending key or value; 0 when the problem has no position.
	Line, Column int
	// Path names the field, e.g. steps[1].call.method or input.user_id.
	Path string
	// Message says what is wrong. It is safe to show to the user.
	Message string
	// Hint says what to write instead. It is safe to show to the user.
	Hint string
}

// String formats the problem as "file:line:col: path: message (hint)",
// leaving out the parts that are empty.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteString(":")
	}
	if p.Line > 0 {
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteString(":")
		if p.Column > 0 {
			b.WriteString(strconv.Itoa(p.Column))
			b.WriteString(":")
		}
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	if p.Hint != "" {
		b.WriteString(" (")
		b.WriteString(p.Hint)
		b.WriteString(")")
	}
	return b.String()
}

// ValidationError lists every problem found in a flow document (from Parse)
// or in a run's input (from CheckInput).
type ValidationError struct {
	Problems []Problem
}

// Error joins the problems, one per line.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// problems collects Problems while a document is read.
type problems struct {
	file string
	list []Problem
}

// add records a problem at a position.
func (ps *problems) add(line, col int, path, hint, format string, args ...any) {
	ps.list = append(ps.list, Problem{
		File: ps.file, Line: line, Column: col, Path: path,
		Message: fmt.Sprintf(format, args...), Hint: hint,
	})
}

// err returns nil when nothing was recorded, else a *ValidationError with
// the problems in document order (problems without a position first),
// duplicates removed, at most maxProblems of them.
func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	list := slices.Clone(ps.list)
	slices.SortStableFunc(list, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	list = slices.Compact(list)
	if len(list) > maxProblems {
		more := len(list) - maxProblems
		list = append(list[:maxProblems:maxProblems], Problem{
			File:    ps.file,
			Message: fmt.Sprintf("%d more problems not shown", more),
			Hint:    "fix the problems above and try again",
		})
	}
	return &ValidationError{Problems: list}
}
