package config

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAuditKeyDefaults(t *testing.T) {
	c := Config{DataDir: "/var/lib/tf"}.WithDefaults()
	require.Equal(t, "file://"+filepath.Join("/var/lib/tf", "audit.key"), c.AuditKey)
	require.Equal(t, 5*time.Minute, c.AuditCheckpointEvery)
	require.Equal(t, int64(1000), c.AuditCheckpointRecords)
	require.NoError(t, c.Validate())
}

func TestParseAuditKeyURI(t *testing.T) {
	cases := []struct {
		raw     string
		want    KEKSource
		wantErr string
	}{
		{raw: "file:///etc/tf/audit.key", want: KEKSource{Scheme: "file", Path: "/etc/tf/audit.key"}},
		{raw: "env://TF_AUDIT_KEY", want: KEKSource{Scheme: "env", Path: "TF_AUDIT_KEY"}},
		{raw: "file://", wantErr: "--audit-key file://: needs a path, e.g. file:///var/lib/trustflow/audit.key"},
		{raw: "env://A B", wantErr: `--audit-key env://: needs an environment variable name, e.g. env://TRUSTFLOW_AUDIT_KEY_VALUE (got "A B")`},
		{raw: "pkcs11:token=t;object=audit", wantErr: "--audit-key pkcs11:: an audit key in a PKCS#11 token is not supported yet; use file://PATH (the default, DATA_DIR/audit.key) or env://NAME"},
		{raw: "/etc/tf/audit.key", wantErr: "--audit-key: unknown audit key source; use file://PATH (the default, DATA_DIR/audit.key) or env://NAME (a variable holding 32 bytes in standard base64)"},
	}
	for _, tc := range cases {
		got, err := ParseAuditKeyURI(tc.raw)
		if tc.wantErr != "" {
			require.EqualError(t, err, tc.wantErr, tc.raw)
			continue
		}
		require.NoError(t, err, tc.raw)
		require.Equal(t, tc.want, got, tc.raw)
	}
}

func TestValidateNamesTheAuditFlags(t *testing.T) {
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{AuditKey: "pkcs11:token=t"}, "--audit-key pkcs11:: an audit key in a PKCS#11 token is not supported yet"},
		{Config{AuditCheckpointEvery: 500 * time.Millisecond}, "--audit-checkpoint-every 500ms: want 1s to 24h0m0s (e.g. 5m)"},
		{Config{AuditCheckpointEvery: 25 * time.Hour}, "--audit-checkpoint-every 25h0m0s: want 1s to 24h0m0s (e.g. 5m)"},
		{Config{AuditCheckpointRecords: -1}, "--audit-checkpoint-records -1: want 1 to 1000000 (e.g. 1000)"},
		{Config{AuditCheckpointRecords: 1_000_001}, "--audit-checkpoint-records 1000001: want 1 to 1000000 (e.g. 1000)"},
	}
	for _, tc := range cases {
		err := tc.cfg.WithDefaults().Validate()
		require.ErrorContains(t, err, tc.want)
	}
}
