package pki_test

import (
	"compress/gzip"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trustflow/trustflow/internal/errs"

	"github.com/trustflow/trustflow/internal/pki"
)

// The x509-limbo suite (C2SP/x509-limbo) drives every test case through
// pki.Verify and compares the outcome with the expected one, and with what
// plain crypto/x509 (driven the way limbo's own Go harness drives it) gets
// right: pki.Verify must be conformant wherever crypto/x509 is.
//
//	TRUSTFLOW_X509_LIMBO=/path/to/limbo.json.gz go test -run TestX509Limbo -v ./internal/pki
//
// When a baseline results file of limbo's Go harness
// (go-crypto-x509-*-results.json[.gz]) sits next to the suite, or
// TRUSTFLOW_X509_LIMBO_BASELINE names one, every case it marks conformant
// must be conformant for pki.Verify too.

type limboSuite struct {
	Version   int             `json:"version"`
	Testcases []limboTestcase `json:"testcases"`
}

type limboPeerName struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
}

type limboTestcase struct {
	ID                     string          `json:"id"`
	Features               []string        `json:"features"`
	ValidationKind         string          `json:"validation_kind"`
	TrustedCerts           []string        `json:"trusted_certs"`
	UntrustedIntermediates []string        `json:"untrusted_intermediates"`
	PeerCertificate        string          `json:"peer_certificate"`
	ValidationTime         *string         `json:"validation_time"`
	SignatureAlgorithms    []string        `json:"signature_algorithms"`
	KeyUsage               []string        `json:"key_usage"`
	ExtendedKeyUsage       []string        `json:"extended_key_usage"`
	ExpectedResult         string          `json:"expected_result"`
	ExpectedPeerName       *limboPeerName  `json:"expected_peer_name"`
	ExpectedPeerNames      []limboPeerName `json:"expected_peer_names"`
	MaxChainDepth          *int            `json:"max_chain_depth"`
	CRLs                   []string        `json:"crls"`
}

const (
	limboSuccess = "SUCCESS"
	limboFailure = "FAILURE"
	limboSkipped = "SKIPPED"
)

func readMaybeGzip(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("gunzip %s: %v", path, err)
		}
		r = zr
	}
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return data
}

// limboBaseline reads a results file of limbo's Go harness: id -> actual result.
func limboBaseline(t *testing.T, suitePath string) (map[string]string, string) {
	t.Helper()
	path := os.Getenv("TRUSTFLOW_X509_LIMBO_BASELINE")
	if path == "" {
		matches, _ := filepath.Glob(filepath.Join(filepath.Dir(suitePath), "go-crypto-x509-*-results.json*"))
		if len(matches) == 0 {
			return nil, ""
		}
		slices.Sort(matches)
		path = matches[len(matches)-1]
	}
	var results struct {
		Harness string `json:"harness"`
		Results []struct {
			ID     string `json:"id"`
			Actual string `json:"actual_result"`
		} `json:"results"`
	}
	if err := json.Unmarshal(readMaybeGzip(t, path), &results); err != nil {
		t.Fatalf("decode baseline %s: %v", path, err)
	}
	m := make(map[string]string, len(results.Results))
	for _, r := range results.Results {
		m[r.ID] = r.Actual
	}
	return m, fmt.Sprintf("%s (%s)", filepath.Base(path), results.Harness)
}

func TestX509Limbo(t *testing.T) {
	path := os.Getenv("TRUSTFLOW_X509_LIMBO")
	if path == "" {
		t.Skip("TRUSTFLOW_X509_LIMBO is not set: point it at x509-limbo's limbo.json or limbo.json.gz to run the path-validation conformance suite")
	}
	var suite limboSuite
	if err := json.Unmarshal(readMaybeGzip(t, path), &suite); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	if len(suite.Testcases) == 0 {
		t.Fatalf("%s holds no test cases", path)
	}
	baseline, baselineName := limboBaseline(t, path)

	var (
		conformant, nonConformant, skipped             int
		liveBaselineConformant, fileBaselineConformant int
		wins, losses                                   []string
		start                                          = time.Now()
	)
	for _, tc := range suite.Testcases {
		got, err := runLimboCase(tc)
		var pe *errs.Error
		if got == limboFailure && !errors.As(err, &pe) {
			t.Errorf("%s: failure is a %T, not a *errs.Error: %v", tc.ID, err, err)
		}
		goLive, _ := runLimboCaseCryptoX509(tc)

		ours := got == tc.ExpectedResult
		liveOK := goLive == tc.ExpectedResult
		fileOK := baseline != nil && baseline[tc.ID] == tc.ExpectedResult
		if liveOK {
			liveBaselineConformant++
		}
		if fileOK {
			fileBaselineConformant++
		}
		switch {
		case got == limboSkipped:
			skipped++
		case ours:
			conformant++
			if !liveOK && !fileOK {
				wins = append(wins, tc.ID)
			}
		default:
			nonConformant++
		}
		if !ours && (liveOK || fileOK) {
			losses = append(losses, tc.ID)
			t.Errorf("%s: crypto/x509 gets %s right but pki.Verify returned %s (err: %v)", tc.ID, tc.ExpectedResult, got, err)
		}
	}
	t.Logf("x509-limbo: %d cases in %s", len(suite.Testcases), time.Since(start).Round(time.Millisecond))
	t.Logf("pki.Verify: %d conformant, %d non-conformant, %d skipped", conformant, nonConformant, skipped)
	t.Logf("crypto/x509 %s driven like limbo's Go harness: %d conformant", runtime.Version(), liveBaselineConformant)
	if baseline != nil {
		t.Logf("baseline %s: %d conformant", baselineName, fileBaselineConformant)
	}
	t.Logf("cases the crypto/x509 baseline gets right and pki.Verify gets wrong: %d", len(losses))
	t.Logf("cases pki.Verify gets right and the crypto/x509 baseline does not: %d: %s", len(wins), strings.Join(wins, ", "))
}

// runLimboCase runs one case through pki.Verify.
func runLimboCase(tc limboTestcase) (string, error) {
	if len(tc.SignatureAlgorithms) > 0 {
		return limboSkipped, errors.New("signature algorithm constraints are not supported")
	}
	for _, ku := range tc.KeyUsage {
		if ku != "digitalSignature" {
			return limboSkipped, fmt.Errorf("key usage %s checks are not supported", ku)
		}
	}
	opts := pki.VerifyOptions{Purpose: pki.PurposeServer}
	if tc.ValidationKind == "CLIENT" {
		opts.Purpose = pki.PurposeClient
	}
	switch {
	case len(tc.ExtendedKeyUsage) == 0:
	case len(tc.ExtendedKeyUsage) == 1 && tc.ExtendedKeyUsage[0] == "serverAuth":
		opts.Purpose = pki.PurposeServer
	case len(tc.ExtendedKeyUsage) == 1 && tc.ExtendedKeyUsage[0] == "clientAuth":
		opts.Purpose = pki.PurposeClient
	case slices.Contains(tc.ExtendedKeyUsage, "anyExtendedKeyUsage"):
		opts.Purpose = pki.PurposeAny
	default:
		return limboSkipped, fmt.Errorf("extended key usages %v are not supported", tc.ExtendedKeyUsage)
	}
	if n := tc.ExpectedPeerName; n != nil {
		switch n.Kind {
		case "DNS", "IP":
			opts.DNSName = n.Value
		default:
			return limboSkipped, fmt.Errorf("peer name kind %s is not supported", n.Kind)
		}
	}
	if tc.ValidationTime != nil {
		ts, err := time.Parse(time.RFC3339, *tc.ValidationTime)
		if err != nil {
			return limboSkipped, err
		}
		opts.Time = ts
	}
	if tc.MaxChainDepth != nil {
		opts.MaxChainDepth = *tc.MaxChainDepth
		if opts.MaxChainDepth == 0 {
			opts.MaxChainDepth = pki.NoIntermediates
		}
	}
	opts.Roots = parseEach(tc.TrustedCerts)
	opts.Intermediates = parseEach(tc.UntrustedIntermediates)
	for _, p := range tc.CRLs {
		crls, err := pki.ParseCRLs([]byte(p))
		if err != nil {
			return limboFailure, err
		}
		opts.CRLs = append(opts.CRLs, crls...)
	}
	peer, err := pki.ParseCertificates([]byte(tc.PeerCertificate))
	if err != nil {
		return limboFailure, err
	}
	if len(peer) != 1 {
		return limboSkipped, fmt.Errorf("peer PEM holds %d certificates", len(peer))
	}
	if _, err := pki.Verify(peer[0], opts); err != nil {
		return limboFailure, err
	}
	return limboSuccess, nil
}

// parseEach parses each PEM certificate, skipping those that do not parse,
// as x509.CertPool.AppendCertsFromPEM does in limbo's Go harness.
func parseEach(pems []string) []*x509.Certificate {
	var out []*x509.Certificate
	for _, p := range pems {
		certs, err := pki.ParseCertificates([]byte(p))
		if err == nil {
			out = append(out, certs...)
		}
	}
	return out
}

// runLimboCaseCryptoX509 runs one case through plain crypto/x509 exactly as
// limbo's Go harness (harness/gocryptox509) does, including what it skips.
func runLimboCaseCryptoX509(tc limboTestcase) (string, error) {
	if slices.Contains(tc.Features, "max-chain-depth") || tc.MaxChainDepth != nil {
		return limboSkipped, errors.New("max chain depth not supported")
	}
	if len(tc.CRLs) > 0 {
		return limboSkipped, errors.New("CRLs not supported")
	}
	if len(tc.SignatureAlgorithms) > 0 {
		return limboSkipped, errors.New("signature algorithm checks not supported")
	}
	if len(tc.KeyUsage) > 0 && !slices.Contains(tc.KeyUsage, "digitalSignature") {
		return limboSkipped, errors.New("key usage checks not supported")
	}
	if tc.ValidationKind != "SERVER" {
		return limboSkipped, errors.New("client validation not supported")
	}
	ts := time.Now()
	if tc.ValidationTime != nil {
		var err error
		if ts, err = time.Parse(time.RFC3339, *tc.ValidationTime); err != nil {
			return limboSkipped, err
		}
	}
	ekuMap := map[string]x509.ExtKeyUsage{
		"anyExtendedKeyUsage": x509.ExtKeyUsageAny,
		"clientAuth":          x509.ExtKeyUsageClientAuth,
		"codeSigning":         x509.ExtKeyUsageCodeSigning,
		"emailProtection":     x509.ExtKeyUsageEmailProtection,
		"OCSPSigning":         x509.ExtKeyUsageOCSPSigning,
		"serverAuth":          x509.ExtKeyUsageServerAuth,
		"timeStamping":        x509.ExtKeyUsageTimeStamping,
	}
	var ekus []x509.ExtKeyUsage
	for _, e := range tc.ExtendedKeyUsage {
		ekus = append(ekus, ekuMap[e])
	}
	var dnsName string
	if n := tc.ExpectedPeerName; n != nil {
		if n.Kind == "DNS" {
			dnsName = n.Value
		} else {
			dnsName = "[" + n.Value + "]"
		}
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(strings.Join(tc.TrustedCerts, "")))
	inter.AppendCertsFromPEM([]byte(strings.Join(tc.UntrustedIntermediates, "")))
	block, rest := pem.Decode([]byte(tc.PeerCertificate))
	if block == nil || block.Type != "CERTIFICATE" || len(rest) > 0 {
		return limboFailure, errors.New("unexpected peer PEM")
	}
	peer, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return limboFailure, err
	}
	if _, err := peer.Verify(x509.VerifyOptions{DNSName: dnsName, Intermediates: inter, Roots: roots, CurrentTime: ts, KeyUsages: ekus}); err != nil {
		return limboFailure, err
	}
	return limboSuccess, nil
}
