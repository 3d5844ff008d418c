//go:build race

package connector_test

// raceEnabled reports whether the race detector is on: it multiplies the
// memory a program uses, so the memory tests do not run under it.
const raceEnabled = true
