#!/usr/bin/env bash
# TLS conformance of moat's server mode, judged by tools nobody here wrote.
#
# Makes a fresh CA and certificates with openssl, starts `moat server` on loopback in front
# of a small echo backend — once with plain TLS (--no-client-auth), once with mutual TLS
# (--client-ca) — and scans both with testssl.sh; scripts/testssl_verdict.py judges each
# report. sslyze then checks both against Mozilla's "intermediate" TLS configuration (with
# a client certificate for the mutual-TLS one), and a third instance with --min-tls 1.3
# against "modern". Fails (exit 1, findings printed) on any testssl finding of MEDIUM or
# worse that the verdict's allow-list does not accept, on a scan that did not complete, on
# an sslyze verdict other than compliant, and if moat dies or does not exit cleanly.
#
# Usage: scripts/conformance.sh [--moat PATH] [--out DIR] [--cert-days N] [--no-sslyze]
#   --moat PATH     the moat binary to test (default: `cargo build`, then target/debug/moat)
#   --out DIR       keep certificates, logs and reports in DIR (default: a temporary
#                   directory, removed after a pass and kept, with its path printed, after
#                   a failure)
#   --cert-days N   lifetime of the server certificate (default 90: testssl flags fewer
#                   than 60 days left and more than 825 in all, accepting both as findings
#                   about the test certificate; sslyze's Mozilla profiles fail above 366,
#                   and above 90 for "modern")
#   --no-sslyze     skip the second opinion
# Environment: TESTSSL and SSLYZE name the programs when they are not on the PATH as
# `testssl`/`testssl.sh` and `sslyze`.
#
# Only loopback is scanned; every process this script starts is stopped by its PID.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
moat=
out=
cert_days=90
use_sslyze=1
while [ $# -gt 0 ]; do
  case $1 in
    --moat) moat=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --cert-days) cert_days=$2; shift 2 ;;
    --no-sslyze) use_sslyze=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "conformance: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "conformance: $*" >&2; exit 1; }

# --- the tools ---------------------------------------------------------------------------
testssl=${TESTSSL:-$(command -v testssl || command -v testssl.sh || true)}
[[ -n $testssl && -x $testssl ]] || fail "testssl.sh is not installed${TESTSSL:+ at $TESTSSL}; install it (Debian/Ubuntu: apt-get install testssl.sh) or set TESTSSL=/path/to/testssl.sh"
for tool in openssl python3 timeout; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (Debian/Ubuntu: apt-get install openssl python3 coreutils)"
done
if [ "$use_sslyze" = 1 ]; then
  sslyze=${SSLYZE:-$(command -v sslyze || true)}
  [[ -n $sslyze && -x $sslyze ]] || fail "sslyze is not installed${SSLYZE:+ at $SSLYZE}; install it (python3 -m venv ~/.venvs/sslyze && ~/.venvs/sslyze/bin/pip install sslyze==6.3.1, then SSLYZE=~/.venvs/sslyze/bin/sslyze), or give --no-sslyze"
fi
if [ -z "$moat" ]; then
  (cd "$root" && cargo build --quiet --bin moat)
  moat=${CARGO_TARGET_DIR:-$root/target}/debug/moat
fi
[ -x "$moat" ] || fail "no moat binary at $moat"
moat=$(cd "$(dirname "$moat")" && pwd)/$(basename "$moat")

# --- the work directory and the processes we own ----------------------------------------
if [ -n "$out" ]; then
  mkdir -p "$out"
  dir=$(cd "$out" && pwd)
  keep=1
else
  dir=$(mktemp -d "${TMPDIR:-/tmp}/moat-conformance.XXXXXX")
  keep=0
fi
passed=0
# Stops what this script started and still runs: its own background jobs, by PID (bash
# lists only children it has not seen end, so no reused PID is signalled).
cleanup() {
  local pid
  for pid in $(jobs -rp); do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$keep" = 0 ] && [ "$passed" = 1 ]; then
    rm -rf "$dir"
  else
    echo "conformance: certificates, logs and reports are in $dir" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to 20 s for a line matching REGEX in FILE, written by process PID; prints it.
wait_line() {
  local file=$1 regex=$2 pid=$3 i
  for ((i = 0; i < 400; i++)); do
    grep -m1 -E "$regex" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; fail "process $pid exited before printing /$regex/"; }
    sleep 0.05
  done
  cat "$file" >&2
  fail "no line /$regex/ in $file after 20 s"
}

# --- certificates: a CA, a server certificate for localhost/127.0.0.1/::1, a client one ---
pki() {
  cd "$dir"
  key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
  key ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 365 \
    -subj "/O=moat conformance/CN=moat conformance CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
  issue() { # NAME SUBJECT EXTENSIONS DAYS
    key "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAserial ca.srl -CAcreateserial \
      -sha256 -days "$4" -extfile "$1.ext" -out "$1.pem"
  }
  issue server "/O=moat conformance/CN=localhost" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" "$cert_days"
  issue client "/O=moat conformance/CN=conformance-client" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth" 90
}
(pki) >"$dir/pki.log" 2>&1 || { cat "$dir/pki.log" >&2; fail "openssl could not make the certificates"; }

# --- the backend: echoes what it gets ------------------------------------------------------
python3 -c '
import socketserver
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass
socketserver.ThreadingTCPServer.daemon_threads = True
server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
print("echo backend on", server.server_address[1], flush=True)
server.serve_forever()
' >"$dir/backend.log" 2>&1 &
backend_pid=$!
backend_port=$(wait_line "$dir/backend.log" '^echo backend on [0-9]+$' "$backend_pid" | awk '{print $4}')

# --- the moat instances --------------------------------------------------------------------
declare -A moat_pid moat_port
start_moat() { # NAME EXTRA-FLAGS...
  local name=$1 pid line
  shift
  "$moat" server --listen 127.0.0.1:0 --target "127.0.0.1:$backend_port" \
    --cert "$dir/server.pem" --key "$dir/server.key" "$@" >"$dir/moat-$name.out" 2>"$dir/moat-$name.log" &
  pid=$!
  line=$(wait_line "$dir/moat-$name.log" 'listening on 127\.0\.0\.1:[0-9]+' "$pid")
  moat_pid[$name]=$pid
  moat_port[$name]=$(sed -E 's/.*listening on 127\.0\.0\.1:([0-9]+).*/\1/' <<<"$line")
}
start_moat plain --no-client-auth
start_moat mtls --client-ca "$dir/ca.pem"
if [ "$use_sslyze" = 1 ]; then start_moat tls13 --no-client-auth --min-tls 1.3; fi

testssl_version=$("$testssl" --version 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -o -m1 'testssl[.sh]* *[0-9][0-9.a-z+-]*' | tr -s ' ' || true)
echo "conformance: $("$moat" --version), ${testssl_version:-testssl (version unknown)}, $(openssl version | cut -d' ' -f1-2)"
echo "conformance: plain TLS on 127.0.0.1:${moat_port[plain]}, mutual TLS on 127.0.0.1:${moat_port[mtls]}; server certificate valid $cert_days days"

# --- testssl.sh, both instances at once ----------------------------------------------------
# The default run (everything but -E and -g): protocols, cipher categories, forward secrecy,
# server preferences, server defaults and certificate, vulnerabilities, each cipher, client
# simulations. --add-ca: a real client trusts the test CA, so the chain is judged as theirs.
run_testssl() { # NAME (run in the background: exec, so that $! is timeout, which passes
  # a TERM on to testssl)
  exec timeout 900 "$testssl" --quiet --color 0 --warnings batch --add-ca "$dir/ca.pem" \
    --jsonfile "$dir/testssl-$1.json" "127.0.0.1:${moat_port[$1]}" >"$dir/testssl-$1.txt" 2>&1
}
scan_start=$SECONDS
run_testssl plain &
scan_plain=$!
run_testssl mtls &
scan_mtls=$!
# testssl's exit status counts the ambiguous results and errors it met; its report decides.
wait "$scan_plain" || echo "conformance: testssl plain exited with status $?"
wait "$scan_mtls" || echo "conformance: testssl mtls exited with status $?"
echo "conformance: testssl took $((SECONDS - scan_start)) s"

verdict=0
# Resumption, checked apart from testssl: s_client's input is held open for a second, so
# the TLS 1.3 ticket that comes after the handshake is read and saved (see
# testssl_verdict.py on testssl's own check of it).
resumes() { # PORT S_CLIENT-FLAGS...
  local session="$dir/own-session.pem"
  rm -f "$session"
  sleep 1 | openssl s_client -connect "127.0.0.1:$1" -servername localhost "${@:2}" \
    -sess_out "$session" >/dev/null 2>&1 || return 1
  [ -s "$session" ] || return 1
  openssl s_client -connect "127.0.0.1:$1" -servername localhost "${@:2}" -sess_in "$session" \
    </dev/null 2>/dev/null | grep -q '^Reused'
}
resumption=()
if resumes "${moat_port[plain]}" -tls1_3 && resumes "${moat_port[plain]}" -tls1_2 -no_ticket; then
  resumption=(--resumption-verified)
  echo "conformance: s_client resumed a TLS 1.3 ticket and a TLS 1.2 session ID on plain"
else
  echo "conformance: s_client could not resume a session on plain (TLS 1.3 ticket or TLS 1.2 session ID)"
  verdict=1
fi
python3 "$root/scripts/testssl_verdict.py" plain "$dir/testssl-plain.json" "${resumption[@]}" || verdict=1
python3 "$root/scripts/testssl_verdict.py" mtls "$dir/testssl-mtls.json" --client-auth || verdict=1

# --- sslyze: Mozilla's TLS configurations ---------------------------------------------------
if [ "$use_sslyze" = 1 ]; then
  run_sslyze() { # NAME PROFILE EXTRA-FLAGS...
    local name=$1 profile=$2 status=0
    shift 2
    # localhost:PORT{127.0.0.1}: connect to 127.0.0.1, send and verify the name localhost.
    timeout 300 "$sslyze" --mozilla_config "$profile" --certinfo_ca_file "$dir/ca.pem" \
      --json_out "$dir/sslyze-$name.json" "$@" "localhost:${moat_port[$name]}{127.0.0.1}" \
      >"$dir/sslyze-$name.txt" 2>&1 || status=$?
    # The compliance section: its verdict line, then one line per issue.
    sed -n '/Checking results against/,$p' "$dir/sslyze-$name.txt" | tail -n +2 |
      grep -v '^\s*$' | sed -E "s/^ *localhost:[0-9]+: //; s/^ +/    /" |
      sed "1s/^/sslyze $name against Mozilla's \"$profile\": /"
    if [ "$status" != 0 ]; then
      echo "  FAILED   sslyze $name: not compliant with Mozilla's \"$profile\" configuration (exit status $status); see $dir/sslyze-$name.txt"
      verdict=1
    fi
  }
  run_sslyze plain intermediate
  run_sslyze mtls intermediate --cert "$dir/client.pem" --key "$dir/client.key"
  run_sslyze tls13 modern
  # Two checks outside sslyze's default set: 0-RTT must be refused (moat keeps it off), and
  # TLS 1.2 resumption, reported only (sslyze counts a ticket resumption only when the server
  # sends no new ticket, and rustls sends a fresh one each time; docs/ROBUSTNESS.md).
  timeout 300 "$sslyze" --mozilla_config disable --early_data --resum \
    --json_out "$dir/sslyze-plain-extra.json" "localhost:${moat_port[plain]}{127.0.0.1}" \
    >"$dir/sslyze-plain-extra.txt" 2>&1 || true
  python3 - "$dir/sslyze-plain-extra.json" <<'EOF' || verdict=1
import json, sys
try:
    scan = json.load(open(sys.argv[1]))["server_scan_results"][0]["scan_result"]
    early = scan["tls_1_3_early_data"]["result"]["supports_early_data"]
    resum = scan["session_resumption"]["result"]
except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
    print(f"  FAILED   sslyze plain: no early-data/resumption result ({e!r})")
    sys.exit(1)
ids = f"{resum['session_id_successful_resumptions_count']}/{resum['session_id_attempted_resumptions_count']}"
tickets = f"{resum['tls_ticket_successful_resumptions_count']}/{resum['tls_ticket_attempted_resumptions_count']}"
print(f"sslyze plain: TLS 1.3 early data {'ACCEPTED' if early else 'refused (OK)'}; "
      f"TLS 1.2 resumption by session ID {ids}, by ticket {tickets} (as sslyze counts it)")
if early:
    print("  FAILED   sslyze plain: the server accepts 0-RTT early data")
    sys.exit(1)
EOF
  python3 -c 'import json, sys; print("conformance: sslyze", json.load(open(sys.argv[1]))["sslyze_version"])' \
    "$dir/sslyze-plain.json" 2>/dev/null || true
fi

# --- moat must have lived through it all, and must stop cleanly -----------------------------
for name in "${!moat_pid[@]}"; do
  pid=${moat_pid[$name]}
  if ! kill -0 "$pid" 2>/dev/null; then
    status=0
    wait "$pid" || status=$?
    echo "  FAILED   moat $name died during the scans (exit status $status); its log: $dir/moat-$name.log"
    verdict=1
    continue
  fi
  kill -TERM "$pid"
  status=0
  wait "$pid" || status=$?
  if [ "$status" != 0 ]; then
    echo "  FAILED   moat $name exited with status $status after SIGTERM; its log: $dir/moat-$name.log"
    verdict=1
  fi
  if grep -q -i 'panicked' "$dir/moat-$name.log"; then
    echo "  FAILED   moat $name panicked: $(grep -m1 -i panicked "$dir/moat-$name.log")"
    verdict=1
  fi
  tunnels=$(grep -c 'tunnel closed' "$dir/moat-$name.log" || true)
  echo "conformance: moat $name served the scans ($tunnels tunnel lines logged) and exited with status $status"
done

if [ "$verdict" = 0 ]; then
  passed=1
  echo "conformance: passed"
else
  echo "conformance: FAILED (see the findings above)"
  exit 1
fi
