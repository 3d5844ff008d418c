package flow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// maxConvertedElements bounds the values one result converts to, so that
// a result sharing sub-lists many times over cannot expand without end.
const maxConvertedElements = MemoryLimit

// errTooLarge is the error of a result over maxConvertedElements.
var errTooLarge = fmt.Errorf("the result has more than %d elements", maxConvertedElements)

// errTooManyBytes is the error of a result over MaxResultBytes.
var errTooManyBytes = fmt.Errorf("%w: the result is larger than %d bytes (limit expression_result: %d)", ErrResultLimit, MaxResultBytes, MaxResultBytes)

// budget is what a conversion may still produce: elements, and bytes of
// text (strings and map keys, plus one per element).
type budget struct{ elements, bytes int }

// spend takes one element and n bytes from the budget.
func (b *budget) spend(n int) error {
	b.elements--
	b.bytes -= n + 1
	switch {
	case b.elements < 0:
		return errTooLarge
	case b.bytes < 0:
		return errTooManyBytes
	}
	return nil
}

// toJSONLike converts a CEL result to a plain Go value: nil, bool, int64,
// float64, string, []any or map[string]any. Timestamps become RFC 3339
// strings (UTC), durations CEL's "1.5s" form, bytes UTF-8 strings, map keys
// their Text, optional values their content or nil. Non-finite numbers are
// errors: JSON cannot hold them. A result of more than MaxResultBytes (its
// text, roughly its JSON size) is an error wrapping ErrResultLimit: values
// an expression reads are not counted by the memory limit, and a result
// may repeat one many times.
func toJSONLike(v ref.Val) (any, error) {
	b := budget{elements: maxConvertedElements, bytes: MaxResultBytes}
	return convert(v, &b)
}

func convert(v ref.Val, b *budget) (any, error) {
	size := 0
	switch x := v.(type) {
	case types.String:
		size = len(x)
	case types.Bytes:
		size = len(x)
	}
	if err := b.spend(size); err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(x), nil
	case types.Int:
		return int64(x), nil
	case types.Uint:
		if uint64(x) > math.MaxInt64 {
			return nil, fmt.Errorf("unsigned integer %d is too large", uint64(x))
		}
		return int64(x), nil
	case types.Double:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, fmt.Errorf("the result %v is not a finite number", float64(x))
		}
		return float64(x), nil
	case types.String:
		return string(x), nil
	case types.Bytes:
		if !utf8.Valid(x) {
			return nil, errors.New("bytes are not valid UTF-8 text; encode them with base64.encode()")
		}
		return string(x), nil
	case types.Timestamp:
		return x.Time.UTC().Format(time.RFC3339Nano), nil
	case types.Duration:
		return string(x.ConvertToType(types.StringType).(types.String)), nil
	case *types.Optional:
		if !x.HasValue() {
			return nil, nil
		}
		return convert(x.GetValue(), b)
	case *types.Err:
		return nil, x
	case *types.Unknown:
		return nil, errors.New("the expression depends on a value that is not known")
	case ref.Type:
		return x.TypeName(), nil
	}
	switch x := v.(type) {
	case traits.Mapper:
		out := map[string]any{}
		it := x.Iterator()
		for it.HasNext() == types.True {
			k := it.Next()
			kv, err := convert(k, b)
			if err != nil {
				return nil, err
			}
			key := Text(kv)
			if _, dup := out[key]; dup {
				return nil, fmt.Errorf("map keys collide as text: %q", key)
			}
			ev, err := convert(x.Get(k), b)
			if err != nil {
				return nil, err
			}
			out[key] = ev
		}
		return out, nil
	case traits.Lister:
		n, ok := x.Size().(types.Int)
		if !ok {
			return nil, errors.New("list of unknown size")
		}
		out := make([]any, int(n))
		for i := range out {
			ev, err := convert(x.Get(types.Int(i)), b)
			if err != nil {
				return nil, err
			}
			out[i] = ev
		}
		return out, nil
	}
	native, err := v.ConvertToNative(reflect.TypeFor[any]())
	if err != nil {
		return nil, fmt.Errorf("a %s value cannot be used as data", v.Type().TypeName())
	}
	return normalize(native)
}

// normalize converts a Go value to the JSON-like form: integers to int64,
// floats to float64, time.Time to RFC 3339, maps with string keys.
func normalize(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, int64, float64, string:
		return x, nil
	case int:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case float32:
		return float64(x), nil
	case json.Number:
		return numberValue(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	case ref.Val:
		return toJSONLike(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			n, err := normalize(e)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			n, err := normalize(e)
			if err != nil {
				return nil, err
			}
			out[k] = n
		}
		return out, nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if rv.Uint() > math.MaxInt64 {
			return nil, fmt.Errorf("unsigned integer %d is too large", rv.Uint())
		}
		return int64(rv.Uint()), nil
	case reflect.String:
		return rv.String(), nil
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			n, err := normalize(rv.Index(i).Interface())
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return nil, fmt.Errorf("a map with %s keys cannot be used as data", rv.Type().Key())
		}
		out := make(map[string]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			n, err := normalize(it.Value().Interface())
			if err != nil {
				return nil, err
			}
			out[it.Key().String()] = n
		}
		return out, nil
	}
	return nil, fmt.Errorf("a %T value cannot be used as data", v)
}

// numberValue converts a JSON number: an integer that fits in 64 bits
// becomes int64, anything else float64.
func numberValue(n json.Number) (any, error) {
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return i, nil
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return nil, fmt.Errorf("number %s is out of range", n)
	}
	return f, nil
}

// DecodeJSON decodes one JSON value into the JSON-like form expressions
// use: a number written as an integer that fits in 64 bits becomes int64,
// any other number float64.
func DecodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return normalize(v)
}

// Text is how a value is written into an interpolated string: strings as
// they are, numbers and booleans in canonical (JSON) form, null as the
// empty string, lists and maps as compact JSON (keys sorted).
func Text(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case int:
		return strconv.Itoa(x)
	case float64:
		return formatFloat(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return string(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}

// formatFloat writes a float as JSON does; non-finite values as NaN,
// Infinity and -Infinity.
func formatFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	b, err := json.Marshal(f)
	if err != nil {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return string(b)
}
