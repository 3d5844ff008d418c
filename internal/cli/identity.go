package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/apiclient"
)

func newIdentityCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "identity", Short: "Manage the client identities (certificate and sealed private key) trustflow presents to servers"}
	cmd.AddCommand(newIdentityImportCmd(g), newIdentityCreateCmd(g), newIdentityInstallCertCmd(g), newIdentityRotateCmd(g),
		newIdentityActivateCmd(g), newIdentityPruneCmd(g), newIdentityListCmd(g), newIdentityShowCmd(g), newIdentityRemoveCmd(g))
	return cmd
}

func newIdentityImportCmd(g *globals) *cobra.Command {
	var m materialFlags
	var description, keyRef string
	cmd := &cobra.Command{
		Use:   "import NAME (--cert FILE --key FILE | --pkcs12 FILE | --cert FILE --key-ref 'pkcs11:...')",
		Short: "Import an identity from a certificate and key, a PKCS#12 file, or a certificate whose key is in a PKCS#11 token; it is active at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mat, err := readMaterial(&m, keyRef)
			if err != nil {
				return err
			}
			defer wipe(&mat)
			c, err := g.client()
			if err != nil {
				return err
			}
			id, err := c.ImportIdentity(contextOf(cmd), apiclient.ImportIdentityRequest{Name: args[0], Description: description, Material: mat})
			if err != nil {
				return err
			}
			return g.render(id, func(w io.Writer) {
				fmt.Fprintf(w, "imported identity %s: version %d is active\n\n", id.Name, id.ActiveVersion)
				identityTable(w, id)
			})
		},
	}
	m.register(cmd)
	cmd.Flags().StringVar(&description, "description", "", "what the identity is for")
	cmd.Flags().StringVar(&keyRef, "key-ref", "", "instead of --key: the certificate's key in a PKCS#11 token, as pkcs11:token=T;object=LABEL?module-path=/path/module.so&pin-source=file:/path/pin")
	return cmd
}

// readMaterial reads the material flags, or with keyRef the certificate
// (and chain) of a key that stays in a PKCS#11 token.
func readMaterial(m *materialFlags, keyRef string) (apiclient.Material, error) {
	if keyRef == "" {
		return m.read()
	}
	switch {
	case m.key != "" || m.pkcs12 != "":
		return apiclient.Material{}, flagError("--key-ref", "cannot be combined with --key or --pkcs12", "the key is in the token: give only --cert FILE and --key-ref")
	case m.cert == "":
		return apiclient.Material{}, flagError("--cert", "required with --key-ref", "give the certificate of the token's key with --cert FILE")
	}
	out := apiclient.Material{KeyRef: keyRef, AllowExpired: m.allowExpired}
	var err error
	if out.Cert, err = readInputFile("--cert", m.cert); err != nil {
		return out, err
	}
	if out.Chain, err = readOptionalFile("--chain", m.chain); err != nil {
		return out, err
	}
	return out, nil
}

// keyStoreHelp describes --key-store.
const keyStoreHelp = "where the key is generated: sealed (inside trustflow, the default) or a PKCS#11 token, as " +
	"'pkcs11:token=T;object=LABEL?module-path=/path/module.so&pin-source=file:/path/pin' (key types there: ecdsa-p256, ecdsa-p384, rsa-3072)"

func newIdentityCreateCmd(g *globals) *cobra.Command {
	var gen generateFlags
	var description, keyStore string
	cmd := &cobra.Command{
		Use:   `create NAME --subject "CN=...,O=..."`,
		Short: "Create an identity whose key is generated (and kept) by trustflow; prints the CSR to have signed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(gen.subject) == "" {
				return flagError("--subject", "required", `give the certificate's subject, e.g. --subject "CN=trustflow-prod,O=Example Agency"`)
			}
			out, err := createCSRFile(gen.csrOut)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				out.discard()
				return err
			}
			gr := gen.request()
			gr.KeyStore = keyStore
			created, err := c.CreateIdentity(contextOf(cmd), apiclient.CreateIdentityRequest{Name: args[0], Description: description, GenerateRequest: gr})
			if err != nil {
				out.discard()
				return err
			}
			keyType := ""
			if len(created.Identity.Versions) > 0 {
				keyType = created.Identity.Versions[0].KeyType
			}
			summary := fmt.Sprintf("created identity %s (%s key), waiting for its certificate", created.Identity.Name, keyType)
			return g.renderCSR(created, out, created.CSR, summary, created.Identity.Name)
		},
	}
	gen.register(cmd)
	cmd.Flags().StringVar(&description, "description", "", "what the identity is for")
	cmd.Flags().StringVar(&keyStore, "key-store", "", keyStoreHelp)
	return cmd
}

// renderCSR prints a generated version's answer v: the summary, then the
// CSR unless it went to the --csr-out file. In JSON and YAML output the CSR
// is in v; it is still written to the file when one was given. If the file
// cannot be written the CSR is printed instead, and the command fails.
func (g *globals) renderCSR(v any, out *csrFile, csr, summary, name string) error {
	next := fmt.Sprintf("have your CA sign it, then run `trustflow identity install-cert %s --cert FILE`", name)
	var writeErr error
	if out != nil {
		writeErr = out.write(csr)
	}
	if err := g.render(v, func(w io.Writer) {
		if out != nil && writeErr == nil {
			fmt.Fprintf(w, "%s; CSR written to %s: %s\n", summary, out.path, next)
			return
		}
		fmt.Fprintf(w, "%s; %s\n%s", summary, next, csr)
	}); err != nil {
		return err
	}
	if writeErr != nil {
		return fmt.Errorf("%w (the CSR was printed instead; `trustflow identity show %s -o json` shows it too)", writeErr, name)
	}
	return nil
}

func newIdentityInstallCertCmd(g *globals) *cobra.Command {
	var certFile, chainFile string
	var allowExpired bool
	cmd := &cobra.Command{
		Use:   "install-cert NAME --cert FILE",
		Short: "Install the signed certificate for an identity's pending (generated) version",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := apiclient.InstallCertRequest{AllowExpired: allowExpired}
			var err error
			if certFile == "" {
				return flagError("--cert", "required", "give the certificate your CA signed from the CSR with --cert FILE")
			}
			if req.Cert, err = readInputFile("--cert", certFile); err != nil {
				return err
			}
			if req.Chain, err = readOptionalFile("--chain", chainFile); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			id, err := c.InstallCert(contextOf(cmd), args[0], req)
			if err != nil {
				return err
			}
			return g.render(id, func(w io.Writer) {
				fmt.Fprintf(w, "installed the certificate of identity %s; active version: %s\n\n", id.Name, versionText(id.ActiveVersion))
				identityTable(w, id)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&certFile, "cert", "", "the signed certificate (PEM or DER); may carry its chain after it (required)")
	f.StringVar(&chainFile, "chain", "", "intermediate CA certificates (PEM), issuer first")
	f.BoolVar(&allowExpired, "allow-expired", false, "accept a certificate outside its validity period")
	return cmd
}

func newIdentityRotateCmd(g *globals) *cobra.Command {
	var m materialFlags
	var gen generateFlags
	var generate, stage bool
	var keyStore, keyRef string
	cmd := &cobra.Command{
		Use:   "rotate NAME (--cert FILE --key FILE | --pkcs12 FILE | --generate --subject DN)",
		Short: "Add a version to an identity: imported, or generated with a CSR; active at once unless --stage",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var req apiclient.RotateRequest
			req.Stage = stage
			var out *csrFile
			if generate {
				if given := m.given(); len(given) > 0 {
					return flagError("--generate and "+given[0], "cannot be combined",
						"either generate a new key with --generate (and install its certificate later with `trustflow identity install-cert`), or import one with --cert/--key or --pkcs12")
				}
				if strings.TrimSpace(gen.subject) == "" {
					return flagError("--subject", "required with --generate", `give the certificate's subject, e.g. --subject "CN=trustflow-prod,O=Example Agency"`)
				}
				if keyRef != "" {
					return flagError("--generate and --key-ref", "cannot be combined", "--key-ref imports a certificate for a key already in a token; to generate one there use --generate --key-store")
				}
				gr := gen.request()
				gr.KeyStore = keyStore
				req.Generate = &gr
				var err error
				if out, err = createCSRFile(gen.csrOut); err != nil {
					return err
				}
			} else {
				if given := gen.given(); len(given) > 0 {
					return flagError(given[0], "only applies with --generate", "add --generate to have trustflow generate the new key, or drop "+given[0])
				}
				if keyStore != "" {
					return flagError("--key-store", "only applies with --generate", "add --generate to generate the new key in that key store")
				}
				mat, err := readMaterial(&m, keyRef)
				if err != nil {
					return err
				}
				defer wipe(&mat)
				req.Material = mat
			}
			c, err := g.client()
			if err != nil {
				out.discard()
				return err
			}
			res, err := c.RotateIdentity(contextOf(cmd), name, req)
			if err != nil {
				out.discard()
				return err
			}
			v := versionOf(res.Identity, res.Version)
			if generate {
				state := "it becomes active when its certificate is installed"
				if stage {
					state = "it stays staged when its certificate is installed"
				}
				summary := fmt.Sprintf("identity %s: version %d (%s key) generated, waiting for its certificate; %s", name, res.Version, v.KeyType, state)
				return g.renderCSR(res, out, res.CSR, summary, name)
			}
			return g.render(res, func(w io.Writer) {
				if v.Status == "active" {
					fmt.Fprintf(w, "identity %s: version %d added and active\n\n", name, res.Version)
				} else {
					fmt.Fprintf(w, "identity %s: version %d added, %s; activate it with `trustflow identity activate %s --version %d`\n\n", name, res.Version, v.Status, name, res.Version)
				}
				identityTable(w, res.Identity)
			})
		},
	}
	m.register(cmd)
	gen.register(cmd)
	f := cmd.Flags()
	f.BoolVar(&generate, "generate", false, "generate the new key inside trustflow and print its CSR (with --subject, --dns, --key-type, --csr-out)")
	f.BoolVar(&stage, "stage", false, "keep the new version inactive until it is activated (trustflow identity activate)")
	f.StringVar(&keyStore, "key-store", "", keyStoreHelp+"; defaults to the newest version's, so an identity whose key is in a token rotates in that token (label LABEL-vN)")
	f.StringVar(&keyRef, "key-ref", "", "instead of --key: the new certificate's key in a PKCS#11 token (pkcs11: URI)")
	return cmd
}

func newIdentityActivateCmd(g *globals) *cobra.Command {
	var version int
	cmd := &cobra.Command{
		Use:   "activate NAME --version N",
		Short: "Activate a staged version, or roll back to a retired one",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if version < 1 {
				return flagError("--version", "required: the version number to activate (1 or more)", "see the versions with `trustflow identity show "+args[0]+"`")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			id, err := c.ActivateIdentity(contextOf(cmd), args[0], version)
			if err != nil {
				return err
			}
			return g.render(id, func(w io.Writer) {
				fmt.Fprintf(w, "identity %s: version %d is active\n\n", id.Name, id.ActiveVersion)
				identityTable(w, id)
			})
		},
	}
	cmd.Flags().IntVar(&version, "version", 0, "version to activate (required)")
	return cmd
}

func newIdentityPruneCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "prune NAME",
		Short: "Delete an identity's retired versions and their keys",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.PruneIdentity(contextOf(cmd), args[0])
			if err != nil {
				return err
			}
			if res.Pruned == nil {
				res.Pruned = []int{}
			}
			return g.render(res, func(w io.Writer) {
				if len(res.Pruned) == 0 {
					fmt.Fprintf(w, "identity %s has no retired versions to prune\n\n", res.Identity.Name)
				} else {
					vs := make([]string, len(res.Pruned))
					for i, n := range res.Pruned {
						vs[i] = strconv.Itoa(n)
					}
					fmt.Fprintf(w, "identity %s: pruned retired version(s) %s\n\n", res.Identity.Name, strings.Join(vs, ", "))
				}
				identityTable(w, res.Identity)
			})
		},
	}
}

func newIdentityListCmd(g *globals) *cobra.Command {
	var expiring string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List identities",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			within, err := expiringDuration(expiring)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ids, err := c.ListIdentities(contextOf(cmd), within)
			if err != nil {
				return err
			}
			if ids == nil {
				ids = []apiclient.Identity{}
			}
			now := time.Now()
			return g.render(ids, func(w io.Writer) {
				row(w, "NAME", "STATUS", "ACTIVE VERSION", "KEY TYPE", "NOT AFTER", "DAYS LEFT")
				for _, id := range ids {
					keyType, notAfter, daysLeft := "-", "-", "-"
					if v, ok := id.Active(); ok {
						keyType, notAfter, daysLeft = v.KeyType, fmtTime(v.NotAfter), daysUntil(now, v.NotAfter)
					} else if n := len(id.Versions); n > 0 {
						keyType = id.Versions[n-1].KeyType
					}
					row(w, id.Name, id.Status, versionText(id.ActiveVersion), keyType, notAfter, daysLeft)
				}
			})
		},
	}
	cmd.Flags().StringVar(&expiring, "expiring", "", "only identities whose active certificate expires within this duration, e.g. 30d or 720h")
	return cmd
}

// expiringDuration checks --expiring and returns it as a Go duration: a
// whole number of days ("30d") becomes hours.
func expiringDuration(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	bad := flagError("--expiring", fmt.Sprintf("%q is not a positive duration", s), "use days (30d) or a Go duration (720h)")
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 100*365 {
			return "", bad
		}
		return strconv.Itoa(n*24) + "h", nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return "", bad
	}
	return s, nil
}

func newIdentityShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show an identity and its versions (never key material)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			id, err := c.GetIdentity(contextOf(cmd), args[0])
			if err != nil {
				return err
			}
			return g.render(id, func(w io.Writer) { identityTable(w, id) })
		},
	}
}

func newIdentityRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove an identity, every version and their keys (refused while a connector uses it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.RemoveIdentity(contextOf(cmd), args[0]); err != nil {
				return err
			}
			return g.render(removed{Kind: "identity", Name: args[0], Removed: true}, func(w io.Writer) {
				fmt.Fprintf(w, "removed identity %s\n", args[0])
			})
		},
	}
}

// identityTable prints the identity line and its version table; the
// active version is marked with *.
func identityTable(w io.Writer, id apiclient.Identity) {
	line := fmt.Sprintf("identity %s: %s, active version %s", id.Name, id.Status, versionText(id.ActiveVersion))
	if id.Description != "" {
		line += " (" + id.Description + ")"
	}
	fmt.Fprintln(w, line)
	fmt.Fprintln(w)
	row(w, "VERSION", "STATUS", "SERIAL", "SUBJECT", "ISSUER", "FINGERPRINT", "NOT_AFTER", "KEY_TYPE")
	for _, v := range id.Versions {
		mark := "  "
		if v.Status == "active" {
			mark = "* "
		}
		row(w, mark+strconv.Itoa(v.Version), v.Status, orDash(v.Serial), orDash(v.Subject), orDash(v.Issuer), orDash(v.FingerprintSHA256), fmtTime(v.NotAfter), v.KeyType)
	}
	first := true
	for _, v := range id.Versions {
		if v.KeyRef == nil {
			continue
		}
		if first {
			fmt.Fprintln(w)
			first = false
		}
		fmt.Fprintf(w, "version %d: key in PKCS#11 token %q, label %q (%s)\n", v.Version, v.KeyRef.Token, v.KeyRef.Label, v.KeyRef.URI)
	}
}

func versionOf(id apiclient.Identity, n int) apiclient.IdentityVersion {
	for _, v := range id.Versions {
		if v.Version == n {
			return v
		}
	}
	return apiclient.IdentityVersion{Version: n}
}

func versionText(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

// daysUntil is the whole number of days from now to t, or "expired".
func daysUntil(now time.Time, t *time.Time) string {
	if t == nil {
		return "-"
	}
	d := t.Sub(now)
	if d <= 0 {
		return "expired"
	}
	return strconv.Itoa(int(d / (24 * time.Hour)))
}
