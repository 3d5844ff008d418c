package cli_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/app"
	"github.com/trustflow/trustflow/internal/cli"
	"github.com/trustflow/trustflow/internal/config"
)

// server is a trustflow server started in-process for a CLI test, with its
// data dir (where the CLI finds the admin token).
type server struct {
	app *app.App
	url string
	dir string
	// secrets must never appear in any output: key material and passwords.
	secrets []string
}

func startServer(t *testing.T) *server {
	t.Helper()
	dir := t.TempDir()
	a, err := app.New(t.Context(), config.Config{DataDir: dir, Listen: "127.0.0.1:0"},
		app.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Stderr: io.Discard, KEKRefresh: 50 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, a.Start(t.Context()))
	t.Cleanup(func() { require.NoError(t, a.Stop()) })
	return &server{app: a, url: a.URL(), dir: dir}
}

// setup makes the test PKI and starts a server that must never print its
// keys.
func setup(t *testing.T) (*fixtures, *server) {
	t.Helper()
	f := newFixtures(t)
	s := startServer(t)
	s.keep(t, f)
	return f, s
}

// result is one CLI invocation's outcome.
type result struct {
	code   int
	stdout string
	stderr string
}

// run executes the CLI against s. No output of any command may hold a
// private key or a password: successful commands never print "PRIVATE
// KEY" at all, and errors only name it as a kind of PEM block.
func (s *server) run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	args = append(args, "--server", s.url, "--data-dir", s.dir)
	code := cli.Execute(t.Context(), args, strings.NewReader(""), &out, &errb, func(string) string { return "" }, cli.Build{})
	r := result{code: code, stdout: out.String(), stderr: errb.String()}
	cmdline := "trustflow " + strings.Join(args, " ")
	for _, text := range []string{r.stdout, r.stderr} {
		require.NotContains(t, text, "PRIVATE KEY-----", cmdline)
		if code == 0 {
			require.NotContains(t, text, "PRIVATE KEY", cmdline)
		}
		for _, secret := range s.secrets {
			require.NotContains(t, text, secret, cmdline)
		}
	}
	return r
}

// keep registers the private keys in the fixtures and their password as
// secrets no output may contain.
func (s *server) keep(t *testing.T, f *fixtures) {
	t.Helper()
	s.secrets = append(s.secrets, passwordText)
	for _, key := range []string{f.caKey, f.clientKey, f.clientKeyEncrypted, f.client2Key} {
		data, err := os.ReadFile(key)
		require.NoError(t, err)
		for _, line := range strings.Split(string(data), "\n") {
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
				s.secrets = append(s.secrets, line)
			}
		}
	}
}

// ok runs the CLI and requires exit 0 and nothing on stderr.
func (s *server) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := s.run(t, args...)
	require.Equal(t, 0, r.code, "trustflow %s\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.stdout, r.stderr)
	require.Empty(t, r.stderr)
	return r.stdout
}

// json runs the CLI with -o json, requires exit 0 and decodes the output
// into v.
func (s *server) json(t *testing.T, v any, args ...string) {
	t.Helper()
	decodeStrict(t, s.ok(t, append(args, "-o", "json")...), v)
}

// decodeStrict decodes text into v, which it zeroes first, refusing
// fields v does not have.
func decodeStrict(t *testing.T, text string, v any) {
	t.Helper()
	reflect.ValueOf(v).Elem().SetZero()
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(v), text)
}

// fixtures is a PKI made with the openssl command, the way an operator
// makes one: a root CA, client certificates (EKU clientAuth) with their
// keys in every form trustflow imports, and a server certificate.
type fixtures struct {
	t   *testing.T
	dir string

	caCert, caKey string
	ca2Cert       string // a second, unrelated root CA
	// Client certificates signed by the CA, and the first one's key as
	// plain and encrypted PKCS#8 and as PKCS#12 files.
	client, clientKey, clientKeyEncrypted string
	client2, client2Key                   string
	p12, p12Legacy                        string
	password, wrongPassword               string // password files
	server                                string // server certificate for api.example.org and api-2.example.org
	selfSigned                            string // a self-signed end-entity certificate (CA:FALSE)
}

// passwordText is the password in fixtures.password, without its newline.
const passwordText = "s3cret pass"

func newFixtures(t *testing.T) *fixtures {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("the openssl command is needed to make the test PKI")
	}
	f := &fixtures{t: t, dir: t.TempDir()}
	f.caCert, f.caKey = f.path("ca.pem"), f.path("ca.key")
	f.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f.caKey, "-out", f.caCert,
		"-days", "365", "-subj", "/CN=Test Root CA/O=trustflow tests",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	f.ca2Cert = f.path("ca2.pem")
	f.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f.path("ca2.key"), "-out", f.ca2Cert,
		"-days", "365", "-subj", "/CN=Other Root CA/O=trustflow tests",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	f.write("client.ext", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
	f.write("server.ext", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:api.example.org,DNS:api-2.example.org\n")

	f.client, f.clientKey = f.issue("client", "/CN=payments/O=trustflow tests", "client.ext")
	f.client2, f.client2Key = f.issue("client2", "/CN=payments 2/O=trustflow tests", "client.ext")
	f.server, _ = f.issue("server", "/CN=api.example.org", "server.ext")
	f.selfSigned = f.path("self-signed.pem")
	f.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f.path("self-signed.key"), "-out", f.selfSigned,
		"-days", "90", "-subj", "/CN=legacy.example.org", "-addext", "basicConstraints=critical,CA:FALSE", "-addext", "subjectAltName=DNS:legacy.example.org")

	f.password, f.wrongPassword = f.write("password.txt", passwordText+"\n"), f.write("wrong.txt", "not the password\n")
	f.clientKeyEncrypted = f.path("client-encrypted.key")
	f.openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", f.clientKey, "-passout", "file:"+f.password, "-out", f.clientKeyEncrypted)
	f.p12 = f.path("client.p12")
	f.openssl("pkcs12", "-export", "-in", f.client, "-inkey", f.clientKey, "-certfile", f.caCert, "-passout", "file:"+f.password,
		"-keypbe", "AES-256-CBC", "-certpbe", "AES-256-CBC", "-macalg", "sha256", "-out", f.p12)
	f.p12Legacy = f.path("client-legacy.p12")
	f.openssl("pkcs12", "-export", "-legacy", "-in", f.client, "-inkey", f.clientKey, "-certfile", f.caCert, "-passout", "file:"+f.password, "-out", f.p12Legacy)
	return f
}

func (f *fixtures) path(name string) string { return filepath.Join(f.dir, name) }

func (f *fixtures) write(name, content string) string {
	f.t.Helper()
	p := f.path(name)
	require.NoError(f.t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func (f *fixtures) openssl(args ...string) {
	f.t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = f.dir
	out, err := cmd.CombinedOutput()
	require.NoError(f.t, err, "openssl %s: %s", strings.Join(args, " "), out)
}

// issue makes a key and a certificate signed by the CA with the extensions
// in extFile; it returns the certificate and key (PKCS#8) paths.
func (f *fixtures) issue(name, subject, extFile string) (cert, key string) {
	f.t.Helper()
	key, csr := f.path(name+".key"), f.path(name+".csr")
	f.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
	f.openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr)
	return f.sign(csr, extFile), key
}

// sign has the CA sign a CSR with the extensions in extFile.
func (f *fixtures) sign(csr, extFile string) string {
	f.t.Helper()
	cert := strings.TrimSuffix(csr, filepath.Ext(csr)) + "-signed.pem"
	f.openssl("x509", "-req", "-in", csr, "-CA", f.caCert, "-CAkey", f.caKey, "-CAcreateserial", "-days", "90",
		"-extfile", f.path(extFile), "-copy_extensions", "copy", "-out", cert)
	return cert
}

// cert parses the first certificate of a PEM file.
func (f *fixtures) cert(path string) *x509.Certificate {
	f.t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(f.t, err)
	block, _ := pem.Decode(data)
	require.NotNil(f.t, block, path)
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(f.t, err)
	return c
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func serial(c *x509.Certificate) string { return c.SerialNumber.Text(16) }
