package flow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/interpreter"
)

// ErrCostLimit is wrapped by the EvalError of an expression that ran over
// CostLimit or MemoryLimit.
var ErrCostLimit = errors.New("flow: expression exceeded its cost limit")

// ErrMemoryLimit is wrapped (with ErrCostLimit) by the EvalError of an
// expression that ran over MemoryLimit.
var ErrMemoryLimit = errors.New("flow: expression exceeded its memory limit")

// ErrResultLimit is wrapped by the EvalError of an expression whose result
// (or a string it would build) is over MaxResultBytes.
var ErrResultLimit = errors.New("flow: expression result over its size limit")

// Expr is a compiled CEL expression: a condition (if, switch cases) or one
// ${...} of a Value. It is safe for concurrent use.
type Expr struct {
	// Source is the CEL text, without ${ and }.
	Source string
	// Line and Column locate the expression (its ${, or its first character
	// when written without ${) in the document.
	Line, Column int
	// path names the field holding the expression, for errors.
	path string
	prog cel.Program
	// typ is the type the checker gives the expression.
	typ *cel.Type
}

// Value is a field value that may compute: a constant, an exact "${...}"
// expression, an interpolated string, or a list or map of Values. It is safe
// for concurrent use.
type Value struct {
	kind valueKind
	// static is true when the value holds no expression.
	static bool
	lit    any
	expr   *Expr
	parts  []part
	items  []*Value
	keys   []string
	fields map[string]*Value
	line   int
	col    int
}

type valueKind uint8

const (
	literalValue  valueKind = iota // lit: nil, bool, int64, float64 or string
	exprValue                      // exactly one ${...}: expr
	templateValue                  // text and ${...} parts
	listValue                      // items
	mapValue                       // keys (document order) and fields
)

// part is a piece of an interpolated string: literal text or an expression.
type part struct {
	text string
	expr *Expr
}

// Scope is what expressions see when they are evaluated. Values must be
// JSON-like: nil, bool, int64 (or int), float64, string, []any,
// map[string]any, and time.Time for run.started_at.
type Scope struct {
	// Input is the run's input, as returned by CheckInput.
	Input map[string]any
	// Steps maps step ids to results (map[string]any); a skipped step is
	// {"skipped": true}.
	Steps map[string]any
	// Run holds id, flow, version and started_at.
	Run map[string]any
	// Error holds step, code, message and status; only inside on_error.
	Error map[string]any
	// Vars holds the foreach variables in scope (their `as` names) and index.
	Vars map[string]any
	// Now is what now() reads, once per evaluation. Defaults to time.Now.
	Now func() time.Time
}

// activation builds the CEL activation for one evaluation.
func (s Scope) activation() (cel.Activation, error) {
	vars := make(map[string]any, len(s.Vars)+4)
	for k, v := range s.Vars {
		vars[k] = readNative(v)
	}
	// What the expression reads is wrapped so that the memory limit counts
	// only what it builds (scope_values.go).
	vars["input"] = readNative(orEmpty(s.Input))
	vars["steps"] = readNative(orEmpty(s.Steps))
	vars["run"] = orEmpty(s.Run)
	vars["error"] = orEmpty(s.Error)
	return cel.FunctionVars(vars, lateFunctions(s.Now))
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// EvalError is the error of an expression that failed at run time.
type EvalError struct {
	// Path names the field holding the expression, e.g. steps[1].call.path.
	Path string
	// Line and Column locate the expression in the document.
	Line, Column int
	// Expr is the expression's source.
	Expr string
	// Message says what went wrong. It is safe to show to the user.
	Message string
	// Err is the cause: ErrCostLimit, the context's error, or CEL's.
	Err error
}

// Error returns "flow: <path> (line L, column C): ${expr}: <message>".
func (e *EvalError) Error() string {
	src := e.Expr
	if len(src) > 80 {
		src = src[:77] + "..."
	}
	return fmt.Sprintf("flow: %s (line %d, column %d): ${%s}: %s", e.Path, e.Line, e.Column, src, e.Message)
}

// Unwrap returns the cause.
func (e *EvalError) Unwrap() error { return e.Err }

// EvalBool evaluates a condition. A result that is not a boolean is an
// error. A nil Expr (no condition) is true.
func (e *Expr) EvalBool(ctx context.Context, s Scope) (bool, error) {
	if e == nil {
		return true, nil
	}
	act, err := s.activation()
	if err != nil {
		return false, e.fail(err)
	}
	v, err := e.eval(ctx, act)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, e.fail(fmt.Errorf("a condition must be a boolean, this one is %s", describe(v)))
	}
	return b, nil
}

// eval runs the expression and converts its result to a JSON-like value.
func (e *Expr) eval(ctx context.Context, act cel.Activation) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, e.fail(err)
	}
	out, _, err := e.prog.ContextEval(ctx, act)
	if err != nil {
		return nil, e.fail(err)
	}
	v, err := toJSONLike(out)
	if err != nil {
		return nil, e.fail(err)
	}
	return v, nil
}

// fail wraps an evaluation error in an EvalError.
func (e *Expr) fail(err error) *EvalError {
	ee := &EvalError{Path: e.path, Line: e.Line, Column: e.Column, Expr: e.Source, Message: err.Error(), Err: err}
	var cancelled interpreter.EvalCancelledError
	switch {
	case errors.As(err, &cancelled) && cancelled.Cause == interpreter.CostLimitExceeded:
		ee.Message = fmt.Sprintf("the expression ran over its cost limit (%d); it works on too much data", CostLimit)
		ee.Err = fmt.Errorf("%w: %w", ErrCostLimit, err)
	case errors.As(err, &cancelled) && cancelled.Cause == interpreter.MemoryLimitExceeded:
		ee.Message = fmt.Sprintf("the expression ran over its memory limit (%d elements); it builds too much data", MemoryLimit)
		ee.Err = fmt.Errorf("%w: %w: %w", ErrCostLimit, ErrMemoryLimit, err)
	case errors.Is(err, ErrResultLimit):
		ee.Message = strings.Replace(err.Error(), ErrResultLimit.Error()+": ", "", 1)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		ee.Message = "evaluation interrupted: " + err.Error()
	}
	return ee
}

// Eval computes the value: a JSON-like result (nil, bool, int64, float64,
// string, []any or map[string]any), new on every call.
func (v *Value) Eval(ctx context.Context, s Scope) (any, error) {
	if v == nil {
		return nil, nil
	}
	if v.static {
		return v.eval(ctx, nil)
	}
	act, err := s.activation()
	if err != nil {
		return nil, fmt.Errorf("flow: evaluate: %w", err)
	}
	return v.eval(ctx, act)
}

func (v *Value) eval(ctx context.Context, act cel.Activation) (any, error) {
	switch v.kind {
	case literalValue:
		return v.lit, nil
	case exprValue:
		return v.expr.eval(ctx, act)
	case templateValue:
		var b strings.Builder
		for _, p := range v.parts {
			if p.expr == nil {
				b.WriteString(p.text)
				continue
			}
			r, err := p.expr.eval(ctx, act)
			if err != nil {
				return nil, err
			}
			b.WriteString(Text(r))
		}
		return b.String(), nil
	case listValue:
		out := make([]any, len(v.items))
		for i, item := range v.items {
			r, err := item.eval(ctx, act)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	case mapValue:
		out := make(map[string]any, len(v.keys))
		for _, k := range v.keys {
			r, err := v.fields[k].eval(ctx, act)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	}
	return nil, fmt.Errorf("flow: evaluate: unknown value kind %d", v.kind)
}

// Literal returns the value and true when it holds no expression.
func (v *Value) Literal() (any, bool) {
	if v == nil {
		return nil, true
	}
	if !v.static {
		return nil, false
	}
	out, err := v.eval(context.Background(), nil)
	return out, err == nil
}

// Pos returns the line and column of the value in the document.
func (v *Value) Pos() (line, column int) { return v.line, v.col }

// Exprs returns the expressions in the value, in document order.
func (v *Value) Exprs() []*Expr {
	if v == nil {
		return nil
	}
	var out []*Expr
	switch v.kind {
	case exprValue:
		out = append(out, v.expr)
	case templateValue:
		for _, p := range v.parts {
			if p.expr != nil {
				out = append(out, p.expr)
			}
		}
	case listValue:
		for _, item := range v.items {
			out = append(out, item.Exprs()...)
		}
	case mapValue:
		for _, k := range v.keys {
			out = append(out, v.fields[k].Exprs()...)
		}
	}
	return out
}
