package flow

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // schedules name IANA zones; the binary must know them on any host

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"
)

var (
	// nameRE is a flow name.
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	// connectorNameRE is a connector name, as package connector defines it.
	connectorNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	// stepIDRE is a step id.
	stepIDRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	// identRE is an input name or a loop variable: a CEL identifier.
	identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	// eventTypeRE is a lifecycle event type such as identity.expiring.
	eventTypeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`)
	// yamlLineRE finds the line in a YAML syntax error.
	yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	// daysRE splits a leading day count off a duration.
	daysRE = regexp.MustCompile(`^(\d+)d(.*)$`)
)

var (
	triggerKinds = []string{TriggerManual, TriggerSchedule, TriggerWebhook, TriggerEvent}
	inputTypes   = []string{TypeString, TypeNumber, TypeInteger, TypeBoolean, TypeObject, TypeArray}
	cronParser   = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
)

// Parse reads a flow document (YAML or JSON; JSON is YAML) and validates
// it: structure, names, references, and every expression, compiled and
// type-checked. filename is used in problems only. The error is a
// *errs.Error (code invalid_flow) listing every problem found, each with its line and
// column.
func Parse(filename string, data []byte) (*Document, error) {
	p := &parser{ps: problems{file: filename}, src: data, bad: map[*yaml.Node]bool{}, ids: map[string]*stepInfo{}}
	doc := p.parse()
	if err := p.ps.err(); err != nil {
		return nil, err
	}
	return doc, nil
}

// parser holds the state of one Parse.
type parser struct {
	ps   problems
	src  []byte
	loc  *locator
	envs *envSet
	// bad marks nodes already reported (aliases, bad tags, bad numbers), so
	// readers skip them silently.
	bad map[*yaml.Node]bool
	// name is the flow's name, once read.
	name string
	// ids, infos and refs serve the step reference checks.
	ids   map[string]*stepInfo
	infos []*stepInfo
	refs  []stepRef
	// count is the number of steps read; tooMany is set once over MaxSteps.
	count   int
	tooMany bool
	// exprs and exprBytes count the expressions compiled and their text, up
	// to MaxExpressions and MaxExpressionBytes; tooMuchCode is set once over.
	exprs, exprBytes int
	tooMuchCode      bool
	// stepHints caches the hints for unknown step ids.
	stepHints map[string]string
}

func (p *parser) parse() *Document {
	if len(p.src) > MaxDocumentBytes {
		p.ps.add(0, 0, "", "split the flow into sub-flows (kind flow), or move large data out of the document",
			"the document is %d bytes; the limit is 1 MiB (%d bytes)", len(p.src), MaxDocumentBytes)
		return nil
	}
	root, ok := p.decode()
	if !ok {
		return nil
	}
	p.loc = newLocator(p.src)
	tree := p.data(root, "", true)

	d := &Document{}
	m := p.readMap(root, root, "", "start the document with apiVersion: trustflow/v1")
	if m == nil {
		return nil
	}
	if n, _ := m.get("apiVersion"); n == nil {
		m.missing("apiVersion", "add apiVersion: trustflow/v1 at the top")
	} else if s, ok := p.str(n, "apiVersion", "write apiVersion: trustflow/v1"); ok {
		d.APIVersion = s
		if s != APIVersion {
			p.ps.add(n.Line, n.Column, "apiVersion", "write apiVersion: trustflow/v1", "unsupported apiVersion %q", s)
		}
	}
	if n, _ := m.get("kind"); n == nil {
		m.missing("kind", "add kind: Flow")
	} else if s, ok := p.str(n, "kind", "write kind: Flow"); ok {
		d.Kind = s
		if s != KindFlow {
			p.ps.add(n.Line, n.Column, "kind", "write kind: Flow", "unsupported kind %q", s)
		}
	}
	nameHint := "use 1-63 lowercase letters, digits and '-', starting with a letter or digit, e.g. offboard-user"
	if n, _ := m.get("name"); n == nil {
		m.missing("name", "add a name, e.g. name: offboard-user")
	} else if s, ok := p.str(n, "name", nameHint); ok {
		d.Name = s
		p.name = s
		if !nameRE.MatchString(s) {
			p.ps.add(n.Line, n.Column, "name", nameHint, "%q is not a valid flow name", s)
		}
	}
	if n, _ := m.get("description"); n != nil {
		d.Description, _ = p.str(n, "description", "write the description as text")
	}
	if n, k := m.get("trigger"); n == nil {
		m.missing("trigger", "add a trigger, e.g. trigger: {manual: {}}")
	} else {
		d.Trigger = p.trigger(n, k)
	}
	inputNode, inputKey := m.get("input")
	var declared []Input
	if inputNode != nil {
		d.InputDeclared = true
		d.Inputs, declared = p.inputs(inputNode, inputKey)
	}
	if n, k := m.get("settings"); n != nil {
		d.Settings = p.settings(n, k)
	}
	if n, k := m.get("limits"); n != nil {
		d.Limits = p.limits(n, k)
	}

	envs, err := newEnvSet(declared, inputNode != nil)
	if err != nil {
		p.ps.add(0, 0, "", "report this as a bug in trustflow", "%v", err)
		return nil
	}
	p.envs = envs

	if n, k := m.get("steps"); n == nil {
		m.missing("steps", "add steps: with at least one step")
	} else {
		d.Steps = p.steps(n, k, "steps", &scope{}, 1)
		if len(d.Steps) == 0 && n.Kind == yaml.SequenceNode {
			p.ps.add(n.Line, n.Column, "steps", "add at least one step", "a flow needs at least one step")
		}
	}
	if n, k := m.get("on_error"); n != nil {
		d.OnError = p.steps(n, k, "on_error", &scope{onError: true}, 1)
	}
	if n, _ := m.get("output"); n != nil {
		d.Output = p.value(n, "output", &scope{output: true})
	}
	m.finish()
	p.checkRefs()

	if len(p.ps.list) > 0 {
		return nil
	}
	digest, err := digestOf(tree)
	if err != nil {
		p.ps.add(0, 0, "", "report this as a bug in trustflow", "%v", err)
		return nil
	}
	d.Digest = digest
	d.Source = bytes.Clone(p.src)
	return d
}

// decode reads the one YAML document of the input.
func (p *parser) decode() (root *yaml.Node, ok bool) {
	defer func() {
		// The YAML parser is third-party code: whatever it does with hostile
		// input must end as a problem, not as a crashed server.
		if r := recover(); r != nil {
			p.ps.add(0, 0, "", "check the document's YAML syntax", "the document is not valid YAML")
			root, ok = nil, false
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(p.src))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.ps.add(0, 0, "", "start with apiVersion: trustflow/v1", "the document is empty")
		} else {
			p.yamlError(err)
		}
		return nil, false
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != nil && !errors.Is(err, io.EOF) {
		p.yamlError(err)
		return nil, false
	} else if err == nil && len(extra.Content) > 0 && extra.Content[0].ShortTag() != "!!null" {
		p.ps.add(extra.Content[0].Line, extra.Content[0].Column, "", "put each flow in its own file", "the file holds more than one YAML document")
		return nil, false
	}
	if len(doc.Content) == 0 || doc.Content[0].ShortTag() == "!!null" {
		p.ps.add(0, 0, "", "start with apiVersion: trustflow/v1", "the document is empty")
		return nil, false
	}
	return doc.Content[0], true
}

// yamlParserErrors are the YAML errors whose line the YAML package reports
// counted from 0 (its scanner's errors count from 1). The line is where the
// collection or node being read starts.
var yamlParserErrors = []string{
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"found undefined tag handle",
	"did not find expected node content",
	"did not find expected '-' indicator",
	"did not find expected key",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found duplicate %TAG directive",
}

// yamlError records a YAML syntax error.
func (p *parser) yamlError(err error) {
	msg := err.Error()
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
		if slices.Contains(yamlParserErrors, msg) {
			line++
		}
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	p.ps.add(line, 0, "", "check indentation and quoting on this line; quote a value that starts with {, [, *, &, !, |, >, %, @ or a backquote",
		"invalid YAML: %s", msg)
}

// data converts a node to plain Go data (for the digest and for literal
// defaults). With report set it records problems: aliases, merge keys,
// duplicate or non-string keys, unsupported tags, non-finite numbers; and
// marks those nodes bad.
func (p *parser) data(n *yaml.Node, path string, report bool) any {
	switch n.Kind {
	case yaml.AliasNode:
		if report {
			p.bad[n] = true
			p.ps.add(n.Line, n.Column, path, "write the value out in full", "YAML aliases (*%s) are not supported", n.Value)
		}
		return nil
	case yaml.ScalarNode:
		v, ok := p.scalar(n)
		if !ok && report {
			p.bad[n] = true
			p.ps.add(n.Line, n.Column, path, "write a string, number, boolean or null", "%s", v)
			return nil
		}
		return v
	case yaml.SequenceNode:
		if report && !standardTag(n, "!!seq") {
			p.bad[n] = true
			p.ps.add(n.Line, n.Column, path, "remove the tag", "unsupported YAML tag %s", n.Tag)
		}
		out := make([]any, len(n.Content))
		for i, c := range n.Content {
			out[i] = p.data(c, indexPath(path, i), report)
		}
		return out
	case yaml.MappingNode:
		if report && !standardTag(n, "!!map") {
			p.bad[n] = true
			p.ps.add(n.Line, n.Column, path, "remove the tag", "unsupported YAML tag %s", n.Tag)
		}
		out := map[string]any{}
		first := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			switch {
			case k.Kind != yaml.ScalarNode:
				if report {
					p.bad[k] = true
					p.ps.add(k.Line, k.Column, path, "use a plain name as the key", "a key must be a string, not %s", nodeKind(k))
				}
				continue
			case k.ShortTag() == "!!merge":
				if report {
					p.bad[k] = true
					p.ps.add(k.Line, k.Column, path, "write the keys out in full", "YAML merge keys (<<) are not supported")
				}
				continue
			}
			if f, dup := first[k.Value]; dup {
				if report {
					p.bad[k] = true
					p.ps.add(k.Line, k.Column, joinPath(path, k.Value), "remove one of them", "duplicate key `%s` (first at line %d)", k.Value, f.Line)
				}
				continue
			}
			first[k.Value] = k
			out[k.Value] = p.data(v, joinPath(path, k.Value), report)
		}
		return out
	}
	return nil
}

// standardTag reports whether a collection carries no tag but its own.
func standardTag(n *yaml.Node, tag string) bool {
	return n.Tag == "" || n.Tag == tag || n.Tag == "tag:yaml.org,2002:"+strings.TrimPrefix(tag, "!!")
}

// scalar converts a scalar node: null, bool, int64, float64 or string.
// When it cannot, it returns the problem's message and false.
func (p *parser) scalar(n *yaml.Node) (any, bool) {
	switch n.ShortTag() {
	case "!!null":
		return nil, true
	case "!!str", "!!timestamp":
		return n.Value, true
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return fmt.Sprintf("%q is not a boolean", n.Value), false
		}
		return b, true
	case "!!int":
		var v any
		if err := n.Decode(&v); err != nil {
			return fmt.Sprintf("%q is not an integer", n.Value), false
		}
		switch i := v.(type) {
		case int:
			return int64(i), true
		case int64:
			return i, true
		case uint64:
			if i <= math.MaxInt64 {
				return int64(i), true
			}
		case float64:
			if !math.IsInf(i, 0) && !math.IsNaN(i) {
				return i, true
			}
		}
		return fmt.Sprintf("integer %s is out of range", n.Value), false
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return fmt.Sprintf("%q is not a number", n.Value), false
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return fmt.Sprintf("%s is not a finite number", n.Value), false
		}
		return f, true
	}
	return fmt.Sprintf("unsupported YAML tag %s", n.Tag), false
}

// nodeKind names a node's type for messages.
func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.ShortTag() {
	case "!!null":
		return "null"
	case "!!bool":
		return "a boolean"
	case "!!int", "!!float":
		return "a number"
	}
	return "a string"
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func indexPath(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// mapReader reads a mapping's keys, remembering which ones it asked for
// so that the rest can be reported as unknown.
type mapReader struct {
	p     *parser
	n     *yaml.Node
	at    *yaml.Node
	path  string
	known []string
}

// readMap starts reading mapping n; at is where to report missing keys.
// It records a problem and returns nil when n is not a mapping.
func (p *parser) readMap(n, at *yaml.Node, path, hint string) *mapReader {
	if n == nil || p.bad[n] {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.ps.add(n.Line, n.Column, path, hint, "must be a mapping (key: value), not %s", nodeKind(n))
		return nil
	}
	return &mapReader{p: p, n: n, at: at, path: path}
}

// get returns the value and key nodes of key, or nils.
func (m *mapReader) get(key string) (val, keyNode *yaml.Node) {
	if !slices.Contains(m.known, key) {
		m.known = append(m.known, key)
	}
	for i := 0; i+1 < len(m.n.Content); i += 2 {
		if k := m.n.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key && !m.p.bad[k] {
			return m.n.Content[i+1], k
		}
	}
	return nil, nil
}

// has reports whether key is present, without marking it known.
func (m *mapReader) has(key string) bool {
	_, k := m.lookup(key)
	return k != nil
}

func (m *mapReader) lookup(key string) (val, keyNode *yaml.Node) {
	for i := 0; i+1 < len(m.n.Content); i += 2 {
		if k := m.n.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key && !m.p.bad[k] {
			return m.n.Content[i+1], k
		}
	}
	return nil, nil
}

// sub is the path of a key.
func (m *mapReader) sub(key string) string { return joinPath(m.path, key) }

// missing records that a required key is absent, unless an unknown key
// looks like a misspelling of it: that one is reported, with the spelling.
func (m *mapReader) missing(key, hint string) {
	for _, k := range m.unknown() {
		if closest(k.Value, []string{key}) != "" {
			return
		}
	}
	m.p.ps.add(m.at.Line, m.at.Column, m.sub(key), hint, "`%s` is required", key)
}

// unknown returns the key nodes that were not asked for, in order.
func (m *mapReader) unknown() []*yaml.Node {
	var out []*yaml.Node
	for i := 0; i+1 < len(m.n.Content); i += 2 {
		k := m.n.Content[i]
		if k.Kind != yaml.ScalarNode || m.p.bad[k] || slices.Contains(m.known, k.Value) {
			continue
		}
		out = append(out, k)
	}
	return out
}

// finish reports every key that was not asked for, suggesting the closest
// known key.
func (m *mapReader) finish() {
	for _, k := range m.unknown() {
		hint := suggestHint(k.Value, m.known)
		if hint == "" {
			hint = "remove it; this mapping takes no keys"
		}
		m.p.ps.add(k.Line, k.Column, m.sub(k.Value), hint, "unknown key `%s`", k.Value)
	}
}

// str reads a string field. Numbers are read as written; booleans, null
// and collections are problems.
func (p *parser) str(n *yaml.Node, path, hint string) (string, bool) {
	if n == nil || p.bad[n] {
		return "", false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" || n.ShortTag() == "!!bool" {
		p.ps.add(n.Line, n.Column, path, hint, "must be a string, not %s", nodeKind(n))
		return "", false
	}
	return n.Value, true
}

// integer reads an integer field.
func (p *parser) integer(n *yaml.Node, path, hint string) (int64, bool) {
	if n == nil || p.bad[n] {
		return 0, false
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		if v, ok := p.scalar(n); ok {
			if i, ok := v.(int64); ok {
				return i, true
			}
		}
	}
	p.ps.add(n.Line, n.Column, path, hint, "must be an integer, not %s", describeNode(n))
	return 0, false
}

// number reads a number field (integer or not).
func (p *parser) number(n *yaml.Node, path, hint string) (float64, bool) {
	if n == nil || p.bad[n] {
		return 0, false
	}
	if n.Kind == yaml.ScalarNode {
		if v, ok := p.scalar(n); ok {
			switch f := v.(type) {
			case int64:
				return float64(f), true
			case float64:
				return f, true
			}
		}
	}
	p.ps.add(n.Line, n.Column, path, hint, "must be a number, not %s", describeNode(n))
	return 0, false
}

// boolean reads a boolean field.
func (p *parser) boolean(n *yaml.Node, path, hint string) (bool, bool) {
	if n == nil || p.bad[n] {
		return false, false
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		if v, ok := p.scalar(n); ok {
			return v.(bool), true
		}
	}
	p.ps.add(n.Line, n.Column, path, hint, "must be true or false, not %s", describeNode(n))
	return false, false
}

// describeNode names a scalar with its value for messages.
func describeNode(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode && n.ShortTag() != "!!null" {
		return fmt.Sprintf("%s (%q)", nodeKind(n), n.Value)
	}
	return nodeKind(n)
}

// duration reads a duration field: Go syntax (300ms, 30s, 10m, 1h30m) with
// an optional leading day count (7d, 1d12h). Negative durations are
// problems.
func (p *parser) duration(n *yaml.Node, path string) (time.Duration, bool) {
	const hint = "write a number and a unit: 30s, 10m, 1h30m or 7d"
	if n == nil || p.bad[n] {
		return 0, false
	}
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
		p.ps.add(n.Line, n.Column, path, fmt.Sprintf("write %ss for seconds, or another unit: ms, s, m, h, d", n.Value),
			"duration %s has no unit", n.Value)
		return 0, false
	}
	s, ok := p.str(n, path, hint)
	if !ok {
		return 0, false
	}
	d, err := parseDuration(s)
	if err != nil {
		p.ps.add(n.Line, n.Column, path, hint, "%q is not a duration", s)
		return 0, false
	}
	if d < 0 {
		p.ps.add(n.Line, n.Column, path, "write a positive duration", "duration %q is negative", s)
		return 0, false
	}
	return d, true
}

// parseDuration parses Go durations with an optional leading day count.
func parseDuration(s string) (time.Duration, error) {
	m := daysRE.FindStringSubmatch(s)
	if m == nil {
		return time.ParseDuration(s)
	}
	days, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || days > math.MaxInt64/int64(24*time.Hour) {
		return 0, fmt.Errorf("duration %q out of range", s)
	}
	d := time.Duration(days) * 24 * time.Hour
	if m[2] == "" {
		return d, nil
	}
	rest, err := time.ParseDuration(m[2])
	if err != nil || rest < 0 {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	if d > math.MaxInt64-rest {
		return 0, fmt.Errorf("duration %q out of range", s)
	}
	return d + rest, nil
}

// trigger reads the trigger section.
func (p *parser) trigger(n, at *yaml.Node) Trigger {
	var t Trigger
	if n.Kind == yaml.ScalarNode && slices.Contains(triggerKinds, n.Value) {
		p.ps.add(n.Line, n.Column, "trigger", fmt.Sprintf("write trigger: {%s: {}}", n.Value), "must be a mapping (key: value), not %s", nodeKind(n))
		return t
	}
	m := p.readMap(n, at, "trigger", "write trigger: {manual: {}}")
	if m == nil {
		return t
	}
	var found []*yaml.Node
	for _, kind := range triggerKinds {
		if _, k := m.get(kind); k != nil {
			found = append(found, k)
		}
	}
	slices.SortFunc(found, func(a, b *yaml.Node) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
	switch {
	case len(found) == 0:
		if len(m.unknown()) == 0 {
			p.ps.add(at.Line, at.Column, "trigger", "write one of: manual, schedule, webhook, event; e.g. trigger: {manual: {}}", "a trigger needs a kind")
		}
	case len(found) > 1:
		p.ps.add(found[1].Line, found[1].Column, m.sub(found[1].Value), "keep one of them",
			"a flow has exactly one trigger; this one has %s and %s", found[0].Value, found[1].Value)
	default:
		t.Kind = found[0].Value
		val, key := m.get(t.Kind)
		p.triggerKind(&t, val, key, m.sub(t.Kind))
	}
	m.finish()
	return t
}

// triggerKind reads the settings of the trigger's kind.
func (p *parser) triggerKind(t *Trigger, n, at *yaml.Node, path string) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" && t.Kind != TriggerSchedule && t.Kind != TriggerEvent {
		if t.Kind == TriggerWebhook {
			t.WebhookAuth = WebhookToken
		}
		return
	}
	var hint string
	switch t.Kind {
	case TriggerManual:
		hint = "write manual: {}"
	case TriggerSchedule:
		hint = `write schedule: {cron: "0 6 * * 1-5", timezone: Europe/Paris}`
	case TriggerWebhook:
		hint = "write webhook: {auth: token} or webhook: {auth: hmac}"
	case TriggerEvent:
		hint = "write event: {type: identity.expiring}"
	}
	m := p.readMap(n, at, path, hint)
	if m == nil {
		return
	}
	switch t.Kind {
	case TriggerSchedule:
		t.Timezone = "UTC"
		if v, _ := m.get("timezone"); v != nil {
			if s, ok := p.str(v, m.sub("timezone"), "write an IANA time zone such as Europe/Paris or UTC"); ok {
				if _, err := time.LoadLocation(s); err != nil || s == "" || s == "Local" {
					p.ps.add(v.Line, v.Column, m.sub("timezone"), "write an IANA time zone such as Europe/Paris, America/New_York or UTC", "unknown time zone %q", s)
				} else {
					t.Timezone = s
				}
			}
		}
		if v, _ := m.get("cron"); v == nil {
			m.missing("cron", `add a cron expression, e.g. cron: "0 6 * * 1-5" (minute hour day-of-month month day-of-week)`)
		} else if s, ok := p.str(v, m.sub("cron"), `write a cron expression, e.g. "0 6 * * 1-5"`); ok {
			t.Cron = s
			if strings.HasPrefix(s, "TZ=") || strings.HasPrefix(s, "CRON_TZ=") {
				p.ps.add(v.Line, v.Column, m.sub("cron"), "remove the prefix and set timezone: instead", "a cron expression must not carry a time zone")
			} else if _, err := cronParser.Parse(s); err != nil {
				p.ps.add(v.Line, v.Column, m.sub("cron"), "use 5 fields: minute hour day-of-month month day-of-week, e.g. \"0 6 * * 1-5\", or @hourly, @daily, @weekly, @monthly",
					"invalid cron expression %q: %v", s, err)
			} else if every, ok := strings.CutPrefix(s, "@every "); ok {
				// The cron library rounds a shorter interval up to a second
				// and drops fractions: say so rather than run at another pace.
				if d, err := time.ParseDuration(strings.TrimSpace(every)); err == nil && (d < MinScheduleInterval || d%time.Second != 0) {
					p.ps.add(v.Line, v.Column, m.sub("cron"), "write a whole number of seconds, at least 1s, e.g. @every 30s or @every 1h",
						"a schedule fires at most once a second, in whole seconds; @every %s is not", strings.TrimSpace(every))
				}
			}
		}
	case TriggerWebhook:
		t.WebhookAuth = WebhookToken
		if v, _ := m.get("auth"); v != nil {
			if s, ok := p.str(v, m.sub("auth"), "write auth: token or auth: hmac"); ok {
				if s != WebhookToken && s != WebhookHMAC {
					p.ps.add(v.Line, v.Column, m.sub("auth"), suggestHint(s, []string{WebhookToken, WebhookHMAC}), "unknown webhook auth %q", s)
				} else {
					t.WebhookAuth = s
				}
			}
		}
	case TriggerEvent:
		if v, _ := m.get("type"); v == nil {
			m.missing("type", "add the event type, e.g. type: identity.expiring")
		} else if s, ok := p.str(v, m.sub("type"), "write the event type, e.g. identity.expiring"); ok {
			t.EventType = s
			if !eventTypeRE.MatchString(s) {
				p.ps.add(v.Line, v.Column, m.sub("type"), "write dotted lowercase words, e.g. identity.expiring", "%q is not an event type", s)
			}
		}
	}
	m.finish()
}

// inputs reads the input section. It returns the valid inputs, and every
// declared name (with its type when valid) for the expression environment.
func (p *parser) inputs(n, at *yaml.Node) (valid, declared []Input) {
	m := p.readMap(n, at, "input", "declare each input as name: {type: string}")
	if m == nil {
		return nil, nil
	}
	valid = []Input{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || p.bad[k] {
			continue
		}
		path := m.sub(k.Value)
		in, ok := p.input(k, v, path)
		declared = append(declared, in)
		if ok {
			valid = append(valid, in)
		}
	}
	return valid, declared
}

// input reads one input declaration.
func (p *parser) input(k, v *yaml.Node, path string) (Input, bool) {
	in := Input{Name: k.Value, Type: TypeString}
	ok := true
	if !identRE.MatchString(in.Name) || slices.Contains(celKeywords, in.Name) {
		p.ps.add(k.Line, k.Column, path, "use letters, digits and '_', starting with a letter, e.g. user_id",
			"%q is not a valid input name", in.Name)
		ok = false
	}
	m := p.readMap(v, k, path, "write name: {type: string, required: true}")
	if m == nil {
		return in, false
	}
	if t, _ := m.get("type"); t != nil {
		if s, good := p.str(t, m.sub("type"), "use one of: "+strings.Join(inputTypes, ", ")); good {
			if slices.Contains(inputTypes, s) {
				in.Type = s
			} else {
				p.ps.add(t.Line, t.Column, m.sub("type"), suggestHint(s, inputTypes), "unknown input type %q", s)
				in.Type, ok = "", false
			}
		} else {
			in.Type, ok = "", false
		}
	}
	if r, _ := m.get("required"); r != nil {
		in.Required, _ = p.boolean(r, m.sub("required"), "write required: true or required: false")
	}
	if s, _ := m.get("secret"); s != nil {
		in.Secret, _ = p.boolean(s, m.sub("secret"), "write secret: true or secret: false")
	}
	if d, _ := m.get("description"); d != nil {
		in.Description, _ = p.str(d, m.sub("description"), "write the description as text")
	}
	if d, _ := m.get("default"); d != nil {
		in.HasDefault = true
		if in.Required {
			p.ps.add(d.Line, d.Column, m.sub("default"), "remove `default`, or `required: true`", "a required input cannot have a default")
			ok = false
		}
		if in.Type != "" && !p.bad[d] {
			val, msg := conform(in.Type, p.data(d, "", false))
			if msg != "" {
				p.ps.add(d.Line, d.Column, m.sub("default"), "write a default of type "+in.Type, "default %s", msg)
				ok = false
			}
			in.Default = val
		}
	}
	m.finish()
	return in, ok
}

// settings reads the settings section.
func (p *parser) settings(n, at *yaml.Node) Settings {
	var s Settings
	m := p.readMap(n, at, "settings", "write settings: {concurrency: 10, timeout: 24h}")
	if m == nil {
		return s
	}
	if v, _ := m.get("concurrency"); v != nil {
		const hint = "write the most runs at once as a whole number, or 0 for no limit"
		if c, ok := p.integer(v, m.sub("concurrency"), hint); ok {
			if c < 0 || c > math.MaxInt32 {
				p.ps.add(v.Line, v.Column, m.sub("concurrency"), hint, "concurrency %d is out of range", c)
			} else {
				s.Concurrency = int(c)
			}
		}
	}
	if v, _ := m.get("timeout"); v != nil {
		s.Timeout, _ = p.duration(v, m.sub("timeout"))
	}
	s.Durability = DurabilityDurable
	if v, _ := m.get("durability"); v != nil {
		const hint = "write durability: durable (the default: every step checkpointed) or durability: none (runs in memory, recorded when they end)"
		if d, ok := p.str(v, m.sub("durability"), hint); ok {
			switch d {
			case DurabilityDurable, DurabilityNone:
				s.Durability = d
			default:
				p.ps.add(v.Line, v.Column, m.sub("durability"), hint, "durability %q is neither durable nor none", d)
			}
		}
	}
	m.finish()
	return s
}

// limits reads the limits section: positive whole numbers, each lowering
// one of the server's limits.
func (p *parser) limits(n, at *yaml.Node) Limits {
	l := Limits{pos: map[string][2]int{}}
	m := p.readMap(n, at, "limits", "write limits: {foreach_items: 500, runs_in_flight: 10}")
	if m == nil {
		return l
	}
	for _, key := range LimitKeys {
		v, _ := m.get(key)
		if v == nil {
			continue
		}
		hint := "write a whole number of 1 or more; it may only lower the server's limit"
		if strings.HasSuffix(key, "_bytes") {
			hint = "write a number of bytes, e.g. 262144 for 256 KiB; it may only lower the server's limit"
		}
		i, ok := p.integer(v, m.sub(key), hint)
		if !ok {
			continue
		}
		if i < 1 {
			p.ps.add(v.Line, v.Column, m.sub(key), hint, "%s %d is out of range", key, i)
			continue
		}
		l.pos[key] = [2]int{v.Line, v.Column}
		switch key {
		case LimitSubflowDepth:
			l.SubflowDepth = i
		case LimitForeachItems:
			l.ForeachItems = i
		case LimitStepOutputBytes:
			l.StepOutputBytes = i
		case LimitRunStateBytes:
			l.RunStateBytes = i
		case LimitRunsInFlight:
			l.RunsInFlight = i
		}
	}
	m.finish()
	return l
}
