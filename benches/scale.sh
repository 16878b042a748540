#!/usr/bin/env bash
# What idle tunnels cost, in moat and in the kernel, at the largest count one process may
# hold on this machine: the figures behind docs/SCALING.md's plan for 100,000 tunnels.
#
# Starts the bench backend and one moat (server mode, mutual TLS, release build), opens N
# echo-checked tunnels with `moat-bench load --mode idle` and, while they are held, reads:
#   - moat's RSS and open descriptors (/proc/PID/status, /proc/PID/fd);
#   - the kernel's slab caches a TCP socket takes (TCP, TCPv6, sock_inode_cache, filp,
#     dentry, eventpoll_epi, eventpoll_pwq; /proc/slabinfo, which needs root) and the
#     pages TCP holds for socket buffers (/proc/net/sockstat), before and during.
# On loopback each tunnel is four sockets (the client's, moat's two, the backend's); moat
# owns two of them, so moat's kernel cost per tunnel is half of the growth per tunnel.
#
# Usage: benches/scale.sh [--tunnels N] [--no-build]     (default N = 9000)
# Prints one table; exits non-zero if a tunnel failed or moat died.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TUNNELS=9000
BUILD=1
while [ $# -gt 0 ]; do
    case $1 in
        --tunnels) TUNNELS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "scale: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
die() { echo "scale: $*" >&2; exit 1; }

# moat holds two descriptors a tunnel plus a few of its own; the generator one a tunnel.
ulimit -n "$(ulimit -Hn)"
LIMIT=$(ulimit -n)
[ $((TUNNELS * 2 + 100)) -le "$LIMIT" ] || die "$TUNNELS tunnels need $((TUNNELS * 2 + 100)) descriptors; this machine allows $LIMIT per process"
[ -r /proc/slabinfo ] || die "/proc/slabinfo is not readable: run as root for the kernel's figures"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/bench}
BIN=$CARGO_TARGET_DIR/release
if [ "$BUILD" = 1 ]; then cargo build --quiet --release -p moat -p moat-bench; fi
MOAT=$BIN/moat
BENCH=$BIN/moat-bench

DIR=$(mktemp -d "${TMPDIR:-/tmp}/moat-scale.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

"$BENCH" certs "$DIR/certs" >/dev/null
"$BENCH" backend 127.0.0.1 >"$DIR/backend.addrs" 2>"$DIR/backend.log" &
PIDS+=("$!")
for _ in $(seq 100); do
    grep -q '^echo ' "$DIR/backend.addrs" && break
    sleep 0.1
done
ECHO=$(awk '$1 == "echo" { print $2 }' "$DIR/backend.addrs")
[ -n "$ECHO" ] || die "the backend did not start: $(cat "$DIR/backend.log")"

"$MOAT" server --listen 127.0.0.1:0 --target "$ECHO" \
    --cert "$DIR/certs/server.pem" --key "$DIR/certs/server.key" \
    --client-ca "$DIR/certs/ca.pem" --max-conns $((TUNNELS + 500)) 2>"$DIR/moat.log" &
MOAT_PID=$!
PIDS+=("$MOAT_PID")
for _ in $(seq 100); do
    grep -q 'listening on' "$DIR/moat.log" && break
    kill -0 "$MOAT_PID" 2>/dev/null || die "moat did not start: $(cat "$DIR/moat.log")"
    sleep 0.1
done
ADDR=$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$DIR/moat.log" | head -1)
[ -n "$ADDR" ] || die "moat is not listening: $(cat "$DIR/moat.log")"

# Bytes the slab caches of a socket hold, and TCP's buffer pages, system-wide.
slab_bytes() {
    awk '$1 ~ /^(TCP|TCPv6|sock_inode_cache|filp|dentry|eventpoll_epi|eventpoll_pwq)$/ {
        sum += $2 * $4 } END { print sum }' /proc/slabinfo
}
tcp_mem_bytes() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) * 4096 }' /proc/net/sockstat; }
tcp_inuse() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "inuse") print $(i + 1) }' /proc/net/sockstat; }
rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$MOAT_PID/status"; }
fds() { find "/proc/$MOAT_PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }

sleep 1
SLAB0=$(slab_bytes); MEM0=$(tcp_mem_bytes); INUSE0=$(tcp_inuse); RSS0=$(rss_kib); FDS0=$(fds)

HOLD=20
"$BENCH" load --mode idle --addr "$ADDR" --ca "$DIR/certs/ca.pem" \
    --cert "$DIR/certs/client.pem" --key "$DIR/certs/client.key" \
    --target-pid "$MOAT_PID" --tunnels "$TUNNELS" --concurrency 32 \
    --warmup 2s --duration "${HOLD}s" >"$DIR/load.out" 2>"$DIR/load.log" &
LOAD_PID=$!
PIDS+=("$LOAD_PID")

# Wait until every tunnel is open, then sample while they are held.
started=$SECONDS
while [ "$(fds)" -lt $((FDS0 + 2 * TUNNELS)) ]; do
    kill -0 "$LOAD_PID" 2>/dev/null || die "the generator ended early: $(cat "$DIR/load.log" "$DIR/load.out")"
    [ $((SECONDS - started)) -lt 300 ] || die "the tunnels did not all open within 300 s"
    sleep 0.5
done
sleep 3
SLAB1=$(slab_bytes); MEM1=$(tcp_mem_bytes); INUSE1=$(tcp_inuse); RSS1=$(rss_kib); FDS1=$(fds)
wait "$LOAD_PID" || die "the generator failed: $(cat "$DIR/load.log")"
RESULT=$(grep '^RESULT' "$DIR/load.out") || die "no RESULT line: $(cat "$DIR/load.out")"
kill -0 "$MOAT_PID" 2>/dev/null || die "moat died: $(tail -5 "$DIR/moat.log")"

field() { tr ' ' '\n' <<<"$RESULT" | sed -n "s/^$1=//p"; }
ALIVE=$(field alive)
[ "$ALIVE" = "$TUNNELS" ] || die "only $ALIVE of $TUNNELS tunnels were still alive"

awk -v n="$TUNNELS" -v rss0="$RSS0" -v rss1="$RSS1" -v fds0="$FDS0" -v fds1="$FDS1" \
    -v slab0="$SLAB0" -v slab1="$SLAB1" -v mem0="$MEM0" -v mem1="$MEM1" \
    -v in0="$INUSE0" -v in1="$INUSE1" -v per="$(field bytes_per_tunnel)" 'BEGIN {
    printf "| what (%d idle tunnels, mutual TLS) | figure |\n|---|---|\n", n
    printf "| moat RSS | %.1f MiB -> %.1f MiB |\n", rss0 / 1024, rss1 / 1024
    printf "| moat RSS per tunnel (the generator'"'"'s median) | %.2f KiB |\n", per / 1024
    printf "| moat descriptors | %d -> %d (%.2f per tunnel) |\n", fds0, fds1, (fds1 - fds0) / n
    printf "| TCP sockets in the kernel | +%d (%.1f per tunnel: client, moat x2, backend) |\n", in1 - in0, (in1 - in0) / n
    printf "| kernel slab per socket | %.2f KiB |\n", (slab1 - slab0) / (in1 - in0) / 1024
    printf "| kernel slab per tunnel, moat'"'"'s two sockets | %.2f KiB |\n", 2 * (slab1 - slab0) / (in1 - in0) / 1024
    printf "| TCP buffer memory, all sockets | %+.1f MiB |\n", (mem1 - mem0) / 1048576
    printf "| moat + its kernel share per idle tunnel | %.2f KiB |\n", per / 1024 + 2 * (slab1 - slab0) / (in1 - in0) / 1024
}'
