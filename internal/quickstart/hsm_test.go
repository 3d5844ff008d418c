package quickstart_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/app"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/hsm/hsmtest"
	"github.com/trustflow/trustflow/internal/quickstart"
)

func TestMain(m *testing.M) { os.Exit(hsmtest.Main(m)) }

// The whole quickstart with key custody in a SoftHSM2 token: the KEK and
// the demo identity's private key are generated inside it, a flow's call
// makes a real mutual-TLS handshake that signs in the token, and neither key
// can be read out of it.
func TestQuickstartWithKeysInAnHSM(t *testing.T) {
	hsmtest.Require(t)
	token := hsmtest.NewToken(t, "qs")
	kek := token.WithObject("trustflow-kek").KeyRef()
	keyStore := token.WithObject("quickstart-client").KeyRef()
	dir := t.TempDir()
	for run, wantVersion := range []int{1, 2} {
		var out, errb bytes.Buffer
		res, err := quickstart.Run(context.Background(), quickstart.Options{
			Config: config.Config{DataDir: dir, Listen: "127.0.0.1:0", KEK: kek}, Stdout: &out, Stderr: &errb, Exit: true, KeyStore: keyStore,
		})
		require.NoError(t, err, "run %d: %s", run, errb.String())
		active, ok := res.Identity.Active()
		require.True(t, ok)
		require.Equal(t, wantVersion, active.Version)
		require.Equal(t, "pkcs11", active.KeyStore)
		require.NotNil(t, active.KeyRef)
		require.Equal(t, "succeeded", res.Run.Status, "the flow's mutual-TLS calls signed in the token")
		require.Equal(t, map[string]any{"login": "jdoe", "disabled": true, "presented_serial": active.Serial}, res.Run.Output)
		require.Equal(t, active.Serial, res.Call.Evidence.ClientCertificate.Serial)
		_, statErr := os.Stat(dir + "/kek")
		require.ErrorIs(t, statErr, os.ErrNotExist, "no KEK file: the key-encryption key lives in the token")
		require.NotContains(t, out.String()+errb.String(), "PRIVATE KEY")
	}

	// Rotate the KEK inside the token; the next quickstart opens everything
	// under the new key, and only that key is left in the token.
	cfg := config.Config{DataDir: dir, Listen: "127.0.0.1:0", KEK: kek}
	a, err := app.New(context.Background(), cfg, app.Options{Stderr: io.Discard, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	before := a.Keys.ActiveID()
	res, err := a.Keys.Rotate(context.Background(), audit.System, nil)
	require.NoError(t, err)
	require.Equal(t, []string{before}, res.FromKEKs)
	require.Positive(t, res.Columns["run input"], "the quickstart's runs keep their inputs sealed")
	require.NoError(t, a.Stop())
	var out, errb bytes.Buffer
	again, err := quickstart.Run(context.Background(), quickstart.Options{Config: cfg, Stdout: &out, Stderr: &errb, Exit: true, KeyStore: keyStore})
	require.NoError(t, err, errb.String())
	require.Equal(t, "succeeded", again.Run.Status)

	// Every private and secret key object in the token refuses CKA_VALUE.
	p, sh := hsmtest.Session(t, token)
	require.NoError(t, p.FindObjectsInit(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, "trustflow-kek")}))
	keks, _, err := p.FindObjects(sh, 10)
	require.NoError(t, err)
	require.NoError(t, p.FindObjectsFinal(sh))
	require.Len(t, keks, 1, "the rotation destroyed the old KEK object")
	for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_SECRET_KEY} {
		require.NoError(t, p.FindObjectsInit(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}))
		objs, _, err := p.FindObjects(sh, 100)
		require.NoError(t, err)
		require.NoError(t, p.FindObjectsFinal(sh))
		require.NotEmpty(t, objs)
		for _, o := range objs {
			_, err := p.GetAttributeValue(sh, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
			require.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE))
		}
	}
}
