package config

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWithDefaults(t *testing.T) {
	c := Config{}.WithDefaults()
	require.Equal(t, DefaultDataDir, c.DataDir)
	require.Equal(t, DefaultListen, c.Listen)
	require.Equal(t, filepath.Join(DefaultDataDir, "kek"), c.KEKFile)
	require.Equal(t, "text", c.LogFormat)
	require.EqualValues(t, 1<<20, c.MaxBodyBytes)
	require.Equal(t, DefaultAuthFailRate, c.AuthFailRate)
	require.Equal(t, DefaultAuthFailBurst, c.AuthFailBurst)
	require.Equal(t, DefaultMaxWait, c.MaxWait)
	require.Equal(t, DefaultWriteTimeout, c.WriteTimeout)
	require.Equal(t, DefaultMaxConnections, c.MaxConnections)
	require.NoError(t, c.Validate())
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies([]string{"10.1.2.3/8", "192.0.2.7", "2001:db8::/32", "::ffff:198.51.100.1"})
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("198.51.100.1/32")}, got)
	_, err = ParseTrustedProxies([]string{"proxy.example"})
	require.EqualError(t, err, `--trusted-proxy "proxy.example": want a CIDR such as 10.0.0.0/8 or an address such as 10.0.0.7`)
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
		{"auth fail rate", Config{AuthFailRate: -1}, "--auth-fail-rate"},
		{"auth fail burst", Config{AuthFailBurst: -3}, "--auth-fail-burst"},
		{"trusted proxy", Config{TrustedProxies: []string{"10.0.0.0/33"}}, "--trusted-proxy \"10.0.0.0/33\""},
		{"max wait", Config{MaxWait: time.Millisecond}, "--max-wait"},
		{"write timeout", Config{WriteTimeout: 2 * time.Hour}, "--write-timeout"},
		{"max connections", Config{MaxConnections: -1}, "--max-connections"},
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
