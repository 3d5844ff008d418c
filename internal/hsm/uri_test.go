package hsm_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/hsm"
)

func TestParseURI(t *testing.T) {
	u, err := hsm.ParseURI("pkcs11:token=My%20Token;object=tf-key;id=%01%A2;serial=42;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;type=private;x-vendor=1" +
		"?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:///run/secrets/pin")
	require.NoError(t, err)
	require.Equal(t, hsm.URI{Token: "My Token", Object: "tf-key", ID: []byte{0x01, 0xa2}, Serial: "42", Manufacturer: "SoftHSM project",
		Model: "SoftHSM v2", Type: "private", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PinSource: "file:/run/secrets/pin"}, u)
	require.Equal(t, "pkcs11:token=My%20Token;serial=42;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;object=tf-key;id=%01%A2;type=private"+
		"?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/pin", u.String())

	u, err = hsm.ParseURI("pkcs11:token=T;object=O?module-path=/m.so&pin-source=env:TF_PIN")
	require.NoError(t, err)
	require.Equal(t, "env:TF_PIN", u.PinSource)

	u, err = hsm.ParseURI("pkcs11:token=T?module-path=/m.so&pin-value=12%2634")
	require.NoError(t, err)
	require.Equal(t, "12&34", u.PinValue)
	require.Equal(t, "pkcs11:token=T?module-path=/m.so&pin-value=redacted", u.String())
	require.Equal(t, "pkcs11:token=T?module-path=/m.so", u.KeyRef())
	require.NotContains(t, u.String(), "12")
}

func TestParseURIErrors(t *testing.T) {
	for _, tc := range []struct{ in, attr, hint string }{
		{"file:/x", "", "pkcs11:token="},
		{"pkcs11:token=T", "module-path", "module-path="},
		{"pkcs11:object=O?module-path=/m.so", "token", "token=LABEL"},
		{"pkcs11:token=T?module-path=m.so", "module-path", "full path"},
		{"pkcs11:token=T;token=U?module-path=/m.so", "token", "keep one"},
		{"pkcs11:token=T;colour=red?module-path=/m.so", "colour", "path attributes"},
		{"pkcs11:token=T?module-path=/m.so&module-name=softhsm2", "module-name", "module-path"},
		{"pkcs11:token=T%2?module-path=/m.so", "token", "%XX"},
		{"pkcs11:token=T;type=key?module-path=/m.so", "type", "secret-key"},
		{"pkcs11:token=T?module-path=/m.so&pin-source=/run/pin", "pin-source", "file:/run/secrets"},
		{"pkcs11:token=T?module-path=/m.so&pin-source=file:pin", "pin-source", "absolute"},
		{"pkcs11:token=T?module-path=/m.so&pin-source=file:/p&pin-value=1", "pin-value", "pin-source"},
		{"pkcs11:token=T;object?module-path=/m.so", "object", "name=value"},
		{"pkcs11:token=T;id=?module-path=/m.so", "id", "drop it"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := hsm.ParseURI(tc.in)
			var e *errs.Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, hsm.CodeInvalidURI, e.Code)
			if tc.attr != "" {
				require.Contains(t, e.Message, "the PKCS#11 URI attribute "+tc.attr+" ")
			}
			require.Contains(t, e.Hint, tc.hint)
		})
	}
	_, err := hsm.ParseURI("pkcs11:token=T?module-path=/m.so&pin-value=12%G4")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "12%G4")
}

// FuzzParseURI checks that ParseURI never panics, that what it accepts
// formats to a URI it parses back to the same value, and that no format
// prints a pin-value.
func FuzzParseURI(f *testing.F) {
	f.Add("pkcs11:token=T;object=O?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/pin")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := hsm.ParseURI(s)
		if err != nil {
			if u.PinValue != "" {
				t.Fatal("error with a non-zero URI")
			}
			return
		}
		back, err := hsm.ParseURI(u.KeyRef())
		if err != nil {
			t.Fatalf("KeyRef %q does not parse: %v", u.KeyRef(), err)
		}
		want := u
		want.PinValue = ""
		require.Equal(t, want, back)
		if u.PinValue != "" && len(u.PinValue) > 3 && strings.Contains(u.String(), "pin-value="+u.PinValue) {
			t.Fatalf("String prints the pin-value: %q", u.String())
		}
	})
}
