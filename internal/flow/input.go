package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
)

// Redacted replaces secret inputs in stored and displayed run data.
const Redacted = "[redacted]"

// CheckInput validates a run's input against the document's inputs and
// returns the input to run with: defaults filled in, numbers normalized
// (integer inputs int64, number inputs float64). A null field counts as
// absent. Problems (each named input.<name>) come back as a
// *errs.Error (code invalid_input): a required input missing, a value of the wrong type, an
// input the document does not declare, an input over 1 MiB. A document
// without an input section accepts any input.
func (d *Document) CheckInput(in map[string]any) (map[string]any, error) {
	return d.checkInput(in, nil)
}

// checkInput is CheckInput; the inputs named in marked are treated as
// secret (their values are never quoted) besides those declared so.
func (d *Document) checkInput(in map[string]any, marked map[string]bool) (map[string]any, error) {
	ps := problems{code: CodeInvalidInput}
	out := make(map[string]any, len(d.Inputs))
	if !d.InputDeclared {
		for k, v := range in {
			n, err := normalize(v)
			if err != nil {
				msg := err.Error()
				if marked[k] {
					msg = "cannot be used as data"
				}
				ps.add(0, 0, "input."+k, "give JSON data", "%s", msg)
				continue
			}
			out[k] = n
		}
	} else {
		names := make([]string, len(d.Inputs))
		for i, decl := range d.Inputs {
			names[i] = decl.Name
		}
		for _, k := range slices.Sorted(maps.Keys(in)) {
			if !slices.Contains(names, k) {
				hint := suggestHint(k, names)
				if len(names) == 0 {
					hint = "this flow takes no input"
				}
				ps.add(0, 0, "input."+k, hint, "not an input of this flow")
			}
		}
		for _, decl := range d.Inputs {
			v, given := in[decl.Name]
			if !given || v == nil {
				switch {
				case decl.HasDefault:
					out[decl.Name] = copyJSON(decl.Default)
				case decl.Required:
					ps.add(0, 0, "input."+decl.Name, "give a value of type "+decl.Type, "required")
				}
				continue
			}
			n, msg := conform(decl.Type, v)
			if msg != "" && (decl.Secret || marked[decl.Name]) {
				// A secret's value is never quoted, not even in an error.
				msg = "must be " + typeArticle(decl.Type)
			}
			if msg != "" {
				ps.add(0, 0, "input."+decl.Name, "give a value of type "+decl.Type, "%s", msg)
				continue
			}
			out[decl.Name] = n
		}
	}
	if err := ps.err(); err != nil {
		return nil, err
	}
	if b, err := json.Marshal(out); err != nil {
		return nil, validationError(CodeInvalidInput, []Problem{{Path: "input", Message: "cannot be encoded as JSON", Hint: "give JSON data"}})
	} else if len(b) > MaxInputBytes {
		return nil, validationError(CodeInvalidInput, []Problem{{Path: "input", Message: fmt.Sprintf("is %d bytes; the limit is 1 MiB", len(b)),
			Hint: "pass references (ids, names) rather than the data itself"}})
	}
	return out, nil
}

// Redact returns a copy of a run's input with the values of secret inputs
// replaced by "[redacted]". Nil stays nil.
func (d *Document) Redact(in map[string]any) map[string]any {
	if in == nil {
		return nil
	}
	out := maps.Clone(in)
	for _, decl := range d.Inputs {
		if _, ok := out[decl.Name]; ok && decl.Secret {
			out[decl.Name] = Redacted
		}
	}
	return out
}

// conform checks a value against an input type and normalizes it. It
// returns a message saying what is wrong, or "".
func conform(typ string, v any) (any, string) {
	n, err := normalize(v)
	if err != nil {
		return nil, err.Error()
	}
	bad := func() (any, string) { return nil, fmt.Sprintf("must be %s, not %s", typeArticle(typ), describe(n)) }
	switch typ {
	case TypeString:
		if _, ok := n.(string); !ok {
			return bad()
		}
	case TypeBoolean:
		if _, ok := n.(bool); !ok {
			return bad()
		}
	case TypeInteger:
		switch x := n.(type) {
		case int64:
		case float64:
			if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
				return nil, fmt.Sprintf("must be an integer, not %v", x)
			}
			n = int64(x)
		default:
			return bad()
		}
	case TypeNumber:
		switch x := n.(type) {
		case int64:
			n = float64(x)
		case float64:
			if math.IsInf(x, 0) || math.IsNaN(x) {
				return nil, "must be a finite number"
			}
		default:
			return bad()
		}
	case TypeObject:
		if _, ok := n.(map[string]any); !ok {
			return bad()
		}
	case TypeArray:
		if _, ok := n.([]any); !ok {
			return bad()
		}
	}
	return n, ""
}

// typeArticle names an input type with its article.
func typeArticle(typ string) string {
	switch typ {
	case TypeInteger, TypeObject, TypeArray:
		return "an " + typ
	}
	return "a " + typ
}

// copyJSON deep-copies a JSON-like value.
func copyJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = copyJSON(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = copyJSON(e)
		}
		return out
	}
	return v
}

// Secrets says which values of a document are computed from secrets: its
// secret inputs, the input fields a calling run marked secret (it computed
// them from its own secrets), and whatever an expression computes from
// them. An expression reads a secret when it names input.<secret> (or the
// whole input), a loop variable over a list that reads one, a field of a
// set step computed from one, or the results of a foreach whose body holds
// such a field. The analysis is by name, not by value: a list that mixes a
// secret with plain values makes every item of a loop over it secret.
// Presence tests (has(input.token)) read nothing. It is safe for
// concurrent use.
type Secrets struct {
	doc    *Document
	inputs map[string]bool

	mu    sync.Mutex
	refs  map[*Expr]*exprRefs
	steps map[string]*stepSecrets
	// byID and loops (each step's enclosing foreach steps, outermost
	// first) are built on first use.
	byID  map[string]*Step
	loops map[string][]*Step
}

// stepSecrets is what of a step's result is computed from secrets.
type stepSecrets struct {
	all  bool            // the whole result (a foreach's results)
	keys map[string]bool // set keys
}

func (t *stepSecrets) any() bool { return t.all || len(t.keys) > 0 }

// exprRefs is what an expression reads.
type exprRefs struct {
	// unknown is set when the expression could not be read again: it is
	// taken to read everything.
	unknown    bool
	wholeInput bool
	inputs     []string
	wholeSteps bool
	steps      []stepKey
	idents     []string
}

// stepKey is steps.<id>.<key>; key "" is the whole step.
type stepKey struct{ id, key string }

// Secrets returns the secret analysis of the document, with the input
// fields named in marked secret besides those declared so.
func (d *Document) Secrets(marked []string) *Secrets {
	s := &Secrets{doc: d, inputs: map[string]bool{}, refs: map[*Expr]*exprRefs{}, steps: map[string]*stepSecrets{}}
	for _, in := range d.Inputs {
		if in.Secret {
			s.inputs[in.Name] = true
		}
	}
	for _, name := range marked {
		s.inputs[name] = true
	}
	return s
}

// None reports whether nothing in the document is secret.
func (s *Secrets) None() bool { return len(s.inputs) == 0 }

// Inputs returns the names of the secret inputs, declared and marked, sorted.
func (s *Secrets) Inputs() []string { return slices.Sorted(maps.Keys(s.inputs)) }

// CheckInput is Document.CheckInput, never quoting the value of a secret
// input, declared or marked.
func (s *Secrets) CheckInput(in map[string]any) (map[string]any, error) {
	return s.doc.checkInput(in, s.inputs)
}

// RedactInput returns a copy of a run's input with the values of secret
// inputs, declared and marked, replaced by Redacted. Nil stays nil.
func (s *Secrets) RedactInput(in map[string]any) map[string]any {
	if in == nil {
		return nil
	}
	out := maps.Clone(in)
	for name := range s.inputs {
		if _, ok := out[name]; ok {
			out[name] = Redacted
		}
	}
	return out
}

// Evaluation is a value computed by Secrets.Eval.
type Evaluation struct {
	// Value is what Value.Eval returns.
	Value any
	// Masked is Value with every part computed from a secret replaced by
	// Redacted: an expression's whole result, or its place in an
	// interpolated string. It is what may be stored or shown.
	Masked any
	// Secret reports whether some part was computed from a secret.
	Secret bool
	// Derived lists the strings computed from secrets: the string result of
	// each expression that read one, and each interpolated string that holds
	// such a result.
	Derived []string
	// SecretKeys lists, for a map result, its keys whose values were
	// computed (in part) from a secret; every key when the whole map was.
	SecretKeys []string
}

// Eval evaluates v as Value.Eval does and tracks what it computed from
// secrets. vars names the loop variables in scope whose lists read a
// secret. An expression that reads a secret and fails has its message
// withheld (it could quote the value); a cost limit or a cancellation
// keeps its own.
func (s *Secrets) Eval(ctx context.Context, v *Value, sc Scope, vars map[string]bool) (Evaluation, error) {
	if v == nil {
		return Evaluation{}, nil
	}
	if !s.Reads(v, vars) {
		val, err := v.Eval(ctx, sc)
		return Evaluation{Value: val, Masked: val}, err
	}
	act, err := sc.activation()
	if err != nil {
		return Evaluation{}, fmt.Errorf("flow: evaluate: %w", err)
	}
	ev := Evaluation{Secret: true}
	ev.Value, ev.Masked, err = s.eval(ctx, v, act, vars, &ev)
	if err != nil {
		return Evaluation{}, err
	}
	if m, ok := ev.Value.(map[string]any); ok {
		shown, _ := ev.Masked.(map[string]any)
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if shown == nil || !valueEqual(m[k], shown[k]) {
				ev.SecretKeys = append(ev.SecretKeys, k)
			}
		}
	}
	return ev, nil
}

// EvalBool is Expr.EvalBool, withholding the message of a failed condition
// that reads a secret.
func (s *Secrets) EvalBool(ctx context.Context, e *Expr, sc Scope, vars map[string]bool) (bool, error) {
	ok, err := e.EvalBool(ctx, sc)
	if err != nil && e != nil && s.exprReads(e, vars) {
		err = withhold(err)
	}
	return ok, err
}

// Reads reports whether v reads a secret; vars names the loop variables
// in scope whose lists read one.
func (s *Secrets) Reads(v *Value, vars map[string]bool) bool {
	if v == nil || v.static || s.None() {
		return false
	}
	for _, e := range v.Exprs() {
		if s.exprReads(e, vars) {
			return true
		}
	}
	return false
}

func (s *Secrets) eval(ctx context.Context, v *Value, act cel.Activation, vars map[string]bool, ev *Evaluation) (any, any, error) {
	switch v.kind {
	case literalValue:
		return v.lit, v.lit, nil
	case exprValue:
		secret := s.exprReads(v.expr, vars)
		r, err := run(ctx, v.expr, act, secret)
		if err != nil || !secret {
			return r, r, err
		}
		if str, ok := r.(string); ok {
			ev.Derived = append(ev.Derived, str)
		}
		return r, Redacted, nil
	case templateValue:
		var b, shown strings.Builder
		secret := false
		for _, p := range v.parts {
			if p.expr == nil {
				b.WriteString(p.text)
				shown.WriteString(p.text)
				continue
			}
			reads := s.exprReads(p.expr, vars)
			r, err := run(ctx, p.expr, act, reads)
			if err != nil {
				return nil, nil, err
			}
			t := Text(r)
			b.WriteString(t)
			if !reads {
				shown.WriteString(t)
				continue
			}
			secret = true
			shown.WriteString(Redacted)
			if _, ok := r.(string); ok {
				ev.Derived = append(ev.Derived, t)
			}
		}
		if secret {
			ev.Derived = append(ev.Derived, b.String())
		}
		return b.String(), shown.String(), nil
	case listValue:
		out, shown := make([]any, len(v.items)), make([]any, len(v.items))
		for i, item := range v.items {
			r, m, err := s.eval(ctx, item, act, vars, ev)
			if err != nil {
				return nil, nil, err
			}
			out[i], shown[i] = r, m
		}
		return out, shown, nil
	case mapValue:
		out, shown := make(map[string]any, len(v.keys)), make(map[string]any, len(v.keys))
		for _, k := range v.keys {
			r, m, err := s.eval(ctx, v.fields[k], act, vars, ev)
			if err != nil {
				return nil, nil, err
			}
			out[k], shown[k] = r, m
		}
		return out, shown, nil
	}
	return nil, nil, fmt.Errorf("flow: evaluate: unknown value kind %d", v.kind)
}

// run evaluates one expression, withholding its error when it reads a secret.
func run(ctx context.Context, e *Expr, act cel.Activation, secret bool) (any, error) {
	r, err := e.eval(ctx, act)
	if err != nil && secret {
		return nil, withhold(err)
	}
	return r, err
}

// withheldMessage replaces the message of a failed expression that reads a secret.
const withheldMessage = "the expression reads a secret, so its error is withheld (it could quote the value); try the expression on a value that is not secret"

// withhold replaces the message of an evaluation error that could quote a
// secret; the limits' and cancellations' messages quote nothing.
func withhold(err error) error {
	var ee *EvalError
	if !errors.As(err, &ee) || errors.Is(ee.Err, ErrCostLimit) || errors.Is(ee.Err, ErrResultLimit) ||
		errors.Is(ee.Err, context.Canceled) || errors.Is(ee.Err, context.DeadlineExceeded) {
		return err
	}
	out := *ee
	out.Message, out.Err = withheldMessage, errors.New(withheldMessage)
	return &out
}

// valueEqual compares two JSON-like values.
func valueEqual(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !valueEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !valueEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}

// exprReads reports whether an expression reads a secret.
func (s *Secrets) exprReads(e *Expr, vars map[string]bool) bool {
	if s.None() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readsLocked(e, vars)
}

func (s *Secrets) readsLocked(e *Expr, vars map[string]bool) bool {
	r := s.refsOf(e)
	if r.unknown || r.wholeSteps || (r.wholeInput && !s.None()) {
		return true
	}
	for _, name := range r.inputs {
		if s.inputs[name] {
			return true
		}
	}
	for _, name := range r.idents {
		if vars[name] {
			return true
		}
	}
	for _, k := range r.steps {
		t := s.stepLocked(k.id)
		if (k.key == "" && t.any()) || t.all || t.keys[k.key] {
			return true
		}
	}
	return false
}

// stepLocked returns what of a step's result is computed from secrets.
func (s *Secrets) stepLocked(id string) *stepSecrets {
	if t, ok := s.steps[id]; ok {
		if t == nil {
			// A reference cycle (the parser refuses them): be safe.
			return &stepSecrets{all: true}
		}
		return t
	}
	s.steps[id] = nil
	if s.byID == nil {
		s.byID, s.loops = map[string]*Step{}, map[string][]*Step{}
		var walk func(list []*Step, loops []*Step)
		walk = func(list []*Step, loops []*Step) {
			for _, st := range list {
				s.byID[st.ID], s.loops[st.ID] = st, loops
				inner := loops
				if st.Kind == KindForeach {
					inner = append(slices.Clone(loops), st)
				}
				for _, c := range st.children() {
					walk(c, inner)
				}
			}
		}
		walk(s.doc.Steps, nil)
		walk(s.doc.OnError, nil)
	}
	t := &stepSecrets{keys: map[string]bool{}}
	st := s.byID[id]
	if st != nil {
		vars := map[string]bool{}
		for _, loop := range s.loops[id] {
			vars[loop.As] = s.valueReadsLocked(loop.Foreach, vars)
		}
		switch st.Kind {
		case KindSet:
			for k, v := range st.Set {
				if s.valueReadsLocked(v, vars) {
					t.keys[k] = true
				}
			}
		case KindForeach:
			for _, b := range st.Body {
				if s.stepLocked(b.ID).any() {
					t.all = true
				}
			}
		}
	}
	s.steps[id] = t
	return t
}

func (s *Secrets) valueReadsLocked(v *Value, vars map[string]bool) bool {
	if v == nil || v.static {
		return false
	}
	for _, e := range v.Exprs() {
		if s.readsLocked(e, vars) {
			return true
		}
	}
	return false
}

// refsOf reads (once) what an expression refers to.
func (s *Secrets) refsOf(e *Expr) *exprRefs {
	if r, ok := s.refs[e]; ok {
		return r
	}
	r := readRefs(e.Source)
	s.refs[e] = r
	return r
}

// readRefs parses an expression's source again and lists what it reads.
func readRefs(src string) *exprRefs {
	r := &exprRefs{}
	env, err := baseEnv()
	if err != nil {
		return &exprRefs{unknown: true}
	}
	parsed, iss := env.Parse(src)
	if iss != nil && iss.Err() != nil {
		return &exprRefs{unknown: true}
	}
	var visit func(e ast.Expr)
	visit = func(e ast.Expr) {
		if root, keys, ok := refPath(e); ok {
			switch root {
			case "input":
				if len(keys) == 0 {
					r.wholeInput = true
				} else {
					r.inputs = append(r.inputs, keys[0])
				}
			case "steps":
				switch len(keys) {
				case 0:
					r.wholeSteps = true
				case 1:
					r.steps = append(r.steps, stepKey{id: keys[0]})
				default:
					r.steps = append(r.steps, stepKey{id: keys[0], key: keys[1]})
				}
			default:
				r.idents = append(r.idents, root)
			}
			return
		}
		switch e.Kind() {
		case ast.SelectKind:
			if sel := e.AsSelect(); !sel.IsTestOnly() {
				visit(sel.Operand())
			}
		case ast.CallKind:
			c := e.AsCall()
			if c.IsMemberFunction() {
				visit(c.Target())
			}
			for _, a := range c.Args() {
				visit(a)
			}
		case ast.ListKind:
			for _, el := range e.AsList().Elements() {
				visit(el)
			}
		case ast.MapKind:
			for _, en := range e.AsMap().Entries() {
				me := en.AsMapEntry()
				visit(me.Key())
				visit(me.Value())
			}
		case ast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				visit(f.AsStructField().Value())
			}
		case ast.ComprehensionKind:
			c := e.AsComprehension()
			visit(c.IterRange())
			visit(c.AccuInit())
			visit(c.LoopCondition())
			visit(c.LoopStep())
			visit(c.Result())
		}
	}
	visit(parsed.NativeRep().Expr())
	return r
}

// refPath reads a reference: an identifier followed by fields or constant
// string indexes (input.token, input["token"], steps.a.b, item). It
// reports false for anything else, and for presence tests.
func refPath(e ast.Expr) (string, []string, bool) {
	switch e.Kind() {
	case ast.IdentKind:
		return e.AsIdent(), nil, true
	case ast.SelectKind:
		sel := e.AsSelect()
		if sel.IsTestOnly() {
			return "", nil, false
		}
		root, keys, ok := refPath(sel.Operand())
		if !ok {
			return "", nil, false
		}
		return root, append(keys, sel.FieldName()), true
	case ast.CallKind:
		c := e.AsCall()
		args := c.Args()
		switch c.FunctionName() {
		case operators.Index, operators.OptIndex, operators.OptSelect:
		default:
			return "", nil, false
		}
		if len(args) != 2 || args[1].Kind() != ast.LiteralKind {
			return "", nil, false
		}
		key, ok := args[1].AsLiteral().(types.String)
		if !ok {
			return "", nil, false
		}
		root, keys, ok := refPath(args[0])
		if !ok {
			return "", nil, false
		}
		return root, append(keys, string(key)), true
	}
	return "", nil, false
}
