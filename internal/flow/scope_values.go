package flow

import (
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// The memory limit counts what an expression builds. CEL's memory tracker
// also sizes every value an expression reads (an attribute such as
// steps.each.results), and its size calculator gives up on a value deeper
// than a few levels or larger than 10,000 elements by counting it as
// MaxUint32 elements: reading a foreach's results, whose items hold call
// results (status, headers, body, tls evidence), ran over the memory limit
// with a single item. Values read from the scope are wrapped in readMap and
// readList: they behave as CEL's own maps and lists, and tell the tracker
// they cost one element, since the expression did not build them and they
// are already bounded (run input, step outputs and the run's state all have
// limits). Anything the expression builds from them (a string, a list made
// by map()) is counted as before.

// readValue wraps a CEL map or list read from the scope; other values are
// returned as they are.
func readValue(v ref.Val) ref.Val {
	switch x := v.(type) {
	case readMap, readList:
		return v
	case traits.Mapper:
		return readMap{x}
	case traits.Lister:
		return readList{x}
	}
	return v
}

// readNative converts a Go value of the scope (a map[string]any, a []any or
// a scalar) to a CEL value, wrapping maps and lists.
func readNative(v any) any {
	switch v.(type) {
	case map[string]any, []any:
		return readValue(types.DefaultTypeAdapter.NativeToValue(v))
	case ref.Val:
		return readValue(v.(ref.Val))
	}
	return v
}

// readMap is a map read from the scope.
type readMap struct{ traits.Mapper }

// Get returns the value of key, wrapped.
func (m readMap) Get(key ref.Val) ref.Val { return readValue(m.Mapper.Get(key)) }

// Find returns the value of key, wrapped, and whether it is present.
func (m readMap) Find(key ref.Val) (ref.Val, bool) {
	v, ok := m.Mapper.Find(key)
	if ok {
		v = readValue(v)
	}
	return v, ok
}

// AggregateSize counts the map as one element: the expression did not
// build it.
func (readMap) AggregateSize(types.AggregateSizer) uint32 { return 1 }

// IsZeroValue reports whether the map is empty.
func (m readMap) IsZeroValue() bool { return m.Size() == types.IntZero }

// readList is a list read from the scope.
type readList struct{ traits.Lister }

// Get returns the element at index, wrapped.
func (l readList) Get(index ref.Val) ref.Val { return readValue(l.Lister.Get(index)) }

// Iterator iterates over the elements, wrapped.
func (l readList) Iterator() traits.Iterator { return readIterator{l.Lister.Iterator()} }

// Add concatenates other; the result reads its elements wrapped (the other
// list's elements were counted when the expression built them).
func (l readList) Add(other ref.Val) ref.Val { return readValue(l.Lister.Add(other)) }

// AggregateSize counts the list as one element: the expression did not
// build it.
func (readList) AggregateSize(types.AggregateSizer) uint32 { return 1 }

// IsZeroValue reports whether the list is empty.
func (l readList) IsZeroValue() bool { return l.Size() == types.IntZero }

// readIterator iterates over a read list, wrapping each element.
type readIterator struct{ traits.Iterator }

// Next returns the next element, wrapped.
func (it readIterator) Next() ref.Val { return readValue(it.Iterator.Next()) }
