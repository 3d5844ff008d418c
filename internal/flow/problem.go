package flow

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/trustflow/trustflow/internal/errs"
)

// maxProblems bounds the problems one validation error lists; the rest are
// counted in a final problem.
const maxProblems = 100

// Problem is one thing wrong with a flow document or a run's input: its
// file, line and column, path, message and hint (see errs.Problem).
type Problem = errs.Problem

// Codes of the errors Parse and CheckInput return.
const (
	CodeInvalidFlow  = "invalid_flow"
	CodeInvalidInput = "invalid_input"
)

// validationError is how Parse and CheckInput fail: an errs.Invalid error
// listing every problem, whose message joins them one per line.
func validationError(code string, list []Problem) *errs.Error {
	lines := make([]string, len(list))
	for i, p := range list {
		lines[i] = p.String()
	}
	return &errs.Error{Kind: errs.Invalid, Code: code, Message: strings.Join(lines, "\n"), Problems: list}
}

// problems collects Problems while a document is read.
type problems struct {
	file string
	list []Problem
	// code is the error's code: CodeInvalidFlow, or CodeInvalidInput for a
	// run's input.
	code string
}

// add records a problem at a position.
func (ps *problems) add(line, col int, path, hint, format string, args ...any) {
	ps.list = append(ps.list, Problem{
		File: ps.file, Line: line, Column: col, Path: path,
		Message: fmt.Sprintf(format, args...), Hint: hint,
	})
}

// err returns nil when nothing was recorded, else a validation error with
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
	code := ps.code
	if code == "" {
		code = CodeInvalidFlow
	}
	return validationError(code, list)
}
