package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/apiclient"
)

// maxInputFile is the largest certificate, key, bundle or password file the
// trust store commands read (1 MiB): far more than any real one.
const maxInputFile = 700 << 10

// flagError is a problem with a flag, found before anything is sent.
func flagError(flag, msg, hint string) error {
	text := flag + ": " + msg
	if hint != "" {
		text += "\nHint: " + hint
	}
	return &exitError{code: 1, msg: text}
}

// readInputFile reads the file named by flag, refusing one over
// maxInputFile.
func readInputFile(flag, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, flagError(flag, err.Error(), "")
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxInputFile+1))
	if err != nil {
		return nil, flagError(flag, err.Error(), "")
	}
	if len(data) > maxInputFile {
		return nil, flagError(flag, fmt.Sprintf("%s is larger than 700 KiB (the API takes at most 1 MiB of JSON, base64 included)", path),
			"give the certificate, key or bundle file itself; split a very large CA bundle into several CAs")
	}
	if len(data) == 0 {
		return nil, flagError(flag, fmt.Sprintf("%s is empty", path), "check the path")
	}
	return data, nil
}

// readPasswordFile reads a password from the file named by flag, without
// its trailing newline. An empty flag means no password.
func readPasswordFile(flag, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", flagError(flag, err.Error(), "")
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxInputFile+1))
	if err != nil {
		return "", flagError(flag, err.Error(), "")
	}
	if len(data) > maxInputFile {
		return "", flagError(flag, fmt.Sprintf("%s is larger than 700 KiB (the API takes at most 1 MiB of JSON, base64 included)", path), "the file should hold the password alone")
	}
	pw := strings.TrimSuffix(string(data), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	clear(data)
	return pw, nil
}

// readOptionalFile reads the file named by flag when path is set.
func readOptionalFile(flag, path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	return readInputFile(flag, path)
}

// materialFlags are the flags that give an identity's certificate and key:
// --cert/--key[/--key-password-file][/--chain], or --pkcs12[/--password-file].
type materialFlags struct {
	cert, key, keyPasswordFile, chain string
	pkcs12, passwordFile              string
	allowExpired                      bool
}

func (m *materialFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&m.cert, "cert", "", "certificate file (PEM or DER); may carry its chain after it")
	f.StringVar(&m.key, "key", "", "private key file (PEM or DER: PKCS#8, encrypted PKCS#8, PKCS#1 or SEC 1)")
	f.StringVar(&m.keyPasswordFile, "key-password-file", "", "file holding the password of an encrypted --key")
	f.StringVar(&m.chain, "chain", "", "intermediate CA certificates (PEM), issuer first")
	f.StringVar(&m.pkcs12, "pkcs12", "", "PKCS#12 (.p12/.pfx) file holding the certificate, key and chain, instead of --cert/--key")
	f.StringVar(&m.passwordFile, "password-file", "", "file holding the --pkcs12 file's password")
	f.BoolVar(&m.allowExpired, "allow-expired", false, "accept a certificate outside its validity period")
}

// given returns the material flags set on the command line.
func (m *materialFlags) given() []string {
	var out []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"--cert", m.cert != ""}, {"--key", m.key != ""}, {"--key-password-file", m.keyPasswordFile != ""}, {"--chain", m.chain != ""},
		{"--pkcs12", m.pkcs12 != ""}, {"--password-file", m.passwordFile != ""}, {"--allow-expired", m.allowExpired}} {
		if f.set {
			out = append(out, f.name)
		}
	}
	return out
}

// check refuses combinations that cannot be right.
func (m *materialFlags) check() error {
	switch {
	case m.pkcs12 != "" && (m.cert != "" || m.key != ""):
		flag := "--cert"
		if m.cert == "" {
			flag = "--key"
		}
		return flagError("--pkcs12 and "+flag, "give either a PKCS#12 file or a certificate and key, not both",
			"a PKCS#12 file already holds the certificate and key: drop "+flag+", or drop --pkcs12")
	case m.pkcs12 != "" && m.keyPasswordFile != "":
		return flagError("--key-password-file", "is for an encrypted --key, not --pkcs12", "give the PKCS#12 file's password with --password-file")
	case m.pkcs12 == "" && m.passwordFile != "":
		return flagError("--password-file", "is the --pkcs12 file's password, and no --pkcs12 was given", "for an encrypted --key use --key-password-file")
	case m.pkcs12 != "":
		return nil
	case m.cert == "" && m.key == "":
		return flagError("--cert", "required", "give --cert FILE and --key FILE, or --pkcs12 FILE")
	case m.cert == "":
		return flagError("--cert", "required with --key", "give the certificate that belongs to the key with --cert FILE")
	case m.key == "":
		return flagError("--key", "required with --cert", "give the certificate's private key with --key FILE, or use --pkcs12")
	}
	return nil
}

// read checks the flags and reads the files they name.
func (m *materialFlags) read() (apiclient.Material, error) {
	if err := m.check(); err != nil {
		return apiclient.Material{}, err
	}
	out := apiclient.Material{AllowExpired: m.allowExpired}
	var err error
	if m.pkcs12 != "" {
		if out.PKCS12, err = readInputFile("--pkcs12", m.pkcs12); err != nil {
			return out, err
		}
		if out.PKCS12Password, err = readPasswordFile("--password-file", m.passwordFile); err != nil {
			return out, err
		}
	} else {
		if out.Cert, err = readInputFile("--cert", m.cert); err != nil {
			return out, err
		}
		if out.Key, err = readInputFile("--key", m.key); err != nil {
			return out, err
		}
		if out.KeyPassword, err = readPasswordFile("--key-password-file", m.keyPasswordFile); err != nil {
			return out, err
		}
	}
	if out.Chain, err = readOptionalFile("--chain", m.chain); err != nil {
		return out, err
	}
	return out, nil
}

// wipe clears the key material read from files once it has been sent.
func wipe(m *apiclient.Material) {
	clear(m.Key)
	clear(m.PKCS12)
}

// generateFlags are the flags that describe a key for the server to
// generate and where its CSR goes.
type generateFlags struct {
	subject, keyType, csrOut string
	dns                      []string
}

func (gf *generateFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&gf.subject, "subject", "", `certificate subject, e.g. "CN=trustflow-prod,O=Example Agency"`)
	f.StringSliceVar(&gf.dns, "dns", nil, "DNS name for the CSR's subjectAltName (repeatable)")
	f.StringVar(&gf.keyType, "key-type", "", "ecdsa-p256 (default), ecdsa-p384, rsa-2048, rsa-3072, rsa-4096 or ed25519")
	f.StringVar(&gf.csrOut, "csr-out", "", "write the CSR (PEM) to this file instead of standard output")
}

func (gf *generateFlags) given() []string {
	var out []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"--subject", gf.subject != ""}, {"--dns", len(gf.dns) > 0}, {"--key-type", gf.keyType != ""}, {"--csr-out", gf.csrOut != ""}} {
		if f.set {
			out = append(out, f.name)
		}
	}
	return out
}

func (gf *generateFlags) request() apiclient.GenerateRequest {
	return apiclient.GenerateRequest{Subject: gf.subject, DNSNames: gf.dns, KeyType: gf.keyType}
}

// csrFile is the --csr-out file, created before the server is asked so
// that a path that cannot be written fails first and an existing file is
// never overwritten.
type csrFile struct {
	path string
	f    *os.File
}

func createCSRFile(path string) (*csrFile, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return nil, flagError("--csr-out", fmt.Sprintf("%s already exists", path), "choose another path, or remove the file first")
	} else if err != nil {
		return nil, flagError("--csr-out", err.Error(), "")
	}
	return &csrFile{path: path, f: f}, nil
}

// write stores the CSR and closes the file.
func (c *csrFile) write(csr string) error {
	_, err := io.WriteString(c.f, csr)
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("--csr-out: write %s: %w", c.path, err)
	}
	return nil
}

// discard removes the file after the server refused the request.
func (c *csrFile) discard() {
	if c == nil {
		return
	}
	c.f.Close()
	os.Remove(c.path)
}

// removed is what `remove` commands print as JSON or YAML.
type removed struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Removed bool   `json:"removed"`
}
