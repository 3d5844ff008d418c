package flow

import (
	"fmt"
	"regexp"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common"
	"cel.dev/cel-go/common/types"
	"gopkg.in/yaml.v3"
)

var (
	// undeclaredRE finds the name in CEL's "undeclared reference" errors.
	undeclaredRE = regexp.MustCompile(`undeclared reference to '([^']*)'`)
	// undefinedFieldRE finds the name in CEL's "undefined field" errors.
	undefinedFieldRE = regexp.MustCompile(`undefined field '([^']*)'`)
)

// value reads a field value: scalars, lists and maps, with ${...}
// expressions compiled in scope sc. It returns nil for nodes already
// reported bad.
func (p *parser) value(n *yaml.Node, path string, sc *scope) *Value {
	if n == nil || p.bad[n] {
		return nil
	}
	v := &Value{line: n.Line, col: n.Column, static: true}
	switch n.Kind {
	case yaml.ScalarNode:
		lit, ok := p.scalar(n)
		if !ok {
			return nil
		}
		if s, isStr := lit.(string); isStr && n.ShortTag() == "!!str" {
			return p.template(n, s, path, sc)
		}
		v.kind, v.lit = literalValue, lit
	case yaml.SequenceNode:
		v.kind = listValue
		v.items = make([]*Value, len(n.Content))
		for i, c := range n.Content {
			v.items[i] = p.valueOrNull(c, indexPath(path, i), sc)
			v.static = v.static && v.items[i].static
		}
	case yaml.MappingNode:
		v.kind = mapValue
		v.fields = map[string]*Value{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, c := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || p.bad[k] {
				continue
			}
			name, ok := p.key(k, path)
			if !ok {
				continue
			}
			if _, dup := v.fields[name]; dup {
				continue
			}
			item := p.valueOrNull(c, joinPath(path, name), sc)
			v.keys = append(v.keys, name)
			v.fields[name] = item
			v.static = v.static && item.static
		}
	default:
		return nil
	}
	return v
}

// valueOrNull is value, with a null literal standing in for a bad node.
func (p *parser) valueOrNull(n *yaml.Node, path string, sc *scope) *Value {
	if v := p.value(n, path, sc); v != nil {
		return v
	}
	return &Value{kind: literalValue, static: true, line: n.Line, col: n.Column}
}

// template reads a string that may hold ${...} expressions.
func (p *parser) template(n *yaml.Node, s, path string, sc *scope) *Value {
	v := &Value{line: n.Line, col: n.Column}
	segs := scanTemplate(s)
	exprs := 0
	for _, seg := range segs {
		if seg.isExpr {
			exprs++
		}
	}
	if exprs == 0 {
		var b strings.Builder
		for _, seg := range segs {
			b.WriteString(seg.text)
		}
		v.kind, v.lit, v.static = literalValue, b.String(), true
		return v
	}
	ok := true
	for _, seg := range segs {
		if !seg.isExpr {
			v.parts = append(v.parts, part{text: seg.text})
			continue
		}
		e := p.segmentExpr(n, s, seg, path, sc)
		if e == nil {
			ok = false
			continue
		}
		v.parts = append(v.parts, part{expr: e})
	}
	if !ok {
		return nil
	}
	if len(segs) == 1 && segs[0].start == 0 && segs[0].src+len(segs[0].expr)+1 == len(s) {
		v.kind, v.expr, v.parts = exprValue, v.parts[0].expr, nil
		return v
	}
	v.kind = templateValue
	return v
}

// segmentExpr compiles the expression of a template segment.
func (p *parser) segmentExpr(n *yaml.Node, s string, seg segment, path string, sc *scope) *Expr {
	if !seg.terminated {
		line, col := p.loc.pos(n, s, runeOffset(s, seg.start))
		p.ps.add(line, col, path, "close the expression with }, or write $${ for a literal ${", "`${` is not closed")
		return nil
	}
	if strings.TrimSpace(seg.expr) == "" {
		line, col := p.loc.pos(n, s, runeOffset(s, seg.start))
		p.ps.add(line, col, path, "write an expression inside, e.g. ${input.user_id}", "empty expression")
		return nil
	}
	return p.compile(n, s, seg.start, seg.src, seg.expr, path, sc)
}

// cond reads a condition: true/false, one ${...}, or a bare CEL expression.
func (p *parser) cond(n *yaml.Node, path string, sc *scope) *Expr {
	const hint = "write one expression giving true or false, e.g. ${steps.lookup.status == 200}"
	if n == nil || p.bad[n] {
		return nil
	}
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!bool") {
		p.ps.add(n.Line, n.Column, path, hint, "must be a condition, not %s", nodeKind(n))
		return nil
	}
	s := n.Value
	var e *Expr
	segs := scanTemplate(s)
	switch {
	case n.ShortTag() == "!!bool" || !hasExpr(s):
		if strings.TrimSpace(s) == "" {
			p.ps.add(n.Line, n.Column, path, hint, "empty condition")
			return nil
		}
		e = p.compile(n, s, 0, 0, s, path, sc)
	case len(segs) == 1 && segs[0].start == 0 && segs[0].terminated && segs[0].src+len(segs[0].expr)+1 == len(s):
		e = p.segmentExpr(n, s, segs[0], path, sc)
	default:
		for _, seg := range segs {
			if seg.isExpr && !seg.terminated {
				p.segmentExpr(n, s, seg, path, sc)
				return nil
			}
		}
		p.ps.add(n.Line, n.Column, path, "put the whole condition inside one ${...}, e.g. ${steps.a.status == 200 && input.force}",
			"a condition is one expression, not text around ${...}")
		return nil
	}
	if e == nil {
		return nil
	}
	if k := e.typ.Kind(); k != types.BoolKind && k != types.DynKind && k != types.AnyKind {
		p.ps.add(e.Line, e.Column, path, "compare the value, e.g. ${x == 'yes'} or ${size(x) > 0}",
			"a condition must be true or false; this expression gives %s", typeText(e.typ))
		return nil
	}
	return e
}

// compile compiles and type-checks the expression src found at byte srcOff
// of scalar value s (its "${" at byte start), in scope sc. Problems point
// at the offending character in the document.
func (p *parser) compile(n *yaml.Node, s string, start, srcOff int, src, path string, sc *scope) *Expr {
	p.exprs++
	p.exprBytes += len(src)
	switch {
	case p.exprs > MaxExpressions || p.exprBytes > MaxExpressionBytes:
		if !p.tooMuchCode {
			p.tooMuchCode = true
			line, col := p.loc.pos(n, s, runeOffset(s, start))
			p.ps.add(line, col, path, "split the flow into sub-flows (kind flow)",
				"the flow has more than %d expressions or %d bytes of them", MaxExpressions, MaxExpressionBytes)
		}
		return nil
	}
	env, err := p.envs.env(sc.onError, sc.vars)
	if err != nil {
		p.ps.add(n.Line, n.Column, path, "report this as a bug in trustflow", "%v", err)
		return nil
	}
	srcRunes := runeOffset(s, srcOff)
	checked, issues := compileSafely(env, src)
	if issues != nil && issues.Err() != nil {
		for _, e := range issues.Errors() {
			line, col := p.loc.pos(n, s, srcRunes+locationOffset(src, e.Location))
			msg := cleanCELMessage(e.Message)
			p.ps.add(line, col, path, p.celHint(msg, sc), "%s", msg)
		}
		return nil
	}
	p.collectRefs(checked, n, s, srcRunes, path, sc)
	prog, err := env.Program(checked, programOptions...)
	if err != nil {
		p.ps.add(n.Line, n.Column, path, "simplify the expression", "%s", cleanCELMessage(err.Error()))
		return nil
	}
	line, col := p.loc.pos(n, s, runeOffset(s, start))
	return &Expr{Source: src, Line: line, Column: col, path: path, prog: prog, typ: checked.OutputType()}
}

// compileSafely compiles src; a panic in the CEL compiler becomes an issue.
func compileSafely(env *cel.Env, src string) (checked *cel.Ast, issues *cel.Issues) {
	defer func() {
		if r := recover(); r != nil {
			checked, issues = nil, cel.ErrorAsIssues(fmt.Errorf("the expression cannot be compiled"))
		}
	}()
	return env.Compile(src)
}

// locationOffset converts a CEL error location (1-based line, 0-based
// column, in characters) to a character offset in src.
func locationOffset(src string, loc common.Location) int {
	if loc == nil || loc.Line() < 1 {
		return 0
	}
	line, off := 1, 0
	for _, r := range src {
		if line == loc.Line() {
			break
		}
		off++
		if r == '\n' {
			line++
		}
	}
	return off + max(loc.Column(), 0)
}

// cleanCELMessage drops what CEL messages say about containers, which mean
// nothing in a flow,
// and the token lists of syntax errors.
func cleanCELMessage(msg string) string {
	msg = strings.ReplaceAll(msg, " (in container '')", "")
	if i := strings.Index(msg, " expecting {"); i >= 0 {
		if j := strings.Index(msg[i:], "}"); j >= 0 {
			msg = msg[:i] + msg[i+j+1:]
		}
	}
	msg = strings.ReplaceAll(msg, "mismatched input '<EOF>'", "the expression ends too early")
	return strings.TrimSpace(msg)
}

// celHint says how to fix a CEL compile error.
func (p *parser) celHint(msg string, sc *scope) string {
	switch {
	case strings.HasPrefix(msg, "Syntax error"):
		return "check the expression's syntax: CEL uses && || !, 'single' or \"double\" quotes, and ${ } around the expression"
	case undeclaredRE.MatchString(msg):
		name := undeclaredRE.FindStringSubmatch(msg)[1]
		switch {
		case name == "error":
			return "`error` exists only in on_error steps"
		case name == "index" || name == DefaultLoopVariable:
			return "`" + name + "` exists only inside a foreach step's steps"
		}
		vars := "input, steps, run"
		if sc.onError {
			vars += ", error"
		}
		for _, v := range sc.vars {
			vars += ", " + v.name
		}
		if len(sc.vars) > 0 {
			vars += ", index"
		}
		return "the variables here are " + vars
	case undefinedFieldRE.MatchString(msg):
		name := undefinedFieldRE.FindStringSubmatch(msg)[1]
		fields := p.envs.inputFields
		if c := closest(name, append(append([]string{}, fields...), "id", "flow", "version", "started_at", "step", "code", "message", "status")); c != "" {
			return "did you mean `" + c + "`?"
		}
		if fields != nil {
			return "declared inputs: " + strings.Join(fields, ", ") + "; run has id, flow, version, started_at; error has step, code, message, status"
		}
		return "run has id, flow, version, started_at; error has step, code, message, status"
	case strings.Contains(msg, "no matching overload"):
		return "the operand types do not fit; convert with int(), double() or string()"
	}
	return "see the expression reference in docs/flows.md"
}
