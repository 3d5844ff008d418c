package flow

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"gopkg.in/yaml.v3"
)

var (
	// stepKinds are the kinds a step can have.
	stepKinds = []string{KindCall, KindSet, KindIf, KindSwitch, KindForeach, KindSleep, KindFlowRun, KindFail}
	// kindKeys are the keys that give a step its kind; `then` makes an if step.
	kindKeys = []string{"call", "set", "then", "switch", "foreach", "sleep", "flow", "fail"}
	// tokenRE is an HTTP token (RFC 9110): a method or a header name.
	tokenRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	// schemeRE is the start of an absolute URL.
	schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
	// reservedHeaders are set by trustflow itself.
	reservedHeaders = []string{"Host", "Content-Length", "Transfer-Encoding", "Connection", "Idempotency-Key"}
	// standardMethods are the methods of RFC 9110 and PATCH.
	standardMethods = []string{
		http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace,
	}
)

const idHint = "use lowercase letters, digits and '_', starting with a letter, e.g. lookup_user"

// steps reads a list of steps at a nesting depth (top-level lists are at 1).
func (p *parser) steps(n, at *yaml.Node, path string, sc *scope, depth int) []*Step {
	if n == nil || p.bad[n] {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.ps.add(n.Line, n.Column, path, "write a list of steps, each starting with `- id: ...`", "must be a list of steps, not %s", nodeKind(n))
		return nil
	}
	if depth > MaxDepth {
		p.ps.add(n.Line, n.Column, path, "move the inner steps into a sub-flow (kind flow)", "steps are nested deeper than %d levels", MaxDepth)
		return nil
	}
	out := make([]*Step, 0, len(n.Content))
	for i, c := range n.Content {
		if s := p.step(c, indexPath(path, i), sc, depth); s != nil {
			out = append(out, s)
		}
	}
	return out
}

// step reads one step.
func (p *parser) step(n *yaml.Node, path string, sc *scope, depth int) *Step {
	m := p.readMap(n, n, path, "write a step as a mapping: - id: name, then its kind, e.g. call: {...}")
	if m == nil {
		return nil
	}
	p.count++
	if p.count > MaxSteps {
		if !p.tooMany {
			p.tooMany = true
			p.ps.add(n.Line, n.Column, path, "split the flow into sub-flows (kind flow)", "the flow has more than %d steps", MaxSteps)
		}
		return nil
	}
	s := &Step{Line: n.Line, Column: n.Column}
	info := &stepInfo{order: len(p.infos), line: n.Line, col: n.Column, onError: sc.onError, loops: sc.loops, ancestors: sc.ancestors}
	p.infos = append(p.infos, info)
	if v, _ := m.get("id"); v == nil {
		m.missing("id", "add id: a_name ("+idHint+")")
	} else if id, ok := p.str(v, m.sub("id"), idHint); ok {
		s.ID = id
		if !stepIDRE.MatchString(id) {
			p.ps.add(v.Line, v.Column, m.sub("id"), idHint, "%q is not a valid step id", id)
		} else if prev, dup := p.ids[id]; dup {
			p.ps.add(v.Line, v.Column, m.sub("id"), "give each step its own id; ids are unique in the whole flow, nested and on_error steps included",
				"duplicate step id `%s` (first at line %d)", id, prev.line)
		} else {
			info.id = id
			p.ids[id] = info
		}
	}
	own := sc.with(info)

	s.Kind = p.stepKind(m, n, path)
	if v, _ := m.get("if"); v != nil {
		s.If = p.cond(v, m.sub("if"), own)
	}
	s.Retry = defaultRetry()
	if v, k := m.get("retry"); v != nil {
		if s.Kind != "" && s.Kind != KindCall && s.Kind != KindFlowRun {
			p.ps.add(k.Line, k.Column, m.sub("retry"), "remove retry; only call and flow steps are retried", "a %s step is not retried", s.Kind)
		} else {
			s.Retry = p.retry(v, k, m.sub("retry"))
		}
	}
	if v, k := m.get("timeout"); v != nil {
		switch s.Kind {
		case KindSet, KindSleep, KindFail:
			p.ps.add(k.Line, k.Column, m.sub("timeout"), "remove timeout", "a %s step has no timeout", s.Kind)
		default:
			s.Timeout, _ = p.duration(v, m.sub("timeout"))
		}
	}
	if v, _ := m.get("continue_on_error"); v != nil {
		s.ContinueOnError, _ = p.boolean(v, m.sub("continue_on_error"), "write continue_on_error: true or false")
	}

	switch s.Kind {
	case KindCall:
		v, k := m.get("call")
		s.Call = p.call(v, k, m.sub("call"), own)
	case KindSet:
		v, k := m.get("set")
		s.Set, s.SetKeys = p.set(v, k, m.sub("set"), own)
	case KindIf:
		thenNode, thenKey := m.get("then")
		if !m.has("if") {
			p.ps.add(thenKey.Line, thenKey.Column, m.sub("then"), "add if: ${...} with the condition", "an if step needs `if:`")
		}
		s.Then = p.steps(thenNode, thenKey, m.sub("then"), sc.nested(info), depth+1)
		if v, k := m.get("else"); v != nil {
			s.Else = p.steps(v, k, m.sub("else"), sc.nested(info), depth+1)
		}
	case KindSwitch:
		v, k := m.get("switch")
		p.switchCases(s, v, k, m.sub("switch"), sc, own, depth)
	case KindForeach:
		p.foreach(s, m, sc, own, depth)
	case KindSleep:
		v, k := m.get("sleep")
		p.sleep(s, v, k, m.sub("sleep"), own)
	case KindFlowRun:
		v, k := m.get("flow")
		p.subFlow(s, v, k, m.sub("flow"), own)
	case KindFail:
		v, k := m.get("fail")
		p.fail(s, v, k, m.sub("fail"), own)
	}
	p.misplaced(s, m)
	m.finish()
	return s
}

// stepKind finds the step's kind from its keys, recording a problem when
// it has none, several, or an unknown one.
func (p *parser) stepKind(m *mapReader, n *yaml.Node, path string) string {
	var found []*yaml.Node
	for _, key := range kindKeys {
		if _, k := m.lookup(key); k != nil {
			found = append(found, k)
		}
	}
	slices.SortFunc(found, func(a, b *yaml.Node) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
	kindOf := func(key string) string {
		if key == "then" {
			return KindIf
		}
		return key
	}
	switch len(found) {
	case 0:
		for _, key := range []string{"id", "if", "retry", "timeout", "continue_on_error", "else", "as", "concurrency", "steps"} {
			m.get(key)
		}
		if unknown := m.unknown(); len(unknown) > 0 {
			k := unknown[0]
			m.known = append(m.known, k.Value)
			p.ps.add(k.Line, k.Column, m.sub(k.Value), suggestHint(k.Value, stepKinds), "unknown step kind `%s`", k.Value)
			return ""
		}
		if m.has("if") {
			_, k := m.lookup("if")
			p.ps.add(k.Line, k.Column, m.sub("if"), "add then: with the steps to run, or a kind (call, set, ...) for the step the condition guards",
				"an if step needs `then:`")
			return ""
		}
		p.ps.add(n.Line, n.Column, path, "add one of: call, set, if (with then), switch, foreach, sleep, flow, fail", "the step has no kind")
		return ""
	case 1:
		return kindOf(found[0].Value)
	}
	for _, k := range found {
		m.get(k.Value)
	}
	p.ps.add(found[1].Line, found[1].Column, m.sub(found[1].Value), "split it into two steps",
		"a step has one kind; this one has %s and %s", kindOf(found[0].Value), kindOf(found[1].Value))
	return kindOf(found[0].Value)
}

// misplaced reports keys that belong to another kind of step.
func (p *parser) misplaced(s *Step, m *mapReader) {
	if s.Kind == "" {
		return
	}
	if s.Kind != KindIf {
		if _, k := m.get("else"); k != nil {
			p.ps.add(k.Line, k.Column, m.sub("else"), "an if step has if:, then: and else:; remove else here", "`else` belongs to if steps")
		}
	}
	if s.Kind == KindForeach {
		return
	}
	for _, key := range []string{"as", "concurrency", "steps"} {
		if _, k := m.get(key); k != nil {
			hint := "remove it, or make this a foreach step"
			switch {
			case s.Kind == KindIf && key == "steps":
				hint = "an if step lists its steps under then: and else:"
			case s.Kind == KindSwitch && key == "steps":
				hint = "a switch lists steps under each case: switch: [{case: ..., steps: [...]}]"
			}
			p.ps.add(k.Line, k.Column, m.sub(key), hint, "`%s` belongs to foreach steps", key)
		}
	}
}

// defaultRetry is a single attempt with the default backoff settings.
func defaultRetry() Retry {
	return Retry{MaxAttempts: 1, InitialBackoff: time.Second, MaxBackoff: time.Minute, Multiplier: 2}
}

// retry reads a retry policy.
func (p *parser) retry(n, at *yaml.Node, path string) Retry {
	r := defaultRetry()
	m := p.readMap(n, at, path, "write retry: {max_attempts: 5, initial_backoff: 1s, max_backoff: 1m, multiplier: 2}")
	if m == nil {
		return r
	}
	if v, _ := m.get("max_attempts"); v != nil {
		hint := fmt.Sprintf("write a whole number from 1 (no retry) to %d; it counts the first try", MaxRetryAttempts)
		if a, ok := p.integer(v, m.sub("max_attempts"), hint); ok {
			if a < 1 || a > MaxRetryAttempts {
				p.ps.add(v.Line, v.Column, m.sub("max_attempts"), hint, "max_attempts %d is out of range", a)
			} else {
				r.MaxAttempts = int(a)
			}
		}
	}
	backoff := func(key string) (time.Duration, *yaml.Node) {
		v, _ := m.get(key)
		if v == nil {
			return 0, nil
		}
		d, ok := p.duration(v, m.sub(key))
		if !ok {
			return 0, nil
		}
		if d <= 0 || d > MaxBackoff {
			p.ps.add(v.Line, v.Column, m.sub(key), "write a duration from 1ms to 24h, e.g. 1s", "%s %s is out of range", key, d)
			return 0, nil
		}
		return d, v
	}
	initial, initialNode := backoff("initial_backoff")
	maxB, maxNode := backoff("max_backoff")
	if initialNode != nil {
		r.InitialBackoff = initial
		if maxNode == nil && initial > r.MaxBackoff {
			r.MaxBackoff = initial
		}
	}
	if maxNode != nil {
		r.MaxBackoff = maxB
		if maxB < r.InitialBackoff {
			p.ps.add(maxNode.Line, maxNode.Column, m.sub("max_backoff"), fmt.Sprintf("write a max_backoff of at least %s", r.InitialBackoff),
				"max_backoff %s is shorter than initial_backoff %s", maxB, r.InitialBackoff)
		}
	}
	if v, _ := m.get("multiplier"); v != nil {
		hint := "write a number from 1 (constant backoff) to 10, e.g. 2"
		if f, ok := p.number(v, m.sub("multiplier"), hint); ok {
			if f < 1 || f > MaxRetryMultiplier {
				p.ps.add(v.Line, v.Column, m.sub("multiplier"), hint, "multiplier %v is out of range", f)
			} else {
				r.Multiplier = f
			}
		}
	}
	m.finish()
	return r
}

// call reads a call step's request.
func (p *parser) call(n, at *yaml.Node, path string, sc *scope) *Call {
	c := &Call{Method: http.MethodGet, MaxResponseBytes: DefaultMaxResponseBytes}
	m := p.readMap(n, at, path, "write call: {connector: name, method: GET, path: /resource}")
	if m == nil {
		return c
	}
	const connectorHint = "write a connector's name; `trustflow connector list` shows them"
	if v, _ := m.get("connector"); v == nil {
		m.missing("connector", "add connector: with a connector's name; `trustflow connector list` shows them")
	} else if s, ok := p.str(v, m.sub("connector"), connectorHint); ok {
		c.Connector = s
		if !connectorNameRE.MatchString(s) {
			hint := connectorHint
			if hasExpr(s) {
				hint = "a connector is named, not computed: write its name"
			}
			p.ps.add(v.Line, v.Column, m.sub("connector"), hint, "%q is not a valid connector name", s)
		}
	}
	if v, _ := m.get("method"); v != nil {
		if s, ok := p.str(v, m.sub("method"), "write an HTTP method such as GET or POST"); ok {
			switch {
			case !tokenRE.MatchString(s):
				p.ps.add(v.Line, v.Column, m.sub("method"), "write an HTTP method such as GET, POST, PUT, PATCH or DELETE", "%q is not an HTTP method", s)
			case slices.Contains(standardMethods, strings.ToUpper(s)) && s != strings.ToUpper(s):
				p.ps.add(v.Line, v.Column, m.sub("method"), "write "+strings.ToUpper(s), "HTTP methods are case-sensitive: %q is not %s", s, strings.ToUpper(s))
			default:
				c.Method = s
			}
		}
	}
	if v, _ := m.get("path"); v == nil {
		m.missing("path", "add path: /resource (write / for the connector's base URL)")
	} else {
		c.Path = p.value(v, m.sub("path"), sc)
		p.checkPath(v, c.Path, m.sub("path"))
	}
	if v, k := m.get("query"); v != nil {
		c.Query = p.valueMap(v, k, m.sub("query"), sc, "write query: {name: value}", nil)
	}
	if v, k := m.get("headers"); v != nil {
		c.Headers = p.valueMap(v, k, m.sub("headers"), sc, "write headers: {Name: value}", p.checkHeader)
	}
	if v, _ := m.get("body"); v != nil {
		c.Body = p.value(v, m.sub("body"), sc)
	}
	if v, _ := m.get("expect"); v != nil {
		c.Expect = p.expect(v, m.sub("expect"))
	}
	if v, _ := m.get("max_response_bytes"); v != nil {
		hint := fmt.Sprintf("write a number of bytes from 1 to %d (100 MiB)", MaxMaxResponseBytes)
		if b, ok := p.integer(v, m.sub("max_response_bytes"), hint); ok {
			if b < 1 || b > MaxMaxResponseBytes {
				p.ps.add(v.Line, v.Column, m.sub("max_response_bytes"), hint, "max_response_bytes %d is out of range", b)
			} else {
				c.MaxResponseBytes = b
			}
		}
	}
	m.finish()
	return c
}

// checkPath refuses a call path that names a scheme or host, or climbs
// out of the connector's base path; for a computed path, the text before
// the first expression is checked.
func (p *parser) checkPath(n *yaml.Node, v *Value, path string) {
	if v == nil {
		return
	}
	var prefix string
	switch v.kind {
	case literalValue:
		s, ok := v.lit.(string)
		if !ok {
			p.ps.add(n.Line, n.Column, path, "write a path such as /users/42", "the path must be a string")
			return
		}
		prefix = s
	case templateValue:
		if v.parts[0].expr == nil {
			prefix = v.parts[0].text
		}
	case exprValue:
		return
	default:
		p.ps.add(n.Line, n.Column, path, "write a path such as /users/42", "the path must be a string, not %s", nodeKind(n))
		return
	}
	hint := "write only the path, e.g. /users/42; the connector's URL supplies the scheme and host"
	if strings.HasPrefix(prefix, "//") || strings.HasPrefix(prefix, `\\`) || schemeRE.MatchString(prefix) {
		p.ps.add(n.Line, n.Column, path, hint, "the path must not name a scheme or host")
		return
	}
	if v.kind == literalValue {
		p2, _, _ := strings.Cut(prefix, "?")
		for _, seg := range strings.Split(p2, "/") {
			if seg == ".." {
				p.ps.add(n.Line, n.Column, path, "remove the '..' segments", "the path climbs out of the connector's base path")
				return
			}
		}
	}
}

// checkHeader validates a header name; seen holds the names so far.
func (p *parser) checkHeader(k *yaml.Node, name, path string, seen map[string]string) bool {
	switch {
	case !tokenRE.MatchString(name):
		p.ps.add(k.Line, k.Column, path, "use letters, digits and '-', e.g. X-Request-Id", "%q is not a valid header name", name)
		return false
	case slices.ContainsFunc(reservedHeaders, func(h string) bool { return strings.EqualFold(h, name) }):
		p.ps.add(k.Line, k.Column, path, "remove it; trustflow sets it", "header %s cannot be set by a flow", name)
		return false
	}
	if first, dup := seen[strings.ToLower(name)]; dup {
		p.ps.add(k.Line, k.Column, path, "header names are case-insensitive; keep one", "header %s repeats %s", name, first)
		return false
	}
	seen[strings.ToLower(name)] = name
	return true
}

// valueMap reads a map of names to Values (query, headers, set); check,
// when given, validates each name.
func (p *parser) valueMap(n, at *yaml.Node, path string, sc *scope, hint string,
	check func(k *yaml.Node, name, path string, seen map[string]string) bool) map[string]*Value {
	m, _ := p.orderedValueMap(n, at, path, sc, hint, check)
	return m
}

func (p *parser) orderedValueMap(n, at *yaml.Node, path string, sc *scope, hint string,
	check func(k *yaml.Node, name, path string, seen map[string]string) bool) (map[string]*Value, []string) {
	if n == nil || p.bad[n] {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		p.ps.add(n.Line, n.Column, path, hint, "must be a mapping (key: value), not %s", nodeKind(n))
		return nil, nil
	}
	out := map[string]*Value{}
	var keys []string
	seen := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || p.bad[k] {
			continue
		}
		name, ok := p.key(k, path)
		if !ok {
			continue
		}
		kp := joinPath(path, name)
		if check != nil && !check(k, name, kp, seen) {
			continue
		}
		if _, dup := out[name]; dup {
			continue
		}
		out[name] = p.valueOrNull(v, kp, sc)
		keys = append(keys, name)
	}
	return out, keys
}

// key reads a map key: never evaluated; "$${" is a literal "${", and a
// "${" is a problem, since it would not be evaluated.
func (p *parser) key(k *yaml.Node, path string) (string, bool) {
	if hasExpr(k.Value) {
		p.ps.add(k.Line, k.Column, joinPath(path, k.Value), "build the map in one expression, e.g. ${ {input.name: 'value'} }, or write $${ for a literal ${",
			"keys are not evaluated")
		return "", false
	}
	return unescapeKey(k.Value), true
}

// expect reads the list of success statuses.
func (p *parser) expect(n *yaml.Node, path string) []int {
	const hint = "write a list of HTTP statuses from 100 to 599, e.g. expect: [200, 404]"
	if p.bad[n] {
		return nil
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.ps.add(n.Line, n.Column, path, hint, "must be a non-empty list of statuses")
		return nil
	}
	var out []int
	for i, c := range n.Content {
		s, ok := p.integer(c, indexPath(path, i), hint)
		if !ok {
			continue
		}
		if s < 100 || s > 599 {
			p.ps.add(c.Line, c.Column, indexPath(path, i), hint, "%d is not an HTTP status", s)
			continue
		}
		if !slices.Contains(out, int(s)) {
			out = append(out, int(s))
		}
	}
	return out
}

// set reads a set step's map.
func (p *parser) set(n, at *yaml.Node, path string, sc *scope) (map[string]*Value, []string) {
	m, keys := p.orderedValueMap(n, at, path, sc, "write set: {name: value}", nil)
	if m != nil && keys == nil {
		keys = []string{}
	}
	return m, keys
}

// switchCases reads a switch step's entries.
func (p *parser) switchCases(s *Step, n, at *yaml.Node, path string, sc, own *scope, depth int) {
	const hint = "write switch: [{case: ${...}, steps: [...]}, {default: true, steps: [...]}]"
	if p.bad[n] {
		return
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.ps.add(n.Line, n.Column, path, hint, "must be a non-empty list of cases")
		return
	}
	info := own.step
	for j, c := range n.Content {
		ep := indexPath(path, j)
		cm := p.readMap(c, c, ep, hint)
		if cm == nil {
			continue
		}
		caseNode, _ := cm.get("case")
		defNode, defKey := cm.get("default")
		stepsNode, stepsKey := cm.get("steps")
		var steps []*Step
		if stepsNode == nil {
			cm.missing("steps", "add steps: [...] (an empty list does nothing)")
		} else {
			steps = p.steps(stepsNode, stepsKey, cm.sub("steps"), sc.nested(info), depth+1)
		}
		switch {
		case caseNode != nil && defNode != nil:
			p.ps.add(defKey.Line, defKey.Column, cm.sub("default"), "split it into a case entry and a default entry", "an entry is a case or the default, not both")
		case caseNode != nil:
			s.Cases = append(s.Cases, Case{When: p.cond(caseNode, cm.sub("case"), own), Steps: steps})
		case defNode != nil:
			if b, ok := p.boolean(defNode, cm.sub("default"), "write default: true"); ok && !b {
				p.ps.add(defNode.Line, defNode.Column, cm.sub("default"), "write default: true, or remove the entry", "default must be true")
			}
			switch {
			case s.HasDefault:
				p.ps.add(defKey.Line, defKey.Column, cm.sub("default"), "keep one default", "a switch has at most one default")
			case j != len(n.Content)-1:
				p.ps.add(defKey.Line, defKey.Column, cm.sub("default"), "move the default entry to the end", "the default must be the last entry")
			}
			s.HasDefault = true
			s.Default = steps
		default:
			p.ps.add(c.Line, c.Column, ep, hint, "a switch entry needs `case:` or `default: true`")
		}
		cm.finish()
	}
}

// foreach reads a foreach step.
func (p *parser) foreach(s *Step, m *mapReader, sc, own *scope, depth int) {
	v, _ := m.get("foreach")
	s.Foreach = p.value(v, m.sub("foreach"), own)
	elem := cel.DynType
	if s.Foreach != nil {
		switch s.Foreach.kind {
		case listValue:
		case exprValue:
			t := s.Foreach.expr.typ
			switch t.Kind() {
			case types.ListKind:
				elem = t.Parameters()[0]
			case types.DynKind, types.AnyKind:
			default:
				p.ps.add(s.Foreach.expr.Line, s.Foreach.expr.Column, m.sub("foreach"), "write an expression that gives a list, e.g. ${steps.lookup.body.groups}",
					"foreach needs a list; this expression gives %s", typeText(t))
			}
		default:
			p.ps.add(v.Line, v.Column, m.sub("foreach"), "write a list, or ${...} giving one", "foreach needs a list, not %s", nodeKind(v))
		}
	}
	s.As = DefaultLoopVariable
	if v, _ := m.get("as"); v != nil {
		const hint = "use letters, digits and '_', e.g. as: group"
		if name, ok := p.str(v, m.sub("as"), hint); ok {
			switch {
			case !identRE.MatchString(name):
				p.ps.add(v.Line, v.Column, m.sub("as"), hint, "%q is not a valid variable name", name)
			case slices.Contains(reservedNames, name):
				p.ps.add(v.Line, v.Column, m.sub("as"), "choose another name, e.g. as: group", "%q is a reserved name", name)
			default:
				s.As = name
			}
		}
	}
	s.Concurrency = 1
	if v, _ := m.get("concurrency"); v != nil {
		hint := fmt.Sprintf("write a whole number from 1 (one item at a time) to %d", MaxForeachConcurrency)
		if c, ok := p.integer(v, m.sub("concurrency"), hint); ok {
			if c < 1 || c > MaxForeachConcurrency {
				p.ps.add(v.Line, v.Column, m.sub("concurrency"), hint, "concurrency %d is out of range", c)
			} else {
				s.Concurrency = int(c)
			}
		}
	}
	body, bodyKey := m.get("steps")
	if body == nil {
		m.missing("steps", "add steps: with the steps to run for each item")
		return
	}
	s.Body = p.steps(body, bodyKey, m.sub("steps"), sc.loop(own.step, loopVar{name: s.As, typ: elem}), depth+1)
	if len(s.Body) == 0 && body.Kind == yaml.SequenceNode {
		p.ps.add(body.Line, body.Column, m.sub("steps"), "add the steps to run for each item", "a foreach needs at least one step")
	}
}

// sleep reads a sleep step: a fixed duration or {until: timestamp}.
func (p *parser) sleep(s *Step, n, at *yaml.Node, path string, sc *scope) {
	if p.bad[n] {
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" && hasExpr(n.Value) {
		p.ps.add(n.Line, n.Column, path, "write sleep: {until: ${now() + duration('1h')}} for a computed time", "sleep takes a fixed duration")
		return
	}
	if n.Kind != yaml.MappingNode {
		d, ok := p.duration(n, path)
		if ok && d == 0 {
			p.ps.add(n.Line, n.Column, path, "write a positive duration, e.g. 10m", "a sleep of 0 does nothing")
		}
		s.SleepFor = d
		return
	}
	m := p.readMap(n, at, path, "write sleep: 10m or sleep: {until: ${...}}")
	if v, _ := m.get("until"); v == nil {
		m.missing("until", "add until: with a timestamp, e.g. ${run.started_at + duration('24h')}")
	} else {
		s.SleepUntil = p.value(v, m.sub("until"), sc)
		if u := s.SleepUntil; u != nil {
			switch u.kind {
			case literalValue:
				str, ok := u.lit.(string)
				if _, err := time.Parse(time.RFC3339Nano, str); !ok || err != nil {
					p.ps.add(v.Line, v.Column, m.sub("until"), "write an RFC 3339 timestamp such as 2030-01-01T09:00:00Z, or ${...} giving one",
						"%s is not a timestamp", describeNode(v))
				}
			case exprValue:
				if k := u.expr.typ.Kind(); k != types.TimestampKind && k != types.StringKind && k != types.DynKind && k != types.AnyKind {
					p.ps.add(u.expr.Line, u.expr.Column, m.sub("until"), "write an expression giving a timestamp, e.g. ${now() + duration('1h')}",
						"until needs a timestamp; this expression gives %s", typeText(u.expr.typ))
				}
			case listValue, mapValue:
				p.ps.add(v.Line, v.Column, m.sub("until"), "write a timestamp, or ${...} giving one", "until needs a timestamp, not %s", nodeKind(v))
			}
		}
	}
	m.finish()
}

// subFlow reads a flow step.
func (p *parser) subFlow(s *Step, n, at *yaml.Node, path string, sc *scope) {
	m := p.readMap(n, at, path, "write flow: {name: other-flow, input: {...}}")
	if m == nil {
		return
	}
	const hint = "write the name of a flow, e.g. name: disable-user"
	if v, _ := m.get("name"); v == nil {
		m.missing("name", "add name: with the flow to run")
	} else if name, ok := p.str(v, m.sub("name"), hint); ok {
		s.SubFlow = name
		switch {
		case !nameRE.MatchString(name):
			p.ps.add(v.Line, v.Column, m.sub("name"), hint, "%q is not a valid flow name", name)
		case name == p.name:
			p.ps.add(v.Line, v.Column, m.sub("name"), "run another flow; repeat work with foreach", "a flow cannot run itself")
		}
	}
	if v, _ := m.get("input"); v != nil {
		s.SubInput = p.value(v, m.sub("input"), sc)
		if in := s.SubInput; in != nil {
			switch {
			case in.kind == literalValue && in.lit != nil, in.kind == listValue, in.kind == templateValue:
				p.ps.add(v.Line, v.Column, m.sub("input"), "write input: {name: value}", "a flow's input must be a mapping, not %s", nodeKind(v))
			case in.kind == exprValue:
				if k := in.expr.typ.Kind(); k != types.MapKind && k != types.DynKind && k != types.AnyKind && k != types.StructKind {
					p.ps.add(in.expr.Line, in.expr.Column, m.sub("input"), "write an expression giving a map, or input: {name: value}",
						"a flow's input must be a map; this expression gives %s", typeText(in.expr.typ))
				}
			}
		}
	}
	m.finish()
}

// fail reads a fail step: a message, or {message, code}.
func (p *parser) fail(s *Step, n, at *yaml.Node, path string, sc *scope) {
	if p.bad[n] {
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() != "!!null" {
		s.FailMessage = p.value(n, path, sc)
		return
	}
	m := p.readMap(n, at, path, "write fail: {message: text, code: some_code}")
	if m == nil {
		return
	}
	if v, _ := m.get("message"); v == nil {
		m.missing("message", "add message: saying why the run fails")
	} else {
		s.FailMessage = p.value(v, m.sub("message"), sc)
	}
	if v, _ := m.get("code"); v != nil {
		s.FailCode = p.value(v, m.sub("code"), sc)
	}
	m.finish()
}

// typeText names a CEL type for messages.
func typeText(t *cel.Type) string {
	switch t.Kind() {
	case types.BoolKind:
		return "a boolean"
	case types.IntKind, types.UintKind:
		return "an integer"
	case types.DoubleKind:
		return "a number"
	case types.StringKind:
		return "a string"
	case types.BytesKind:
		return "bytes"
	case types.ListKind:
		return "a list"
	case types.MapKind, types.StructKind:
		return "a map"
	case types.NullTypeKind:
		return "null"
	case types.TimestampKind:
		return "a timestamp"
	case types.DurationKind:
		return "a duration"
	}
	return cel.FormatCELType(t)
}
