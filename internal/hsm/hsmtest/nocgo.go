//go:build !cgo

package hsmtest

import (
	"os"
	"testing"

	"github.com/trustflow/trustflow/internal/hsm"
)

// The PINs of every token NewToken makes.
const (
	PIN   = "1234"
	SOPIN = "5678"
)

// Require skips the test: without cgo no PKCS#11 module loads. With the CI
// environment variable set it fails instead.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal("hsmtest: built without cgo, so the PKCS#11 tests cannot run (CI is set)")
	}
	t.Skip("hsmtest: built without cgo; skipping the PKCS#11 test")
}

// Module is unreachable without cgo: Require skips first.
func Module(t testing.TB) string { Require(t); return "" }

// NewToken is unreachable without cgo: Require skips first.
func NewToken(t testing.TB, label string) hsm.URI { Require(t); return hsm.URI{} }

// Main runs the tests.
func Main(m *testing.M) int { return m.Run() }
