#!/bin/sh
# Make the offline Places service's TEST-ONLY TLS material (see README.md).
# Re-run from any directory: writes into the directory holding this script.
set -eu
cd "$(dirname "$0")"
DAYS=7300 # 20 years: tests must not start failing because a cert expired
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ec_key() { # PKCS#8 EC P-256 private key
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

# Development CA.
ec_key ca.key
cat >"$tmp/ca.ext" <<'X'
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
X
openssl req -new -key ca.key -subj "/CN=proxy-herd test CA (do not trust)" -out "$tmp/ca.csr"
openssl x509 -req -in "$tmp/ca.csr" -signkey ca.key -days "$DAYS" -sha256 \
    -extfile "$tmp/ca.ext" -set_serial 0x$(openssl rand -hex 8) -out ca.pem

# Server certificate for localhost and 127.0.0.1, signed by the CA.
ec_key server.key
cat >"$tmp/leaf.ext" <<'X'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
X
openssl req -new -key server.key -subj "/CN=localhost" -out "$tmp/server.csr"
openssl x509 -req -in "$tmp/server.csr" -CA ca.pem -CAkey ca.key -days "$DAYS" -sha256 \
    -extfile "$tmp/leaf.ext" -set_serial 0x$(openssl rand -hex 8) -out "$tmp/leaf.pem"
# The chain a server sends: leaf then CA (clients must still trust ca.pem themselves).
cat "$tmp/leaf.pem" ca.pem >server.pem

# A self-signed pair for the same names, which nobody trusts: for tests that a
# client rejects an unknown issuer.
ec_key untrusted.key
cat >"$tmp/untrusted.ext" <<'X'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
X
openssl req -new -key untrusted.key -subj "/CN=localhost (untrusted)" -out "$tmp/untrusted.csr"
openssl x509 -req -in "$tmp/untrusted.csr" -signkey untrusted.key -days "$DAYS" -sha256 \
    -extfile "$tmp/untrusted.ext" -set_serial 0x$(openssl rand -hex 8) -out untrusted.pem

openssl verify -CAfile ca.pem "$tmp/leaf.pem"
