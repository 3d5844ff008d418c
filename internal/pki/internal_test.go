package pki

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckKDFWork(t *testing.T) {
	t.Parallel()
	// SEQUENCE { OCTET STRING salt, INTEGER iterations }, as in PKCS#12 PBE parameters.
	params := func(iter []byte) []byte {
		body := append([]byte{0x04, 0x02, 0xaa, 0xbb, 0x02, byte(len(iter))}, iter...)
		return append([]byte{0x30, byte(len(body))}, body...)
	}
	require.Nil(t, checkKDFWork(params([]byte{0x08, 0x00}), "x"))                            // 2048
	require.Equal(t, CodeTooLarge, checkKDFWork(params([]byte{0x0f, 0x42, 0x41}), "x").Code) // 1,000,001
	require.Equal(t, CodeTooLarge, checkKDFWork(params(bytes.Repeat([]byte{0x7f}, 9)), "x").Code)
	require.Nil(t, checkKDFWork(params([]byte{0xff}), "x")) // negative: left to the parser

	// Work adds up over the derivations of one file.
	var many []byte
	for range 4 {
		many = append(many, params([]byte{0x0c, 0x35, 0x00})...) // 800,000 each
	}
	e := checkKDFWork(append([]byte{0x30, byte(len(many))}, many...), "the file")
	require.Equal(t, "the file asks for 3200000 key-derivation iterations in total, over the limit of 3000000", e.Message)

	// Parameters wrapped in an OCTET STRING are found too.
	inner := params([]byte{0x7f, 0xff, 0xff})
	wrapped := append([]byte{0x04, byte(len(inner))}, inner...)
	require.Equal(t, CodeTooLarge, checkKDFWork(append([]byte{0x30, byte(len(wrapped))}, wrapped...), "x").Code)
}

func TestBERDepth(t *testing.T) {
	t.Parallel()
	nest := func(n int, indefinite bool) []byte {
		var b []byte
		for range n {
			if indefinite {
				b = append(b, 0x30, 0x80)
			} else {
				b = append([]byte{0x30, byte(len(b))}, b...)
			}
		}
		if indefinite {
			b = append(b, bytes.Repeat([]byte{0, 0}, n)...)
		}
		return b
	}
	require.False(t, berTooDeep(nest(10, true), 64))
	require.True(t, berTooDeep(nest(100, true), 64))
	require.False(t, berTooDeep(nest(20, false), 64))
	require.False(t, berTooDeep([]byte{0x30}, 64))
	require.False(t, berTooDeep([]byte{0x04, 0x80, 0, 0}, 64)) // indefinite primitive: malformed
}

func TestUnpadPKCS7(t *testing.T) {
	t.Parallel()
	got, ok := unpadPKCS7([]byte{1, 2, 3, 3, 3, 3}, 8)
	require.True(t, ok)
	require.Equal(t, []byte{1, 2, 3}, got)
	for _, bad := range [][]byte{nil, {1, 0}, {1, 9}, {1, 2, 2, 3}} {
		_, ok := unpadPKCS7(bad, 8)
		require.False(t, ok, "%x", bad)
	}
}

func TestCertName(t *testing.T) {
	t.Parallel()
	u, _ := url.Parse("spiffe://example.org/svc")
	require.Equal(t, "'CN=x,O=y'", certName(&x509.Certificate{Subject: pkix.Name{CommonName: "x", Organization: []string{"y"}}}))
	require.Equal(t, "'api.example' (empty subject)", certName(&x509.Certificate{DNSNames: []string{"api.example"}}))
	require.Equal(t, "'10.0.0.1' (empty subject)", certName(&x509.Certificate{IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}))
	require.Equal(t, "'spiffe://example.org/svc' (empty subject)", certName(&x509.Certificate{URIs: []*url.URL{u}}))
	require.Equal(t, "with serial ff (empty subject)", certName(&x509.Certificate{SerialNumber: big.NewInt(255)}))
	require.Equal(t, "'<nil>'", certName(nil))
}
