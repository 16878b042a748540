#!/bin/sh
# Where moat and the tokio variant spend their CPU, and how far the loop could still move
# the moat / tokio ratio.
#
#   benches/profile.sh [SCENARIO ...]      (default: handshake handshake-mtls resume
#                                           resume-mtls upload-1 download-1 rr-100)
#
# For each scenario it first measures the moat / tokio ratio side by side (moat-bench run,
# 3 rounds, median), then profiles one run of each target with `perf record` and sorts the
# samples into kernel, cryptography (aws-lc), rustls + webpki, libc (copies and the
# allocator), the loop or runtime (moat, mio, tokio), and the rest.
#
# The last column is the ceiling: the ratio moat would reach if everything but the kernel,
# the cryptography and rustls cost it nothing at all, the kernel work staying what it is:
# ceiling = ratio / (kernel + crypto + rustls share of moat's samples).
#
# Needs `perf` (Debian: linux-perf) and permission to profile a process you own
# (kernel.perf_event_paranoid <= 1, or root). Scratch files go to benches/results/profile/.
set -eu
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/bench}"
export CARGO_TARGET_DIR
command -v perf >/dev/null || { echo "profile.sh: perf not found (apt-get install linux-perf)" >&2; exit 2; }
cargo build --release -p moat -p moat-bench
bench="$CARGO_TARGET_DIR/release/moat-bench"
out="$PWD/benches/results/profile"
mkdir -p "$out"

[ $# -gt 0 ] || set -- handshake handshake-mtls resume resume-mtls upload-1 download-1 rr-100

# Category shares (percent of samples) from `perf report --sort dso,sym`.
shares() {
    perf report -i "$1" --no-children -g none --sort dso,sym --stdio --percent-limit 0 2>/dev/null |
        awk '
        /^ +[0-9.]+%/ {
            pct = $1; sub("%", "", pct); dso = $2; kind = $3; sym = $4
            if (kind == "[k]") c = "kernel"
            else if (sym ~ /^(aws_lc|Lcurve|Lbignum|_?_?ecp_nistz256|bignum)/) c = "crypto"
            else if (sym ~ /rustls|webpki/) c = "rustls"
            else if (dso ~ /^libc/) c = "libc"
            else if (sym ~ /^(moat|mio|slab|tokio)/) c = "loop"
            else c = "other"
            share[c] += pct
        }
        END {
            printf "%5.1f %5.1f %5.1f %5.1f %5.1f %5.1f\n", share["kernel"], share["crypto"],
                share["rustls"], share["libc"], share["loop"], share["other"]
        }'
}

# Profiles one run of SCENARIO against TARGET; prints the shares.
profile() {
    data="$out/$1-$2.data"
    "$bench" run --scenarios "$1" --targets "$2" --rounds 1 --warmup 1s --duration 6s \
        --out "$out/run-$1-$2" >"$out/run-$1-$2.log" 2>&1 &
    run=$!
    case $2 in moat) name=moat ;; *) name=moat-tokio-prox ;; esac
    pid=""
    for _ in $(seq 100); do
        pid=$(pgrep -P "$run" -x "$name" | head -n 1 || true)
        [ -n "$pid" ] && break
        sleep 0.1
    done
    [ -n "$pid" ] || { echo "profile.sh: $2 did not start (see $out/run-$1-$2.log)" >&2; exit 1; }
    sleep 2 # the warm-up, and a second into the window
    perf record -F 999 -o "$data" -p "$pid" -- sleep 3 >/dev/null 2>&1
    wait "$run"
    shares "$data"
}

printf '%-15s %-6s %6s %6s %6s %6s %6s %6s %7s %8s\n' scenario target kernel crypto rustls \
    libc loop other ratio ceiling
for scenario in "$@"; do
    "$bench" run --scenarios "$scenario" --targets moat,tokio --out "$out/ratio-$scenario" \
        >"$out/ratio-$scenario.log" 2>&1
    ratio=$(awk -v s="$scenario" '$1 == s && $2 == "moat" { sub("×", "", $8); print $8 }' \
        "$out/ratio-$scenario.log")
    for target in moat tokio; do
        set -- $(profile "$scenario" "$target")
        if [ "$target" = moat ]; then
            ceiling=$(awk -v r="$ratio" -v k="$1" -v c="$2" -v t="$3" \
                'BEGIN { printf "%.2f×", r / ((k + c + t) / 100) }')
            shown="${ratio}×"
        else
            ceiling="" shown=""
        fi
        printf '%-15s %-6s %5s%% %5s%% %5s%% %5s%% %5s%% %5s%% %7s %8s\n' "$scenario" "$target" \
            "$1" "$2" "$3" "$4" "$5" "$6" "$shown" "$ceiling"
    done
done
