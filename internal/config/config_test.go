package config

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWithDefaults(t *testing.T) {
	c := Config{}.WithDefaults()
	require.Equal(t, DefaultDataDir, c.DataDir)
	require.Equal(t, DefaultListen, c.Listen)
	require.Equal(t, filepath.Join(DefaultDataDir, "kek"), c.KEKFile)
	require.Equal(t, "text", c.LogFormat)
	require.EqualValues(t, 1<<20, c.MaxBodyBytes)
	require.NoError(t, c.Validate())
}

func TestValidateNamesTheFlag(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"listen", Config{Listen: "nope"}, "--listen"},
		{"log format", Config{LogFormat: "xml"}, "--log-format"},
		{"tls half", Config{TLSCert: "a.pem"}, "--tls-cert and --tls-key"},
		{"db", Config{DatabaseURL: "mysql://x"}, "--db"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.WithDefaults().Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestParseDatabaseURL(t *testing.T) {
	cases := []struct {
		raw  string
		want Database
	}{
		{"", Database{Dialect: "sqlite", DSN: filepath.Join("d", SQLiteFileName)}},
		{"postgres://u@h:5432/db", Database{Dialect: "postgres", DSN: "postgres://u@h:5432/db"}},
		{"postgresql://u@h/db", Database{Dialect: "postgres", DSN: "postgresql://u@h/db"}},
		{"sqlite:/tmp/x.db", Database{Dialect: "sqlite", DSN: "/tmp/x.db"}},
		{"sqlite:///tmp/x.db", Database{Dialect: "sqlite", DSN: "/tmp/x.db"}},
	}
	for _, tc := range cases {
		got, err := ParseDatabaseURL(tc.raw, "d")
		require.NoError(t, err, tc.raw)
		require.Equal(t, tc.want, got, tc.raw)
	}
	_, err := ParseDatabaseURL("mysql://root:secret@h/db", "d")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "secret")
}
