#!/usr/bin/env bash
# Regenerates moat's development certificates: a CA, a server certificate for
# localhost / 127.0.0.1 / ::1, and a client certificate, all ECDSA P-256.
# FOR DEVELOPMENT ONLY: the private keys are public. Run from anywhere; writes next to itself.
set -euo pipefail
cd "$(dirname "$0")"
days=36500   # long-lived on purpose: `moat demo` embeds these and must keep working
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

key ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/O=moat development/CN=moat development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem

issue() { # name subject extensions
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$tmp/$1.csr"
  printf '%s\n' "$3" > "$tmp/$1.ext"
  openssl x509 -req -in "$tmp/$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -CAserial "$tmp/ca.srl" \
    -sha256 -days "$days" -extfile "$tmp/$1.ext" -out "$1.pem"
}

issue server "/O=moat development/CN=localhost" \
"basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"

issue client "/O=moat development/CN=moat-demo-client" \
"basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

chmod 644 ./*.key   # development keys, readable on purpose
echo "wrote ca.pem ca.key server.pem server.key client.pem client.key in $(pwd)"
