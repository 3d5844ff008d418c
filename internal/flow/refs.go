package flow

import (
	"fmt"
	"slices"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"gopkg.in/yaml.v3"
)

// stepInfo is what the reference checks know of a step.
type stepInfo struct {
	id        string
	order     int // position in document order, steps then on_error
	line, col int
	onError   bool
	// loops are the ids of the foreach steps whose body holds the step.
	loops []string
	// ancestors are the steps whose nested lists hold the step.
	ancestors []*stepInfo
}

// scope is where an expression is written: which variables it sees and
// which steps have run when it is evaluated.
type scope struct {
	onError bool
	output  bool
	// vars are the loop variables in scope, outermost first.
	vars []loopVar
	// loops are the ids of the enclosing foreach steps.
	loops []string
	// ancestors are the steps enclosing the current one.
	ancestors []*stepInfo
	// step is the step whose fields are read; nil for output.
	step *stepInfo
}

// with returns the scope of a step's own fields.
func (sc *scope) with(step *stepInfo) *scope {
	c := *sc
	c.step = step
	return &c
}

// nested returns the scope of the steps nested in parent.
func (sc *scope) nested(parent *stepInfo) *scope {
	c := *sc
	c.step = nil
	c.ancestors = append(slices.Clone(sc.ancestors), parent)
	return &c
}

// loop returns the scope of the body of foreach step parent.
func (sc *scope) loop(parent *stepInfo, v loopVar) *scope {
	c := sc.nested(parent)
	c.vars = append(slices.Clone(sc.vars), v)
	c.loops = append(slices.Clone(sc.loops), parent.id)
	return c
}

// stepRef is a reference to steps.<id> in an expression.
type stepRef struct {
	id        string
	line, col int
	path      string
	sc        *scope
}

// collectRefs records the steps.<id> references of a checked expression.
// src is the expression's text and srcOff its character offset in the
// scalar's value.
func (p *parser) collectRefs(checked *cel.Ast, n *yaml.Node, value string, srcOff int, path string, sc *scope) {
	native := checked.NativeRep()
	info := native.SourceInfo()
	var visit func(e ast.Expr, shadowed []string)
	ref := func(operand ast.Expr, id string, shadowed []string) {
		if operand.Kind() != ast.IdentKind || operand.AsIdent() != "steps" || slices.Contains(shadowed, "steps") {
			return
		}
		off := 0
		if r, ok := info.GetOffsetRange(operand.ID()); ok {
			off = int(r.Start)
		}
		line, col := p.loc.pos(n, value, srcOff+off)
		p.refs = append(p.refs, stepRef{id: id, line: line, col: col, path: path, sc: sc})
	}
	visit = func(e ast.Expr, shadowed []string) {
		switch e.Kind() {
		case ast.SelectKind:
			s := e.AsSelect()
			ref(s.Operand(), s.FieldName(), shadowed)
			visit(s.Operand(), shadowed)
		case ast.CallKind:
			c := e.AsCall()
			args := c.Args()
			if (c.FunctionName() == operators.Index || c.FunctionName() == operators.OptSelect || c.FunctionName() == operators.OptIndex) &&
				len(args) == 2 && args[1].Kind() == ast.LiteralKind {
				if s, ok := args[1].AsLiteral().(types.String); ok {
					ref(args[0], string(s), shadowed)
				}
			}
			if c.IsMemberFunction() {
				visit(c.Target(), shadowed)
			}
			for _, a := range args {
				visit(a, shadowed)
			}
		case ast.ListKind:
			for _, el := range e.AsList().Elements() {
				visit(el, shadowed)
			}
		case ast.MapKind:
			for _, en := range e.AsMap().Entries() {
				me := en.AsMapEntry()
				visit(me.Key(), shadowed)
				visit(me.Value(), shadowed)
			}
		case ast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				visit(f.AsStructField().Value(), shadowed)
			}
		case ast.ComprehensionKind:
			c := e.AsComprehension()
			visit(c.IterRange(), shadowed)
			visit(c.AccuInit(), shadowed)
			inner := append(slices.Clone(shadowed), c.IterVar(), c.AccuVar())
			if c.HasIterVar2() {
				inner = append(inner, c.IterVar2())
			}
			visit(c.LoopCondition(), inner)
			visit(c.LoopStep(), inner)
			visit(c.Result(), inner)
		}
	}
	visit(native.Expr(), nil)
}

// checkRefs checks every steps.<id> reference against the flow's steps:
// the step must exist, be reachable from where the expression runs (not
// inside a foreach body that does not hold the expression), and have run
// before the expression is evaluated.
func (p *parser) checkRefs() {
	for _, r := range p.refs {
		t, ok := p.ids[r.id]
		if !ok {
			p.ps.add(r.line, r.col, r.path, p.unknownStepHint(r.id), "there is no step `%s` in this flow", r.id)
			continue
		}
		if len(t.loops) > 0 && !isPrefix(t.loops, r.sc.loops) {
			loop := t.loops[len(t.loops)-1]
			p.ps.add(r.line, r.col, r.path, fmt.Sprintf("outside the loop, read steps.%s.results[i].%s", t.loops[0], r.id),
				"step `%s` runs inside foreach `%s`; its result is not visible here", r.id, loop)
			continue
		}
		from := r.sc.step
		switch {
		case from != nil && (from == t || slices.Contains(from.ancestors, t)):
			p.ps.add(r.line, r.col, r.path, "refer to a step that finished before this one",
				"step `%s` has not finished when this expression runs", r.id)
		case r.sc.output && t.onError:
			p.ps.add(r.line, r.col, r.path, "on_error steps run only when the run fails; the output is computed when it succeeds",
				"step `%s` never runs before the output is computed", r.id)
		case !r.sc.onError && !r.sc.output && t.onError:
			p.ps.add(r.line, r.col, r.path, "refer to a step under steps:",
				"step `%s` runs only in on_error, when the run has failed", r.id)
		case from != nil && t.order > from.order:
			p.ps.add(r.line, r.col, r.path, fmt.Sprintf("move step `%s` before this one, or refer to a step that runs earlier", r.id),
				"step `%s` runs after this expression", r.id)
		}
	}
}

// unknownStepHint suggests the nearest step id.
func (p *parser) unknownStepHint(id string) string {
	if hint, ok := p.stepHints[id]; ok {
		return hint
	}
	if p.stepHints == nil {
		p.stepHints = map[string]string{}
	}
	hint := p.stepHint(id)
	p.stepHints[id] = hint
	return hint
}

func (p *parser) stepHint(id string) string {
	ids := make([]string, 0, len(p.infos))
	for _, info := range p.infos {
		if info.id != "" {
			ids = append(ids, info.id)
		}
	}
	if c := closest(id, ids); c != "" {
		return "did you mean `" + c + "`?"
	}
	if len(ids) > 0 && len(ids) <= 10 {
		return "the steps are: " + joinTicks(ids)
	}
	return "refer to the id of a step of this flow"
}

// isPrefix reports whether a is a prefix of b.
func isPrefix(a, b []string) bool {
	return len(a) <= len(b) && slices.Equal(a, b[:len(a)])
}

// joinTicks joins names as `a`, `b`, `c`.
func joinTicks(names []string) string {
	out := ""
	for i, n := range names {
		if i > 0 {
			out += ", "
		}
		out += "`" + n + "`"
	}
	return out
}
