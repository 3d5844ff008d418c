//go:build cgo

// Package hsmtest gives tests real PKCS#11 tokens from SoftHSM2 (Debian
// package softhsm2), and an `openssl s_server` that requires a client
// certificate. It is imported only by tests.
//
// SoftHSM2 reads SOFTHSM2_CONF and scans its token directory once, when the
// module is initialised in the process, and a module is initialised once
// per process. So hsmtest points SOFTHSM2_CONF at one token directory per
// test binary (created on first use, removed by [Main]), keeps the module
// initialised for the life of the process through crypto11 (a context on
// an "anchor" token made with softhsm2-util before the first load), and
// initialises every test's token in-process (C_InitToken on the free
// slot), where the loaded module sees it at once.
package hsmtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/trustflow/trustflow/internal/hsm"
)

// The PINs of every token NewToken makes.
const (
	PIN   = "1234"
	SOPIN = "5678"
)

// moduleCandidates are where distributions install SoftHSM2's module;
// SOFTHSM2_MODULE overrides them.
var moduleCandidates = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
}

var (
	once     sync.Once
	dir      string
	module   string
	setupErr error
	counter  atomic.Int64

	// anchor keeps the module initialised; raw is a second handle on the
	// same loaded module, for C_InitToken and for tests' direct calls.
	anchor *crypto11.Context
	raw    *pkcs11.Ctx
	initMu sync.Mutex
)

func setup() {
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		setupErr = errors.New("softhsm2-util is not installed (Debian: apt-get install softhsm2)")
		return
	}
	module = os.Getenv("SOFTHSM2_MODULE")
	for _, c := range moduleCandidates {
		if module != "" {
			break
		}
		if _, err := os.Stat(c); err == nil {
			module = c
		}
	}
	if module == "" {
		setupErr = errors.New("libsofthsm2.so not found; set SOFTHSM2_MODULE to its path")
		return
	}
	d, err := os.MkdirTemp("", "trustflow-softhsm-")
	if err != nil {
		setupErr = err
		return
	}
	dir = d
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		setupErr = err
		return
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		setupErr = err
		return
	}
	// Process-wide on purpose: the module reads it once per process.
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		setupErr = err
		return
	}
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "hsmtest-anchor", "--pin", PIN, "--so-pin", SOPIN).CombinedOutput()
	if err != nil {
		setupErr = fmt.Errorf("softhsm2-util --init-token: %v: %s", err, out)
		return
	}
	anchor, err = crypto11.Configure(&crypto11.Config{Path: module, TokenLabel: "hsmtest-anchor", Pin: PIN})
	if err != nil {
		setupErr = fmt.Errorf("open the anchor token: %w", err)
		return
	}
	raw = pkcs11.New(module)
	if raw == nil {
		setupErr = errors.New("load " + module + " a second time failed")
		return
	}
	if err := raw.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		setupErr = fmt.Errorf("C_Initialize: %w", err)
	}
}

// Require skips the test when SoftHSM2 is missing, or fails it when the CI
// environment variable is set (CI must test the HSM path).
func Require(t testing.TB) {
	t.Helper()
	once.Do(setup)
	if setupErr == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("hsmtest: %v (CI is set, so the PKCS#11 tests must run)", setupErr)
	}
	t.Skipf("hsmtest: %v; skipping the PKCS#11 test", setupErr)
}

// Module returns the path of SoftHSM2's PKCS#11 module.
func Module(t testing.TB) string {
	t.Helper()
	Require(t)
	return module
}

// NewToken initialises a new SoftHSM2 token whose label starts with label
// (a counter keeps labels distinct), user PIN [PIN] and SO PIN [SOPIN],
// and returns its URI with the PIN in a file (pin-source=file:...). The
// URI names no object.
func NewToken(t testing.TB, label string) hsm.URI {
	t.Helper()
	Require(t)
	label = fmt.Sprintf("%s-%d", label, counter.Add(1))
	if len(label) > 32 {
		t.Fatalf("hsmtest: token label %q is longer than 32 bytes", label)
	}
	if err := initToken(label); err != nil {
		t.Fatalf("hsmtest: init token %s: %v", label, err)
	}
	pinFile := filepath.Join(dir, label+".pin")
	if err := os.WriteFile(pinFile, []byte(PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return hsm.URI{Token: label, ModulePath: module, PinSource: "file:" + pinFile}
}

func initToken(label string) error {
	initMu.Lock()
	defer initMu.Unlock()
	slots, err := raw.GetSlotList(true)
	if err != nil {
		return err
	}
	free, found := uint(0), false
	for _, s := range slots {
		ti, err := raw.GetTokenInfo(s)
		if err != nil {
			return err
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free, found = s, true
			break
		}
	}
	if !found {
		return errors.New("SoftHSM2 offers no free slot")
	}
	if err := raw.InitToken(free, SOPIN, label); err != nil {
		return fmt.Errorf("C_InitToken: %w", err)
	}
	// C_InitToken may move the token to another slot id: find it by label.
	slot, err := slotOf(label)
	if err != nil {
		return err
	}
	sh, err := raw.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("C_OpenSession: %w", err)
	}
	defer raw.CloseSession(sh)
	if err := raw.Login(sh, pkcs11.CKU_SO, SOPIN); err != nil {
		return fmt.Errorf("C_Login SO: %w", err)
	}
	defer raw.Logout(sh)
	if err := raw.InitPIN(sh, PIN); err != nil {
		return fmt.Errorf("C_InitPIN: %w", err)
	}
	return nil
}

func slotOf(label string) (uint, error) {
	slots, err := raw.GetSlotList(true)
	if err != nil {
		return 0, err
	}
	for _, s := range slots {
		ti, err := raw.GetTokenInfo(s)
		if err != nil {
			return 0, err
		}
		if ti.Label == label {
			return s, nil
		}
	}
	return 0, fmt.Errorf("no token labelled %q", label)
}

// Session opens a session on u's token straight through PKCS#11 (not
// through package hsm), logged in as the user, for tests that check what
// the token lets an application do. It is closed when the test ends.
func Session(t testing.TB, u hsm.URI) (*pkcs11.Ctx, pkcs11.SessionHandle) {
	t.Helper()
	Require(t)
	slot, err := slotOf(u.Token)
	if err != nil {
		t.Fatalf("hsmtest: %v", err)
	}
	sh, err := raw.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatalf("hsmtest: C_OpenSession: %v", err)
	}
	t.Cleanup(func() { raw.CloseSession(sh) })
	// Login state is per application: package hsm may be logged in already.
	if err := raw.Login(sh, pkcs11.CKU_USER, PIN); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		t.Fatalf("hsmtest: C_Login: %v", err)
	}
	return raw, sh
}

// Main runs the tests, then removes the token directory. Use it as
// `func TestMain(m *testing.M) { os.Exit(hsmtest.Main(m)) }`.
func Main(m *testing.M) int {
	code := m.Run()
	if anchor != nil {
		anchor.Close()
	}
	if dir != "" {
		os.RemoveAll(dir)
	}
	return code
}
