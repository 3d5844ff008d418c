package flow

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/ext"
)

// Expression limits.
const (
	// CostLimit bounds the work of one evaluation, in CEL cost units (about
	// one per elementary operation, more for work proportional to the size
	// of strings and lists). An expression that exceeds it fails.
	CostLimit = 1_000_000
	// MemoryLimit bounds the values one evaluation builds, in CEL's aggregate
	// element counts. An expression that exceeds it fails.
	MemoryLimit = 4_000_000
	// MaxResultBytes bounds what one evaluation produces: its result
	// (counted as its text: strings and map keys, plus one byte per
	// element, roughly its JSON size), json.encode's text, and the string
	// replace() or join() would build. Over it, the expression fails.
	MaxResultBytes = 4 << 20
	// interruptEvery is how many comprehension iterations run between checks
	// of the caller's context.
	interruptEvery = 100
	// maxSizedDepth is how deep the memory tracker follows a value the
	// expression built before it counts it as over the limit; CEL's default
	// (5) refused lists of call results.
	maxSizedDepth = 512
	// sampleEvery is how many iterations of a comprehension pass between
	// two sizings of the value it builds (sizing each one would make
	// map() over n items cost n²).
	sampleEvery = 64
)

// Names of the CEL object types behind input, run and error.
const (
	inputTypeName = "trustflow.Input"
	runTypeName   = "trustflow.Run"
	errorTypeName = "trustflow.Error"
)

// celKeywords are CEL's reserved words: they cannot name inputs or loop
// variables.
var celKeywords = []string{
	"in", "as", "break", "const", "continue", "else", "for", "function", "if",
	"import", "let", "loop", "package", "namespace", "return", "var", "void",
	"while", "true", "false", "null",
}

// reservedNames cannot be loop variables: they are variables or function
// namespaces of the expression language, or CEL reserved words.
var reservedNames = append([]string{
	"input", "steps", "run", "error", "index", "now", "uuid",
	"json", "base64", "strings", "optional", "math",
}, celKeywords...)

// baseEnv is the CEL environment every flow shares: the standard library,
// the strings extension, base64 and json, optional values, now() and uuid().
// It is built once and never changed.
var baseEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		ext.Strings(),
		ext.Encoders(ext.EncodersVersion(0)),
		cel.OptionalTypes(),
		cel.CrossTypeNumericComparisons(true),
		cel.DefaultUTCTimeZone(true),
		cel.Variable("steps", cel.MapType(cel.StringType, cel.DynType)),
		cel.Function("base64.encode",
			cel.Overload("base64_encode_string", []*cel.Type{cel.StringType}, cel.StringType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					return types.String(base64.StdEncoding.EncodeToString([]byte(v.(types.String))))
				}))),
		cel.Function("json.encode",
			cel.Overload("json_encode_dyn", []*cel.Type{cel.DynType}, cel.StringType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					out, err := toJSONLike(v)
					if err != nil {
						return types.WrapErr(fmt.Errorf("json.encode: %w", err))
					}
					return types.String(Text(out))
				}))),
		cel.Function("json.decode",
			cel.Overload("json_decode_string", []*cel.Type{cel.StringType}, cel.DynType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					out, err := DecodeJSON([]byte(v.(types.String)))
					if err != nil {
						return types.NewErr("json.decode: %v", err)
					}
					return types.DefaultTypeAdapter.NativeToValue(out)
				}))),
		// replace() and join() can build a string far larger than what
		// they read ('aaa'.replace('a', s) is three times s; CEL charges
		// the result's size after building it): these bindings refuse
		// a result over MaxResultBytes before allocating it.
		cel.Function("replace",
			cel.MemberOverload("string_replace_string_string", []*cel.Type{cel.StringType, cel.StringType, cel.StringType}, cel.StringType,
				cel.FunctionBinding(func(args ...ref.Val) ref.Val {
					return boundedReplace(args[0], args[1], args[2], types.Int(-1))
				})),
			cel.MemberOverload("string_replace_string_string_int", []*cel.Type{cel.StringType, cel.StringType, cel.StringType, cel.IntType}, cel.StringType,
				cel.FunctionBinding(func(args ...ref.Val) ref.Val {
					return boundedReplace(args[0], args[1], args[2], args[3])
				}))),
		cel.Function("join",
			cel.MemberOverload("list_join", []*cel.Type{cel.ListType(cel.StringType)}, cel.StringType,
				cel.UnaryBinding(func(list ref.Val) ref.Val { return boundedJoin(list, types.String("")) })),
			cel.MemberOverload("list_join_string", []*cel.Type{cel.ListType(cel.StringType), cel.StringType}, cel.StringType,
				cel.BinaryBinding(boundedJoin))),
		cel.Function("now", cel.Overload("now", nil, cel.TimestampType, cel.LateFunctionBinding())),
		cel.Function("uuid", cel.Overload("uuid", nil, cel.StringType, cel.LateFunctionBinding())),
		cel.CostModel(
			scanCost("base64_encode_bytes"),
			scanCost("base64_encode_string"),
			scanCost("base64_decode_string"),
			sizedCost("json_encode_dyn", func(_ []ref.Val, result ref.Val) int { return textLen(result) }),
			sizedCost("json_decode_string", func(args []ref.Val, _ ref.Val) int { return textLen(args[0]) }),
		),
	)
})

// tooLong is the error of a function whose result would be over
// MaxResultBytes.
func tooLong(fn string, n int64) ref.Val {
	return types.WrapErr(fmt.Errorf("%w: %s would build a string of %d bytes (limit expression_result: %d)", ErrResultLimit, fn, n, MaxResultBytes))
}

// boundedReplace is the strings extension's replace, refusing a result over
// MaxResultBytes before it is built.
func boundedReplace(str, old, repl, limit ref.Val) ref.Val {
	s, ok1 := str.(types.String)
	o, ok2 := old.(types.String)
	r, ok3 := repl.(types.String)
	n, ok4 := limit.(types.Int)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return types.NoSuchOverloadErr()
	}
	count := int64(strings.Count(string(s), string(o)))
	if n >= 0 && int64(n) < count {
		count = int64(n)
	}
	if size := int64(len(s)) + count*(int64(len(r))-int64(len(o))); size > MaxResultBytes {
		return tooLong("replace", size)
	}
	return types.String(strings.Replace(string(s), string(o), string(r), int(max(n, -1))))
}

// boundedJoin is the strings extension's join, refusing a result over
// MaxResultBytes before it is built.
func boundedJoin(list, sep ref.Val) ref.Val {
	l, ok1 := list.(traits.Lister)
	d, ok2 := sep.(types.String)
	if !ok1 || !ok2 {
		return types.NoSuchOverloadErr()
	}
	n, ok := l.Size().(types.Int)
	if !ok {
		return types.NoSuchOverloadErr()
	}
	parts := make([]string, 0, int(n))
	size := int64(0)
	for i := types.Int(0); i < n; i++ {
		e, ok := l.Get(i).(types.String)
		if !ok {
			return types.NewErr("join: invalid input: %v", l.Get(i))
		}
		size += int64(len(e))
		if i > 0 {
			size += int64(len(d))
		}
		if size > MaxResultBytes {
			return tooLong("join", size)
		}
		parts = append(parts, string(e))
	}
	return types.String(strings.Join(parts, string(d)))
}

// scanCost charges a function that reads its string or bytes argument
// once, as CEL charges string scans: one unit per ten characters.
func scanCost(overload string) cost.OverloadModel {
	return cost.Overload(overload,
		cost.EvalCost(cost.Sum(cost.Const(cost.CallCost), cost.StringScan(cost.Length(cost.Arg(0))))))
}

// sizedCost charges a function one unit per ten characters of the text it
// reads or writes, as size measures it.
func sizedCost(overload string, size func(args []ref.Val, result ref.Val) int) cost.OverloadModel {
	return cost.Overload(overload, cost.ManualCost(
		func(cost.Estimator, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
			return cost.NewCallEstimate(cost.RangedCostEstimate(cost.CallCost, math.MaxUint64), nil)
		},
		func(args []ref.Val, result ref.Val) *uint64 {
			c := cost.CallCost + uint64(size(args, result))/10
			return &c
		}))
}

// textLen is the length of a string or bytes value, else 0.
func textLen(v ref.Val) int {
	switch x := v.(type) {
	case types.String:
		return len(x)
	case types.Bytes:
		return len(x)
	}
	return 0
}

// lateFunctions binds now() and uuid() for one evaluation: now() is read
// once, on first use, so it is the same instant throughout the evaluation.
func lateFunctions(clock func() time.Time) map[string]cel.LateBoundFunction {
	var now time.Time
	return map[string]cel.LateBoundFunction{
		"now": func(string, ...ref.Val) ref.Val {
			if now.IsZero() {
				if clock == nil {
					clock = time.Now
				}
				now = clock().UTC()
			}
			return types.Timestamp{Time: now}
		},
		"uuid": func(string, ...ref.Val) ref.Val {
			id, err := newUUID()
			if err != nil {
				return types.NewErr("uuid: %v", err)
			}
			return types.String(id)
		},
	}
}

// newUUID returns a random (version 4) UUID.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// programOptions apply to every compiled expression.
var programOptions = []cel.ProgramOption{
	cel.CostLimit(CostLimit),
	cel.MemoryLimit(MemoryLimit),
	cel.MemoryTracking(
		types.MemoryTrackerSizeCalculator(types.NewSizeCalculator(
			types.SizeCalculatorMaxDepth(maxSizedDepth),
			types.SizeCalculatorMaxTraversal(MemoryLimit+1))),
		types.MemoryTrackerSampleInterval(sampleEvery)),
	cel.InterruptCheckFrequency(interruptEvery),
}

// objectType is a CEL object type with a fixed set of typed fields whose
// values are Go maps (map[string]any) at evaluation time. It types input,
// run and error, so a misspelt field or a type mismatch fails at Parse.
type objectType struct {
	name   string
	fields map[string]*types.FieldType
	names  []string
}

func newObjectType(name string) *objectType {
	return &objectType{name: name, fields: map[string]*types.FieldType{}}
}

// add declares a field of type t.
func (o *objectType) add(variable, field string, t *cel.Type) {
	o.names = append(o.names, field)
	o.fields[field] = &types.FieldType{
		Type: t,
		IsSet: func(target any) bool {
			v, ok := fieldOf(target, field)
			return ok && v != nil
		},
		GetFrom: func(target any) (any, error) {
			v, ok := fieldOf(target, field)
			if !ok || v == nil {
				return nil, fmt.Errorf("%s.%s is not set (test it with has(%s.%s))", variable, field, variable, field)
			}
			out, err := coerce(variable+"."+field, v, t)
			if err != nil {
				return nil, err
			}
			return readNative(out), nil
		},
	}
}

// fieldOf reads a field from an object's runtime value.
func fieldOf(target any, field string) (any, bool) {
	switch m := target.(type) {
	case map[string]any:
		v, ok := m[field]
		return v, ok
	case traits.Mapper:
		v, ok := m.Find(types.String(field))
		if !ok {
			return nil, false
		}
		if v == types.NullValue {
			return nil, true
		}
		return v, true
	}
	return nil, false
}

// coerce converts a field's Go value to the field's declared CEL type where
// that loses nothing (an integral float64 to an int, a time string to a
// timestamp), so values decoded from JSON evaluate as declared.
func coerce(name string, v any, t *cel.Type) (any, error) {
	if rv, ok := v.(ref.Val); ok {
		v = rv.Value()
	}
	switch t.Kind() {
	case types.IntKind:
		switch n := v.(type) {
		case int:
			return int64(n), nil
		case int32:
			return int64(n), nil
		case int64:
			return n, nil
		case float64:
			if n == math.Trunc(n) && math.Abs(n) <= 1<<53 {
				return int64(n), nil
			}
		case json.Number:
			if i, err := n.Int64(); err == nil {
				return i, nil
			}
		}
		return nil, fmt.Errorf("%s is %s, not an integer", name, describe(v))
	case types.DoubleKind:
		switch n := v.(type) {
		case float64:
			return n, nil
		case float32:
			return float64(n), nil
		case int:
			return float64(n), nil
		case int32:
			return float64(n), nil
		case int64:
			return float64(n), nil
		case json.Number:
			if f, err := n.Float64(); err == nil {
				return f, nil
			}
		}
		return nil, fmt.Errorf("%s is %s, not a number", name, describe(v))
	case types.StringKind:
		if s, ok := v.(string); ok {
			return s, nil
		}
		return nil, fmt.Errorf("%s is %s, not a string", name, describe(v))
	case types.BoolKind:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, fmt.Errorf("%s is %s, not a boolean", name, describe(v))
	case types.TimestampKind:
		switch ts := v.(type) {
		case time.Time:
			return ts, nil
		case string:
			if parsed, err := time.Parse(time.RFC3339Nano, ts); err == nil {
				return parsed, nil
			}
		}
		return nil, fmt.Errorf("%s is %s, not an RFC 3339 timestamp", name, describe(v))
	}
	return v, nil
}

// describe names a Go value's JSON type for messages.
func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int, int32, int64, uint, uint32, uint64, float32, float64, json.Number:
		return "a number"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("a %T", v)
}

// objectProvider adds objectTypes to a CEL type provider.
type objectProvider struct {
	types.Provider
	objects map[string]*objectType
}

func (p *objectProvider) FindStructType(name string) (*types.Type, bool) {
	if _, ok := p.objects[name]; ok {
		return types.NewTypeTypeWithParam(types.NewObjectType(name)), true
	}
	return p.Provider.FindStructType(name)
}

func (p *objectProvider) FindStructFieldNames(name string) ([]string, bool) {
	if o, ok := p.objects[name]; ok {
		return slices.Clone(o.names), true
	}
	return p.Provider.FindStructFieldNames(name)
}

func (p *objectProvider) FindStructFieldType(name, field string) (*types.FieldType, bool) {
	if o, ok := p.objects[name]; ok {
		ft, ok := o.fields[field]
		return ft, ok
	}
	return p.Provider.FindStructFieldType(name, field)
}

func (p *objectProvider) NewValue(name string, fields map[string]ref.Val) ref.Val {
	if _, ok := p.objects[name]; ok {
		return types.NewErr("%s values cannot be built in an expression", name)
	}
	return p.Provider.NewValue(name, fields)
}

// celType is the CEL type of an input type.
func celType(inputType string) *cel.Type {
	switch inputType {
	case TypeString:
		return cel.StringType
	case TypeNumber:
		return cel.DoubleType
	case TypeInteger:
		return cel.IntType
	case TypeBoolean:
		return cel.BoolType
	case TypeObject:
		return cel.MapType(cel.StringType, cel.DynType)
	case TypeArray:
		return cel.ListType(cel.DynType)
	}
	return cel.DynType
}

// loopVar is a foreach loop variable in scope.
type loopVar struct {
	name string
	typ  *cel.Type
}

// envSet holds one flow's CEL environments: the main one and its variants
// for on_error and for foreach bodies, built on demand.
type envSet struct {
	main, onError *cel.Env
	// inputFields names the declared inputs; nil when input is untyped.
	inputFields []string
	cache       map[string]*cel.Env
}

// newEnvSet builds the environments for a flow. With typed set, input is an
// object with one field per declared input; otherwise input is a map of
// anything (a flow without an input section accepts any input).
func newEnvSet(inputs []Input, typed bool) (*envSet, error) {
	base, err := baseEnv()
	if err != nil {
		return nil, fmt.Errorf("flow: build expression environment: %w", err)
	}
	objects := map[string]*objectType{}
	run := newObjectType(runTypeName)
	run.add("run", "id", cel.StringType)
	run.add("run", "flow", cel.StringType)
	run.add("run", "version", cel.IntType)
	run.add("run", "started_at", cel.TimestampType)
	objects[runTypeName] = run
	failure := newObjectType(errorTypeName)
	failure.add("error", "step", cel.StringType)
	failure.add("error", "code", cel.StringType)
	failure.add("error", "message", cel.StringType)
	failure.add("error", "status", cel.IntType)
	objects[errorTypeName] = failure

	set := &envSet{cache: map[string]*cel.Env{}}
	inputType := cel.MapType(cel.StringType, cel.DynType)
	if typed {
		in := newObjectType(inputTypeName)
		for _, i := range inputs {
			in.add("input", i.Name, celType(i.Type))
		}
		objects[inputTypeName] = in
		inputType = cel.ObjectType(inputTypeName)
		set.inputFields = slices.Clone(in.names)
		slices.Sort(set.inputFields)
	}
	provider := &objectProvider{Provider: base.CELTypeProvider(), objects: objects}
	set.main, err = base.Extend(
		cel.CustomTypeProvider(provider),
		cel.Variable("input", inputType),
		cel.Variable("run", cel.ObjectType(runTypeName)),
	)
	if err != nil {
		return nil, fmt.Errorf("flow: build expression environment: %w", err)
	}
	set.onError, err = set.main.Extend(cel.Variable("error", cel.ObjectType(errorTypeName)))
	if err != nil {
		return nil, fmt.Errorf("flow: build expression environment: %w", err)
	}
	return set, nil
}

// env returns the environment for expressions inside on_error (or not)
// and inside the given foreach loops (outermost first; an inner variable
// hides an outer one of the same name).
func (s *envSet) env(onError bool, vars []loopVar) (*cel.Env, error) {
	base := s.main
	if onError {
		base = s.onError
	}
	if len(vars) == 0 {
		return base, nil
	}
	declared := map[string]*cel.Type{}
	var names []string
	for _, v := range vars {
		if _, ok := declared[v.name]; !ok {
			names = append(names, v.name)
		}
		declared[v.name] = v.typ
	}
	var key strings.Builder
	fmt.Fprintf(&key, "%t", onError)
	opts := []cel.EnvOption{cel.Variable("index", cel.IntType)}
	for _, n := range names {
		fmt.Fprintf(&key, "|%s:%s", n, declared[n])
		opts = append(opts, cel.Variable(n, declared[n]))
	}
	if env, ok := s.cache[key.String()]; ok {
		return env, nil
	}
	env, err := base.Extend(opts...)
	if err != nil {
		return nil, fmt.Errorf("flow: build expression environment: %w", err)
	}
	s.cache[key.String()] = env
	return env, nil
}
