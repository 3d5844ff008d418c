package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/apiclient"
)

// connectorFlags are the flags of `connector create` and `connector update`.
type connectorFlags struct {
	url, auth, identity, serverName, minTLS, timeout, description string
	cas, pins, headers, scopes                                    []string
	systemRoots, allowPlaintext, allowNoClientAuthRequest         bool
	username, passwordFile, tokenFile, apiKeyHeader, apiKeyFile   string
	tokenURL, clientID, clientSecretFile                          string
	tokenAuthTLS                                                  bool
	tokenAuthMethod                                               string
}

func (f *connectorFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.url, "url", "", "base URL: https://host:port[/base-path]")
	fs.StringVar(&f.auth, "auth", "", "auth type: none, basic, bearer, api-key, oauth2-client-credentials or mtls (default mtls with --identity, else none)")
	fs.StringVar(&f.identity, "identity", "", "identity to present (mutual TLS); combines with header-based auth types")
	fs.StringArrayVar(&f.cas, "ca", nil, "CA bundle that signs the server's certificate (repeatable)")
	fs.BoolVar(&f.systemRoots, "system-roots", false, "also trust the system's public CA roots")
	fs.StringVar(&f.serverName, "server-name", "", "name to verify the server's certificate against (and send as SNI) instead of the URL's host")
	fs.StringArrayVar(&f.pins, "pin", nil, "SPKI pin sha256/BASE64 the server's chain must contain (repeatable)")
	fs.StringVar(&f.minTLS, "min-tls", "", "minimum TLS version: 1.2 (default) or 1.3")
	fs.StringVar(&f.timeout, "timeout", "", "per-request timeout, e.g. 30s (default 30s)")
	fs.StringArrayVar(&f.headers, "header", nil, "header sent on every request, K:V (repeatable)")
	fs.StringVar(&f.description, "description", "", "what the connector is for")
	fs.BoolVar(&f.allowPlaintext, "allow-plaintext", false, "allow a plain http:// URL (audited)")
	fs.BoolVar(&f.allowNoClientAuthRequest, "allow-no-client-auth-request", false, "accept a server that does not ask for a client certificate (audited)")
	fs.StringVar(&f.username, "username", "", "basic auth user")
	fs.StringVar(&f.passwordFile, "password-file", "", "file holding the basic auth password")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token")
	fs.StringVar(&f.apiKeyHeader, "api-key-header", "", "header that carries the API key, e.g. X-API-Key")
	fs.StringVar(&f.apiKeyFile, "api-key-file", "", "file holding the API key")
	fs.StringVar(&f.tokenURL, "token-url", "", "OAuth2 token endpoint (https://)")
	fs.StringVar(&f.clientID, "client-id", "", "OAuth2 client id")
	fs.StringVar(&f.clientSecretFile, "client-secret-file", "", "file holding the OAuth2 client secret")
	fs.StringArrayVar(&f.scopes, "scope", nil, "OAuth2 scope (repeatable)")
	fs.BoolVar(&f.tokenAuthTLS, "token-auth-tls", false, "authenticate the OAuth2 token request with the identity over mutual TLS (RFC 8705) instead of a secret")
	fs.StringVar(&f.tokenAuthMethod, "token-auth-method", "", "how the OAuth2 client secret is sent, once: client_secret_basic (default) or client_secret_post")
}

// apply copies the flags the user set onto spec.
func (f *connectorFlags) apply(cmd *cobra.Command, spec *apiclient.ConnectorSpec) error {
	ch := cmd.Flags().Changed
	if ch("url") {
		spec.URL = f.url
	}
	if ch("auth") {
		spec.Auth = f.auth
	}
	if ch("identity") {
		spec.Identity = f.identity
	}
	if ch("ca") {
		spec.CAs = f.cas
	}
	if ch("system-roots") {
		spec.SystemRoots = f.systemRoots
	}
	if ch("server-name") {
		spec.ServerName = f.serverName
	}
	if ch("pin") {
		spec.Pins = f.pins
	}
	if ch("min-tls") {
		spec.MinTLS = f.minTLS
	}
	if ch("timeout") {
		spec.Timeout = f.timeout
	}
	if ch("description") {
		spec.Description = f.description
	}
	if ch("allow-plaintext") {
		spec.AllowPlaintext = f.allowPlaintext
	}
	if ch("allow-no-client-auth-request") {
		spec.AllowNoClientAuthRequest = f.allowNoClientAuthRequest
	}
	if ch("header") {
		spec.Headers = map[string]string{}
		for _, h := range f.headers {
			k, v, ok := strings.Cut(h, ":")
			if !ok || strings.TrimSpace(k) == "" {
				return flagError("--header", fmt.Sprintf("%q is not K:V", h), "e.g. --header 'Accept: application/json'")
			}
			spec.Headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if ch("username") {
		spec.AuthSettings.Username = f.username
	}
	if ch("api-key-header") {
		spec.AuthSettings.HeaderName = f.apiKeyHeader
	}
	if ch("token-url") {
		spec.AuthSettings.TokenURL = f.tokenURL
	}
	if ch("client-id") {
		spec.AuthSettings.ClientID = f.clientID
	}
	if ch("scope") {
		spec.AuthSettings.Scopes = f.scopes
	}
	if ch("token-auth-tls") {
		spec.AuthSettings.TokenAuthTLS = f.tokenAuthTLS
	}
	if ch("token-auth-method") {
		spec.AuthSettings.TokenAuthMethod = f.tokenAuthMethod
	}
	for _, sec := range []struct {
		flag string
		path string
		dst  *string
	}{
		{"--password-file", f.passwordFile, &spec.Secrets.Password},
		{"--token-file", f.tokenFile, &spec.Secrets.Token},
		{"--api-key-file", f.apiKeyFile, &spec.Secrets.APIKey},
		{"--client-secret-file", f.clientSecretFile, &spec.Secrets.ClientSecret},
	} {
		v, err := readPasswordFile(sec.flag, sec.path)
		if err != nil {
			return err
		}
		if sec.path != "" && v == "" {
			return flagError(sec.flag, sec.path+" is empty", "put the secret in the file")
		}
		if v != "" {
			*sec.dst = v
		}
	}
	return nil
}

func newConnectorCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "connector", Short: "Manage outbound API connectors (mutual TLS and other auth types)"}

	var cf connectorFlags
	create := &cobra.Command{
		Use:   "create NAME --url URL [--auth TYPE] [--identity ID] [--ca CA]...",
		Short: "Create a connector",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec := apiclient.ConnectorSpec{Name: args[0]}
			if err := cf.apply(cmd, &spec); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			out, err := c.CreateConnector(contextOf(cmd), spec)
			if err != nil {
				return err
			}
			return g.render(out, func(w io.Writer) { printConnector(w, out) })
		},
	}
	cf.register(create)
	_ = create.MarkFlagRequired("url") // the flag exists: the error is impossible

	var uf connectorFlags
	var keepSecrets bool
	update := &cobra.Command{
		Use:   "update NAME [flags]",
		Short: "Change a connector: only the flags given change; secrets not given are kept",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			cur, err := c.GetConnector(contextOf(cmd), args[0])
			if err != nil {
				return err
			}
			spec := cur.Spec()
			if err := uf.apply(cmd, &spec); err != nil {
				return err
			}
			spec.KeepSecrets = keepSecrets
			out, err := c.UpdateConnector(contextOf(cmd), spec)
			if err != nil {
				return err
			}
			return g.render(out, func(w io.Writer) { printConnector(w, out) })
		},
	}
	uf.register(update)
	update.Flags().BoolVar(&keepSecrets, "keep-secrets", false, "keep the stored secret although the update changes where it is sent (admin only, audited)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List connectors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			cs, err := c.ListConnectors(contextOf(cmd))
			if err != nil {
				return err
			}
			if cs == nil {
				cs = []apiclient.Connector{}
			}
			return g.render(cs, func(w io.Writer) {
				row(w, "NAME", "URL", "AUTH", "IDENTITY", "CAS", "LAST TEST")
				for _, k := range cs {
					row(w, k.Name, k.URL, k.Auth, orDash(k.Identity), orDash(strings.Join(k.CAs, ",")), lastTest(k))
				}
			})
		},
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a connector (never its secrets)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			out, err := c.GetConnector(contextOf(cmd), args[0])
			if err != nil {
				return err
			}
			return g.render(out, func(w io.Writer) { printConnector(w, out) })
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a connector",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.RemoveConnector(contextOf(cmd), args[0]); err != nil {
				return err
			}
			return g.render(map[string]string{"removed": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "removed connector %s\n", args[0]) })
		},
	}

	var testPath string
	test := &cobra.Command{
		Use:   "test NAME [--path P]",
		Short: "Handshake (and GET --path) through a connector; print the evidence or the diagnosis; exit 0 only on success",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.TestConnector(contextOf(cmd), args[0], testPath)
			if err != nil {
				return err
			}
			if err := g.render(res, func(w io.Writer) {
				if res.OK {
					fmt.Fprintf(w, "OK: connector %s\n", args[0])
					if res.Status != 0 {
						fmt.Fprintf(w, "status:\t%d\n", res.Status)
					}
				}
				printEvidence(w, res.Evidence)
			}); err != nil {
				return err
			}
			if !res.OK && res.Error != nil {
				msg := res.Error.Message
				if res.Error.Hint != "" {
					msg += "\nHint: " + res.Error.Hint
				}
				return &exitError{code: 2, msg: msg}
			}
			return nil
		},
	}
	test.Flags().StringVar(&testPath, "path", "", "also GET this path through the connector")

	var data string
	var callHeaders []string
	call := &cobra.Command{
		Use:   "call NAME METHOD PATH [--data JSON|@file] [-H K:V]...",
		Short: "Make one request through a connector (audited)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := apiclient.CallRequest{Method: strings.ToUpper(args[1]), Path: args[2], Headers: map[string]string{}}
			for _, h := range callHeaders {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return flagError("-H", fmt.Sprintf("%q is not K:V", h), "e.g. -H 'Accept: application/json'")
				}
				req.Headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
			if data != "" {
				raw := []byte(data)
				if strings.HasPrefix(data, "@") {
					b, err := readInputFile("--data", strings.TrimPrefix(data, "@"))
					if err != nil {
						return err
					}
					raw = b
				}
				if json.Valid(raw) {
					req.Body = raw
				} else {
					req.BodyText = string(raw)
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.CallConnector(contextOf(cmd), args[0], req)
			if err != nil {
				return err
			}
			return g.render(res, func(w io.Writer) {
				fmt.Fprintf(w, "status:\t%d\n", res.Status)
				printEvidence(w, res.Evidence)
				b, _ := json.MarshalIndent(res.Body, "", "  ") // a decoded JSON value always re-encodes
				fmt.Fprintf(w, "\n%s\n", b)
			})
		},
	}
	call.Flags().StringVar(&data, "data", "", "request body: JSON (sent as application/json), text, or @file")
	call.Flags().StringArrayVarP(&callHeaders, "header", "H", nil, "request header K:V (repeatable)")

	cmd.AddCommand(create, update, list, show, remove, test, call)
	return cmd
}

func lastTest(c apiclient.Connector) string {
	if c.LastTestOK == nil {
		return "never"
	}
	if *c.LastTestOK {
		return "ok " + fmtTime(c.LastTestAt)
	}
	return "FAILED " + fmtTime(c.LastTestAt)
}

func printConnector(w io.Writer, c apiclient.Connector) {
	row(w, "name:", c.Name)
	row(w, "url:", c.URL)
	row(w, "auth:", c.Auth)
	row(w, "identity:", orDash(c.Identity))
	row(w, "cas:", orDash(strings.Join(c.CAs, ", ")))
	if c.SystemRoots {
		row(w, "system roots:", "yes")
	}
	if c.ServerName != "" {
		row(w, "server name:", c.ServerName)
	}
	if len(c.Pins) > 0 {
		row(w, "pins:", strings.Join(c.Pins, ", "))
	}
	row(w, "min tls:", c.MinTLS)
	row(w, "timeout:", c.Timeout)
	if c.AllowPlaintext {
		row(w, "exception:", "plain http allowed")
	}
	if c.AllowNoClientAuthRequest {
		row(w, "exception:", "server need not ask for a client certificate")
	}
	row(w, "secret stored:", fmt.Sprint(c.HasSecret))
	row(w, "last test:", lastTest(c))
	if c.LastError != "" {
		row(w, "last error:", c.LastError)
	}
}

func printEvidence(w io.Writer, ev *apiclient.Evidence) {
	if ev == nil {
		return
	}
	row(w, "tls:", ev.TLSVersion+" "+ev.CipherSuite)
	if ev.ALPN != "" {
		row(w, "alpn:", ev.ALPN)
	}
	row(w, "resumed:", fmt.Sprint(ev.Resumed))
	row(w, "server asked for client cert:", fmt.Sprint(ev.ServerRequestedClientCert))
	for _, ca := range ev.AcceptableCAs {
		row(w, "  acceptable CA:", ca)
	}
	if ev.ClientCertificate != nil {
		cc := ev.ClientCertificate
		row(w, "presented:", fmt.Sprintf("identity %s v%d serial %s sha256 %s", cc.Identity, cc.Version, cc.Serial, cc.FingerprintSHA256))
	} else {
		row(w, "presented:", "no client certificate")
	}
	for i, c := range ev.ServerChain {
		row(w, fmt.Sprintf("server chain[%d]:", i), fmt.Sprintf("%s (issuer %s, sha256 %s, until %s)", c.Subject, c.Issuer, c.FingerprintSHA256, c.NotAfter.Format("2006-01-02")))
	}
}
