#!/bin/sh
# Regenerates the interop and bad-input fixtures of internal/pki with the
# openssl command (written against OpenSSL 3.0). Run from anywhere:
#
#   sh internal/pki/testdata/gen.sh
#
# Certificates are valid for 100 years (or deliberately not at all), so the
# tests do not rot. The outputs are committed: tests never need openssl.
# pbmac1-rfc9579-a1.p12 is the RFC 9579 Appendix A.1 test vector (password
# "1234") and is not generated here: OpenSSL 3.0 cannot write PBMAC1.
set -eu

cd "$(dirname "$0")"
OUT=$(pwd)

# Passwords used by the fixtures; pki tests use the same values.
KEYPASS=trustflow-key-pass
P12PASS=trustflow-p12-pass
DAYS=36500

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

ext() { # ext NAME CONTENT...: write an extension section file
	name=$1
	shift
	printf '%s\n' "[ext]" "$@" >"$name.ext"
}

ext ca "basicConstraints=critical,CA:TRUE" "keyUsage=critical,keyCertSign,cRLSign" \
	"subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid:always"
ext client "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
	"extendedKeyUsage=clientAuth" "subjectAltName=DNS:client.trustflow.test" \
	"subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid"
ext rsaclient "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
	"extendedKeyUsage=clientAuth,serverAuth" "subjectAltName=DNS:rsa.trustflow.test"
ext server "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
	"extendedKeyUsage=serverAuth" "subjectAltName=DNS:api.trustflow.test,IP:127.0.0.1"
ext notca "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyCertSign"
ext none "subjectKeyIdentifier=hash"

# --- CA hierarchy: root -> intermediate -> leaves (ECDSA P-256) ---------------
selfsign() { # selfsign KEY SUBJECT EXTFILE OUT
	openssl req -new -key "$1" -subj "$2" -out selfsign.csr
	openssl x509 -req -in selfsign.csr -signkey "$1" -days $DAYS -sha256 -extfile "$3" -extensions ext -out "$4" 2>/dev/null
}

sign() { # sign CSR ISSUER EXTFILE OUT [extra x509 args]
	csr=$1 issuer=$2 extf=$3 out=$4
	shift 4
	openssl x509 -req -in "$csr" -CA "$issuer.pem" -CAkey "$issuer.key" -CAcreateserial \
		-days $DAYS -sha256 -extfile "$extf" -extensions ext -out "$out" "$@" 2>/dev/null
}

openssl ecparam -name prime256v1 -genkey -noout -out root.key
selfsign root.key "/CN=Trustflow Test Root CA/O=Trustflow Tests" ca.ext root.pem

openssl ecparam -name prime256v1 -genkey -noout -out inter.key
openssl req -new -key inter.key -subj "/CN=Trustflow Test Issuing CA/O=Trustflow Tests" -out inter.csr
sign inter.csr root ca.ext inter.pem

openssl ecparam -name prime256v1 -genkey -noout -out client.key
openssl req -new -key client.key -subj "/CN=client.trustflow.test/O=Trustflow Tests/OU=Payments" -out client.csr
sign client.csr inter client.ext client.pem

openssl ecparam -name prime256v1 -genkey -noout -out server.key
openssl req -new -key server.key -subj "/CN=api.trustflow.test" -out server.csr
sign server.csr inter server.ext server.pem

cp root.pem "$OUT/root-ca.pem"
cp inter.pem "$OUT/intermediate-ca.pem"
cp client.pem "$OUT/client.pem"
cp server.pem "$OUT/server-only-eku.pem" # serverAuth only: not a client certificate
cat client.pem inter.pem >"$OUT/client-chain.pem"
cat inter.pem root.pem >"$OUT/ca-chain.pem"
cat root.pem inter.pem >"$OUT/ca-chain-reversed.pem"
openssl x509 -in root.pem -outform DER -out "$OUT/root-ca.der"

# A bundle with the text `openssl x509 -text` puts around certificates.
{
	openssl x509 -in client.pem -noout -subject -issuer
	cat client.pem
	echo "# a comment line between blocks"
	openssl x509 -in inter.pem -text
} >"$OUT/bundle-with-text.pem"

# OpenSSL "TRUSTED CERTIFICATE" form.
openssl x509 -in root.pem -trustout -addtrust clientAuth -out "$OUT/trusted-certificate.pem"

# --- private key formats (the client key) ------------------------------------
openssl pkcs8 -topk8 -nocrypt -in client.key -out "$OUT/client-key-pkcs8.pem"
openssl pkcs8 -topk8 -nocrypt -in client.key -outform DER -out "$OUT/client-key-pkcs8.der"
openssl ec -in client.key -out "$OUT/client-key-sec1.pem" 2>/dev/null
openssl ec -in client.key -outform DER -out "$OUT/client-key-sec1.der" 2>/dev/null
# SEC 1 with the EC PARAMETERS block `openssl ecparam -genkey` writes first.
{
	openssl ecparam -name prime256v1
	cat "$OUT/client-key-sec1.pem"
} >"$OUT/client-key-sec1-with-params.pem"
openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:$KEYPASS -in client.key -out "$OUT/client-key-pkcs8-aes256.pem"
openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:$KEYPASS -in client.key -outform DER -out "$OUT/client-key-pkcs8-aes256.der"
openssl pkcs8 -topk8 -v2 aes-128-cbc -v2prf hmacWithSHA1 -passout pass:$KEYPASS -in client.key -out "$OUT/client-key-pkcs8-aes128-sha1.pem"
openssl pkcs8 -topk8 -v2 des3 -passout pass:$KEYPASS -in client.key -out "$OUT/client-key-pkcs8-des3.pem"
openssl pkcs8 -topk8 -v1 PBE-SHA1-3DES -passout pass:$KEYPASS -in client.key -out "$OUT/client-key-pkcs8-pbes1.pem" 2>/dev/null
openssl pkcs8 -topk8 -scrypt -passout pass:$KEYPASS -in client.key -out "$OUT/client-key-pkcs8-scrypt.pem"
openssl pkcs8 -topk8 -v2 aes-256-cbc -iter 3000000 -passout pass:$KEYPASS -in client.key -out "$OUT/client-key-pkcs8-too-many-iterations.pem"
# OpenSSL's legacy PEM encryption ("Proc-Type: 4,ENCRYPTED").
openssl ec -in client.key -aes256 -passout pass:$KEYPASS -out "$OUT/client-key-legacy-encrypted.pem" 2>/dev/null

# RSA 2048 client: PKCS#1 key.
openssl genrsa -traditional -out rsa.key 2048 2>/dev/null
openssl req -new -key rsa.key -subj "/CN=rsa.trustflow.test" -out rsa.csr
sign rsa.csr inter rsaclient.ext rsa.pem
cp rsa.pem "$OUT/rsa-client.pem"
cp rsa.key "$OUT/rsa-client-key-pkcs1.pem"
openssl rsa -in rsa.key -outform DER -traditional -out "$OUT/rsa-client-key-pkcs1.der" 2>/dev/null

# Ed25519 client.
openssl genpkey -algorithm ed25519 -out ed.key
openssl req -new -key ed.key -subj "/CN=ed25519.trustflow.test" -out ed.csr
sign ed.csr inter client.ext ed.pem
cp ed.pem "$OUT/ed25519-client.pem"
cp ed.key "$OUT/ed25519-client-key.pem"

# Keys trustflow cannot sign with.
openssl genpkey -algorithm X25519 -out "$OUT/x25519-key.pem"
openssl dsaparam -genkey -noout -out "$OUT/dsa-key-pkcs8.pem" 1024 2>/dev/null
sed 's/ PRIVATE KEY/ DSA PRIVATE KEY/' "$OUT/dsa-key-pkcs8.pem" >"$OUT/dsa-key-traditional.pem" # type label only

# --- PKCS#12 -----------------------------------------------------------------
# Modern: OpenSSL 3 defaults (AES-256-CBC, PBKDF2-HMAC-SHA256, SHA-256 MAC), with chain.
cat inter.pem root.pem >ca-chain-tmp.pem
openssl pkcs12 -export -in client.pem -inkey client.key -certfile ca-chain-tmp.pem -passout pass:$P12PASS \
	-keypbe AES-256-CBC -certpbe AES-256-CBC -macalg sha256 -out "$OUT/client-modern.p12"
# Legacy: RC2-40 certificates, 3DES key, SHA-1 MAC.
openssl pkcs12 -export -legacy -in client.pem -inkey client.key -certfile ca-chain-tmp.pem -passout pass:$P12PASS \
	-out "$OUT/client-legacy-rc2.p12"
# Legacy: 3DES for both, SHA-1 MAC (what Windows and Java have written for years).
openssl pkcs12 -export -in client.pem -inkey client.key -certfile ca-chain-tmp.pem -passout pass:$P12PASS \
	-certpbe PBE-SHA1-3DES -keypbe PBE-SHA1-3DES -macalg sha1 -out "$OUT/client-legacy-3des.p12"
# RSA identity, CA certificates listed before the leaf.
openssl pkcs12 -export -in rsa.pem -inkey rsa.key -certfile ca-chain-tmp.pem -passout pass:$P12PASS \
	-out "$OUT/rsa-client.p12"
# Empty password.
openssl pkcs12 -export -in client.pem -inkey client.key -passout pass: -out "$OUT/client-empty-password.p12"
# Certificates only, no key.
openssl pkcs12 -export -nokeys -in client.pem -certfile ca-chain-tmp.pem -passout pass:$P12PASS -out "$OUT/certs-only.p12"
# Expensive key derivation (3,000,000 iterations).
openssl pkcs12 -export -in client.pem -inkey client.key -passout pass:$P12PASS -iter 3000000 \
	-out "$OUT/client-too-many-iterations.p12"

# --- PKCS#7 certs-only bundles -----------------------------------------------
openssl crl2pkcs7 -nocrl -certfile client.pem -certfile inter.pem -certfile root.pem -out "$OUT/chain.p7b.pem"
openssl crl2pkcs7 -nocrl -certfile client.pem -certfile inter.pem -certfile root.pem -outform DER -out "$OUT/chain.p7b"
sed 's/PKCS7/CERTIFICATE/' "$OUT/chain.p7b.pem" >"$OUT/chain-p7-in-certificate-block.pem"
# A streamed (BER, indefinite-length) CMS signed message carrying the chain.
echo "signed by the client" >msg.txt
openssl cms -sign -in msg.txt -signer client.pem -inkey client.key -certfile inter.pem -stream -nodetach \
	-outform DER -out "$OUT/signed-ber.p7m"

# --- CSR ---------------------------------------------------------------------
openssl req -new -key client.key -subj "/CN=client.trustflow.test/O=Trustflow Tests" \
	-addext "subjectAltName=DNS:client.trustflow.test" -out "$OUT/client.csr"
openssl req -in "$OUT/client.csr" -outform DER -out "$OUT/client.csr.der"
# Flip a bit in the last byte of the signature.
openssl req -in "$OUT/client.csr" -outform DER -out csr.der
python3 - csr.der "$OUT/csr-bad-signature.pem" <<'EOF'
import base64, sys
der = bytearray(open(sys.argv[1], "rb").read())
der[-1] ^= 0x01
b64 = base64.encodebytes(bytes(der)).decode().replace("\n", "")
lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
open(sys.argv[2], "w").write("-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE REQUEST-----\n")
EOF

# --- CRL (openssl ca) ----------------------------------------------------------
mkdir -p ca/newcerts
: >ca/index.txt
echo 1000 >ca/crlnumber
openssl rand -hex 16 | sed 's/^./7/' >ca/serial # its own serial sequence
cat >ca.cnf <<EOF
[ca]
default_ca = test
[test]
dir = $WORK/ca
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
certificate = $WORK/inter.pem
private_key = $WORK/inter.key
serial = \$dir/serial
crlnumber = \$dir/crlnumber
default_md = sha256
default_days = $DAYS
default_crl_days = $DAYS
policy = anything
copy_extensions = none
[anything]
commonName = supplied
[ext]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
[crlext]
authorityKeyIdentifier=keyid
EOF
openssl ecparam -name prime256v1 -genkey -noout -out revoked.key
openssl req -new -key revoked.key -subj "/CN=revoked.trustflow.test" -out revoked.csr
openssl ca -batch -config ca.cnf -extensions ext -in revoked.csr -out revoked.pem 2>/dev/null
openssl ca -config ca.cnf -revoke revoked.pem -crl_reason keyCompromise 2>/dev/null
openssl ca -gencrl -config ca.cnf -crlexts crlext -out "$OUT/intermediate-ca.crl.pem" 2>/dev/null
openssl x509 -in revoked.pem -out "$OUT/revoked-client.pem"
cp revoked.key "$OUT/revoked-client-key.pem"
# Expired and not-yet-valid clients, with exact dates.
openssl ecparam -name prime256v1 -genkey -noout -out old.key
openssl req -new -key old.key -subj "/CN=expired.trustflow.test" -out old.csr
openssl ca -batch -config ca.cnf -extensions ext -startdate 20000101000000Z -enddate 20010101000000Z \
	-in old.csr -out old.pem 2>/dev/null
openssl x509 -in old.pem -out "$OUT/expired-client.pem"
openssl req -new -key old.key -subj "/CN=future.trustflow.test" -out future.csr
openssl ca -batch -config ca.cnf -extensions ext -startdate 21000101000000Z -enddate 21010101000000Z \
	-in future.csr -out future.pem 2>/dev/null
openssl x509 -in future.pem -out "$OUT/not-yet-valid-client.pem"

# --- bad certificates ----------------------------------------------------------
# Self-signed "CA" without basicConstraints.
openssl ecparam -name prime256v1 -genkey -noout -out nobc.key
selfsign nobc.key "/CN=CA Without Basic Constraints" none.ext "$OUT/ca-without-basic-constraints.pem"
# A leaf (CA:FALSE) that nevertheless signed another certificate.
openssl ecparam -name prime256v1 -genkey -noout -out notca.key
openssl req -new -key notca.key -subj "/CN=Leaf Used As CA" -out notca.csr
sign notca.csr inter notca.ext notca.pem
openssl req -new -key server.key -subj "/CN=issued-by-leaf.trustflow.test" -out byleaf.csr
sign byleaf.csr notca client.ext byleaf.pem
cp notca.pem "$OUT/leaf-used-as-ca.pem"
cat byleaf.pem notca.pem >"$OUT/issued-by-leaf-chain.pem"
# Self-signed server certificate (CA:FALSE), the kind pinned with --allow-leaf-anchor.
selfsign server.key "/CN=selfsigned.trustflow.test" server.ext "$OUT/self-signed-leaf.pem"
# Weak keys and algorithms.
openssl genrsa -out rsa1024.key 1024 2>/dev/null
openssl req -new -key rsa1024.key -subj "/CN=rsa1024.trustflow.test" -out rsa1024.csr
sign rsa1024.csr inter client.ext "$OUT/rsa1024-client.pem"
openssl ecparam -name secp224r1 -genkey -noout -out p224.key
openssl req -new -key p224.key -subj "/CN=p224.trustflow.test" -out p224.csr
sign p224.csr inter client.ext "$OUT/ecdsa-p224-client.pem"
openssl req -new -key client.key -subj "/CN=sha1.trustflow.test" -out sha1.csr
openssl x509 -req -in sha1.csr -CA inter.pem -CAkey inter.key -CAcreateserial -days $DAYS -sha1 \
	-extfile client.ext -extensions ext -out "$OUT/sha1-signed-client.pem" 2>/dev/null
# Certificate and key that do not belong together.
cat client.pem "$OUT/rsa-client-key-pkcs1.pem" >"$OUT/key-does-not-match-cert.pem"

# Broken encodings.
openssl x509 -in client.pem -outform DER -out client.der
head -c 200 client.der >"$OUT/truncated.der"
head -n 5 client.pem >"$OUT/truncated.pem" # no END line
printf '%s\n' "-----BEGIN CERTIFICATE-----" "this is not base64 at all!" "-----END CERTIFICATE-----" >"$OUT/garbage.pem"
printf 'not a certificate, not a key, just text\n' >"$OUT/garbage.txt"
# Base64 without PEM armour.
openssl base64 -in client.der -out "$OUT/client-base64-no-armour.txt"
# An OpenSSH key (shape only).
{
	echo "-----BEGIN OPENSSH PRIVATE KEY-----"
	printf 'openssh-key-v1\000none\000none' | openssl base64
	echo "-----END OPENSSH PRIVATE KEY-----"
} >"$OUT/openssh-key.pem"

# --- what openssl says about client.pem, for the summary tests ------------------
{
	openssl x509 -in client.pem -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' | tr 'A-F' 'a-f'
	printf 'sha256/%s\n' "$(openssl x509 -in client.pem -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | openssl base64 -A)"
	openssl x509 -in client.pem -noout -serial | sed 's/.*=//' | tr 'A-F' 'a-f' | sed 's/^0*//'
} >"$OUT/client-openssl-summary.txt"

# --- seed corpora of the fuzz targets (go test fuzz v1 files) -------------------
python3 - "$OUT" <<'PYEOF'
import hashlib, os, sys

out = sys.argv[1]

def lit(b):
    s = "".join(chr(c) if 0x20 <= c < 0x7f and c not in (0x22, 0x5c) else "\\x%02x" % c for c in b)
    return '"' + s + '"'

def seed(target, name, *values):
    d = os.path.join(out, "fuzz", target)
    os.makedirs(d, exist_ok=True)
    lines = ["go test fuzz v1"]
    for v in values:
        lines.append(("[]byte(%s)" if isinstance(v, bytes) else "string(%s)") % lit(v if isinstance(v, bytes) else v.encode()))
    with open(os.path.join(d, name), "w") as f:
        f.write("\n".join(lines) + "\n")

def data(name):
    with open(os.path.join(out, name), "rb") as f:
        return f.read()

bad = ["garbage.pem", "garbage.txt", "truncated.der", "truncated.pem", "client-base64-no-armour.txt",
       "key-does-not-match-cert.pem", "ca-without-basic-constraints.pem", "leaf-used-as-ca.pem",
       "csr-bad-signature.pem", "openssh-key.pem"]
for n in bad + ["client-chain.pem", "chain.p7b", "chain-p7-in-certificate-block.pem", "trusted-certificate.pem"]:
    seed("FuzzParseCertificates", n, data(n))
for n in bad + ["client-key-pkcs8-aes256.pem", "client-key-sec1-with-params.pem", "client-key-legacy-encrypted.pem",
                "client-key-pkcs8-des3.pem", "x25519-key.pem"]:
    seed("FuzzParsePrivateKey", n, data(n), b"trustflow-key-pass")
for n in bad + ["client-legacy-rc2.p12", "client-modern.p12", "certs-only.p12", "pbmac1-rfc9579-a1.p12"]:
    seed("FuzzParsePKCS12", n, data(n), "trustflow-p12-pass")
for n in bad + ["client.csr", "client.csr.der"]:
    seed("FuzzParseCSR", n, data(n))
for i, s in enumerate(["CN=svc,O=Acme\\, Inc.,OU=IT,C=US", "CN=\\", "C=USA", "CN=a+CN=b", "/CN=a/O=b",
                       "CN=svc,1.2.3.4.5=x", "CN=#00", "CN=\\ff\\fe"]):
    seed("FuzzParseSubject", "seed-%d" % i, s)
PYEOF
