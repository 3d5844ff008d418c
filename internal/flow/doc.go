// Package flow owns trustflow's flow documents: it parses a flow from YAML
// or JSON with the line and column of every field, validates it against
// the flow language (docs/flows.md), compiles and type-checks its CEL
// expressions, and evaluates them for the engine under a cost limit. It
// does no I/O: no files, no database, no network.
//
// A document is parsed once, at `flow apply`, and every problem found is
// reported together, each pointing at the offending key or value:
//
//	doc, err := flow.Parse("offboard.yaml", data)
//	verr, _ := errs.As(err)
//	if errors.As(err, &verr) {
//		for _, p := range verr.Problems { ... } // offboard.yaml:12:5: steps[1].call.connector: ...
//	}
//
// At run time the engine validates the run's input with CheckInput, walks
// the steps, and evaluates their Values and conditions in a Scope.
package flow
