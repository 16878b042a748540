#!/usr/bin/env bash
# benches/soak.sh: one moat under a mixed load for a long time (30 minutes by default),
# sampled every 10 s; then the load stops and every count must come back to where it began.
#
#   benches/soak.sh                      # 30 minutes
#   benches/soak.sh --duration 120       # a quick try (or SOAK_SECONDS=120)
#   benches/soak.sh --help
#
# One moat (server mode, mutual TLS, --workers 2, --status) in front of `moat-bench backend
# --verify`, and at the same time, for the whole run, one `moat-bench load` process each for:
# full handshakes, resumed handshakes, request/response, bulk upload, bulk download (all
# byte-checked), idle tunnels held open, a slowloris flood and a garbage flood. Every 30 s
# moat gets SIGHUP, every 120 s SIGUSR1. Before each SIGHUP the config file gains or loses an
# allow-list on the mtls service, so every reload builds that service new TLS state (ticket
# keys, chain cache) and keeps the other four services' as they were. Afterwards
# benches/soak_report.py checks the samples and writes the verdict and the chart. Exit
# status 0 only if every check passed.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${SOAK_SECONDS:-1800}
OUT=$ROOT/target/soak
SVG=$ROOT/docs/soak.svg
IDLE=3000
SLOWLORIS=600
WORKERS=2
BUILD=1

SAMPLE_EVERY=10    # seconds between samples
HUP_EVERY=30       # seconds between reloads
USR1_EVERY=120     # seconds between SIGUSR1 (first at 30 s)
GEN_GRACE=240      # after the load's end, how long the generators may take to report
DRAIN_LIMIT=60     # after they exit, how long moat may take to close every tunnel

usage() {
    cat <<EOF
Usage: benches/soak.sh [options]

  --duration SECS  how long the load runs (default 1800, or \$SOAK_SECONDS); also 30m, 120s
  --out DIR        samples, logs and results (default target/soak; emptied first)
  --svg FILE       the chart (default docs/soak.svg)
  --idle N         idle tunnels held open for the whole run (default $IDLE)
  --slowloris N    slowloris connections (default $SLOWLORIS)
  --workers N      moat's --workers (default $WORKERS)
  --no-build       use the binaries already built in target/release
EOF
}

die() {
    echo "soak: $*" >&2
    exit 2
}

seconds_of() {
    case $1 in
        *m) echo $((${1%m} * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}

while [ $# -gt 0 ]; do
    case $1 in
        --duration) [ $# -ge 2 ] || die "--duration needs a value"; DURATION=$2; shift 2 ;;
        --out) [ $# -ge 2 ] || die "--out needs a value"; OUT=$2; shift 2 ;;
        --svg) [ $# -ge 2 ] || die "--svg needs a value"; SVG=$2; shift 2 ;;
        --idle) [ $# -ge 2 ] || die "--idle needs a value"; IDLE=$2; shift 2 ;;
        --slowloris) [ $# -ge 2 ] || die "--slowloris needs a value"; SLOWLORIS=$2; shift 2 ;;
        --workers) [ $# -ge 2 ] || die "--workers needs a value"; WORKERS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done
DURATION=$(seconds_of "$DURATION")
for n in "$DURATION" "$IDLE" "$SLOWLORIS" "$WORKERS"; do
    [[ $n =~ ^[0-9]+$ ]] || die "not a whole number: $n"
done
[ "$DURATION" -ge 60 ] || die "--duration must be at least 60 s"
# moat holds two descriptors per tunnel, the generators one; the hard limit here is 20,000.
[ $((IDLE * 2 + SLOWLORIS + 2000)) -le 19000 ] || die "--idle $IDLE and --slowloris $SLOWLORIS need too many descriptors"

# ---------------------------------------------------------------------------------------
# Build.

BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [ "$BUILD" = 1 ]; then
    cargo build --release -p moat -p moat-bench
fi
MOAT=$BIN/moat
BENCH=$BIN/moat-bench
{ [ -x "$MOAT" ] && [ -x "$BENCH" ]; } || die "no $MOAT or $BENCH (build them, or drop --no-build)"

# Every process inherits the hard open-file limit as its soft limit.
ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------------------------------
# The output directory: emptied only if it is one of ours.

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -n "$(ls -A "$OUT")" ]; then
    [ -e "$OUT/.soak" ] || die "$OUT is not empty and not a soak directory; name another with --out"
    find "$OUT" -mindepth 1 -delete
fi
touch "$OUT/.soak"
mkdir -p "$OUT/certs"

# ---------------------------------------------------------------------------------------
# Processes we start, by PID; the EXIT trap stops the ones still running, and only those.

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        local alive=0
        for pid in "${PIDS[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { # seconds since the script started, with milliseconds
    local t=${EPOCHREALTIME/./}
    echo $(((t - T0) / 1000)) | awk '{ printf "%.3f", $1 / 1000 }'
}
event() { # name [detail]
    printf '%s,%s,%s\n' "$(now)" "$1" "${2:-}" >>"$OUT/events.csv"
}

T0=${EPOCHREALTIME/./}

# ---------------------------------------------------------------------------------------
# Certificates, backend, moat.

"$BENCH" certs "$OUT/certs" >/dev/null

"$BENCH" backend 127.0.0.1 --verify >"$OUT/backend.addrs" 2>"$OUT/backend.log" &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
for _ in $(seq 100); do
    [ "$(wc -l <"$OUT/backend.addrs")" -ge 4 ] && break
    kill -0 "$BACKEND_PID" 2>/dev/null || die "the backend did not start: $(cat "$OUT/backend.log")"
    sleep 0.1
done
backend_addr() { awk -v k="$1" '$1 == k { print $2 }' "$OUT/backend.addrs"; }
ECHO=$(backend_addr echo)
SINK=$(backend_addr sink)
SOURCE=$(backend_addr source)
{ [ -n "$ECHO" ] && [ -n "$SINK" ] && [ -n "$SOURCE" ]; } || die "the backend did not say its addresses"

CONFIG=$OUT/moat.toml
IDLE_TIMEOUT=$((DURATION + 900))s
CLIENT_CN="moat-bench client"

# write_config VARIANT: variant 1 gives the mtls service an allow-list, variant 0 none. Going
# from one to the other changes that service's TLS inputs: the reload gives it new ticket
# keys and a new chain cache, so its clients' tickets stop resuming once.
write_config() {
    local allow=""
    if [ "$1" = 1 ]; then allow="allow-cn = [\"$CLIENT_CN\"]"; fi
    local tls='cert = "certs/server.pem"
key = "certs/server.key"
client-ca = "certs/ca.pem"'
    cat >"$CONFIG.new" <<EOF
# Written by benches/soak.sh (variant $1).
log-level = "info"
workers = $WORKERS
status = "127.0.0.1:0"

[[server]]        # full and resumed handshakes, request/response
name = "mtls"
listen = "127.0.0.1:0"
target = "$ECHO"
$tls
$allow

[[server]]        # tunnels held open for the whole run
name = "idle"
listen = "127.0.0.1:0"
target = "$ECHO"
idle-timeout = "$IDLE_TIMEOUT"
$tls

[[server]]
name = "upload"
listen = "127.0.0.1:0"
target = "$SINK"
$tls

[[server]]
name = "download"
listen = "127.0.0.1:0"
target = "$SOURCE"
$tls

[[server]]        # slowloris and garbage
name = "flood"
listen = "127.0.0.1:0"
target = "$ECHO"
handshake-timeout = "5s"
$tls
EOF
    mv "$CONFIG.new" "$CONFIG"
}
write_config 0
"$MOAT" check --config "$CONFIG" >/dev/null

# moat's stderr goes through a filter that keeps everything but the per-tunnel lines (a
# few hundred a second here; the metrics count how each tunnel ended).
mkfifo "$OUT/moat.fifo"
grep -v --line-buffered ' tunnel closed: ' <"$OUT/moat.fifo" >"$OUT/moat.log" &
PIDS+=("$!")
"$MOAT" --config "$CONFIG" 2>"$OUT/moat.fifo" </dev/null &
MOAT_PID=$!
PIDS+=("$MOAT_PID")

listening() { # service -> IP:PORT from "NAME: listening on IP:PORT"
    sed -n "s/.* INFO  $1: listening on \([0-9.]*:[0-9]*\).*/\1/p" "$OUT/moat.log" | head -1
}
for _ in $(seq 150); do
    [ -n "$(listening flood)" ] && [ -n "$(listening status)" ] && break
    kill -0 "$MOAT_PID" 2>/dev/null || die "moat did not start: $(cat "$OUT/moat.log")"
    sleep 0.1
done
STATUS=$(listening status)
{ [ -n "$STATUS" ] && [ -n "$(listening flood)" ]; } || die "moat is not listening: $(cat "$OUT/moat.log")"

metrics() { curl -sf --max-time 5 "http://$STATUS/metrics"; }

# ---------------------------------------------------------------------------------------
# Sampling: one CSV line per sample.

CLK_TCK=$(getconf CLK_TCK)
echo "t_s,phase,alive,rss_kib,fds,threads,cpu_s,tunnels_open,tunnels_opened,tunnels_closed,handshakes,resumed,handshake_failures,reloads_ok,reloads_failed,buffers_in_use,buffers_spare,bytes_to_target,bytes_to_client,refusals,log_dropped" >"$OUT/samples.csv"

fd_count() { find "/proc/$MOAT_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

sample() { # phase [file to keep the metrics in]
    local t proc="" m="" alive=1 rss="" threads="" cpu="" fds=""
    t=$(now)
    if proc=$(cat "/proc/$MOAT_PID/status" 2>/dev/null) && [ -n "$proc" ]; then
        rss=$(awk '/^VmRSS:/ { print $2 }' <<<"$proc")
        threads=$(awk '/^Threads:/ { print $2 }' <<<"$proc")
        cpu=$(sed 's/.*) //' "/proc/$MOAT_PID/stat" | awk -v hz="$CLK_TCK" '{ printf "%.2f", ($12 + $13) / hz }')
        fds=$(fd_count)
    else
        alive=0
    fi
    m=$(metrics) || { m=""; alive=0; }
    if [ -n "${2:-}" ]; then printf '%s\n' "$m" >"$2"; fi
    local counts
    counts=$(awk '
        /^#/ || NF < 2 { next }
        { name = $1; sub(/\{.*/, "", name); s[name] += $NF }
        $1 ~ /^moat_config_reloads_total\{result="ok"\}/ { ok = $NF }
        $1 ~ /^moat_config_reloads_total\{result="failed"\}/ { failed = $NF }
        $1 ~ /^moat_plaintext_bytes_total\{.*direction="to_target"/ { tt += $NF }
        $1 ~ /^moat_plaintext_bytes_total\{.*direction="to_client"/ { tc += $NF }
        END {
            if (!("moat_tunnels_open" in s)) { print ",,,,,,,,,,,,,"; exit }
            printf "%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f\n",
                s["moat_tunnels_open"], s["moat_tunnels_opened_total"], s["moat_tunnels_closed_total"],
                s["moat_handshakes_total"], s["moat_handshakes_resumed_total"],
                s["moat_handshake_failures_total"], ok, failed, s["moat_buffers_in_use"],
                s["moat_buffers_spare"], tt, tc, s["moat_refusals_total"],
                s["moat_log_lines_dropped_total"]
        }' <<<"$m")
    echo "$t,$1,$alive,$rss,$fds,$threads,$cpu,$counts" >>"$OUT/samples.csv"
    [ "$alive" = 1 ]
}

tunnels_open() {
    metrics | awk '/^moat_tunnels_open\{/ { s += $NF } END { printf "%.0f", s }'
}

# ---------------------------------------------------------------------------------------
# Start-up baseline: moat idle, nothing connected.

echo "t_s,event,detail" >"$OUT/events.csv"
sleep 2
BASE_FDS=$(fd_count)
sample baseline "$OUT/metrics-baseline.txt" || die "moat does not answer on $STATUS"
event baseline "fds=$BASE_FDS"

# ---------------------------------------------------------------------------------------
# The load: one generator process per kind, all at once, for the whole run.

COMMON=(--ca "$OUT/certs/ca.pem" --cert "$OUT/certs/client.pem" --key "$OUT/certs/client.key"
    --target-pid "$MOAT_PID" --backend-pid "$BACKEND_PID")
declare -A GEN_PID
GENS=()
start_gen() { # name service mode args...
    local name=$1 service=$2 mode=$3
    shift 3
    echo "moat-bench load --mode $mode --addr $(listening "$service") $*" >"$OUT/gen-$name.cmd"
    "$BENCH" load --mode "$mode" --addr "$(listening "$service")" "${COMMON[@]}" "$@" \
        >"$OUT/gen-$name.out" 2>"$OUT/gen-$name.log" </dev/null &
    GEN_PID[$name]=$!
    PIDS+=("$!")
    GENS+=("$name")
    event start "$name pid=$!"
}
LOAD_AT=$(now)
LOAD_AT_S=${LOAD_AT%.*}
D=${DURATION}s
start_gen full mtls handshake --concurrency 8 --warmup 0s --duration "$D"
start_gen resume mtls handshake --resume --concurrency 8 --warmup 0s --duration "$D"
start_gen rr mtls rr --concurrency 50 --size 512 --verify --warmup 0s --duration "$D"
start_gen upload upload upload --concurrency 2 --verify --warmup 0s --duration "$D"
start_gen download download download --concurrency 2 --verify --warmup 0s --duration "$D"
# The idle generator opens its tunnels first, then holds them for --duration.
start_gen idle idle idle --tunnels "$IDLE" --concurrency 16 --warmup 5s --duration "$((DURATION - 5))s"
start_gen slowloris flood slowloris --concurrency "$SLOWLORIS" --source-ip 127.0.0.2 --cut-after 5s --duration "$D"
start_gen garbage flood garbage --concurrency 4 --source-ip 127.0.0.3 --duration "$D"

gen_running() {
    local name
    for name in "${GENS[@]}"; do
        if kill -0 "${GEN_PID[$name]}" 2>/dev/null; then return 0; fi
    done
    return 1
}
declare -A GEN_RC
reap_gens() { # collects the exit status of generators that have ended
    local name rc
    for name in "${GENS[@]}"; do
        [ -n "${GEN_RC[$name]:-}" ] && continue
        kill -0 "${GEN_PID[$name]}" 2>/dev/null && continue
        rc=0
        wait "${GEN_PID[$name]}" || rc=$?
        GEN_RC[$name]=$rc
        event exit "$name rc=$rc"
    done
}

echo "soak: moat pid $MOAT_PID, status http://$STATUS/metrics, load for ${DURATION}s, output in $OUT"

HUPS=0
USR1S=0
DIED=0
# Times below are seconds since the load started.
next_sample=$SAMPLE_EVERY
next_hup=$HUP_EVERY
next_usr1=30
snapshot_taken=0
elapsed() {
    local t
    t=$(now)
    echo $((${t%.*} - LOAD_AT_S))
}
while :; do
    sleep 1
    ts=$(elapsed)
    if ! kill -0 "$MOAT_PID" 2>/dev/null; then
        DIED=1
        event died "moat exited during the load"
        sample load || true
        break
    fi
    reap_gens
    [ "$ts" -ge "$DURATION" ] && break
    if [ "$snapshot_taken" = 0 ] && [ "$ts" -ge $((DURATION - 5)) ]; then
        # Every generator is still running: the counts of the load itself.
        metrics >"$OUT/metrics-load.txt" || true
        snapshot_taken=1
    fi
    if [ "$ts" -ge "$next_hup" ]; then
        HUPS=$((HUPS + 1))
        write_config $((HUPS % 2))
        kill -HUP "$MOAT_PID"
        event sighup "reload $HUPS, config variant $((HUPS % 2))"
        next_hup=$((next_hup + HUP_EVERY))
    fi
    if [ "$ts" -ge "$next_usr1" ]; then
        USR1S=$((USR1S + 1))
        kill -USR1 "$MOAT_PID"
        event sigusr1 ""
        next_usr1=$((next_usr1 + USR1_EVERY))
    fi
    if [ "$ts" -ge "$next_sample" ]; then
        sample load || true
        next_sample=$((next_sample + SAMPLE_EVERY))
    fi
done

# ---------------------------------------------------------------------------------------
# The end: generators report and exit, moat closes every tunnel, descriptors come back.

event load_end ""
if [ "$DIED" = 0 ]; then
    sample drain || true
    limit=$((DURATION + GEN_GRACE))
    while gen_running; do
        sleep 1
        reap_gens
        ts=$(elapsed)
        if [ "$ts" -ge "$next_sample" ]; then
            sample drain || true
            next_sample=$((next_sample + SAMPLE_EVERY))
        fi
        if [ "$ts" -ge "$limit" ]; then
            for name in "${GENS[@]}"; do
                if kill -0 "${GEN_PID[$name]}" 2>/dev/null; then
                    event overstayed "$name"
                    kill -TERM "${GEN_PID[$name]}" 2>/dev/null || true
                fi
            done
            sleep 1
        fi
        kill -0 "$MOAT_PID" 2>/dev/null || { DIED=1; event died "moat exited after the load"; break; }
    done
    reap_gens
    event generators_done ""
fi

DRAIN_S=""
FINAL_FDS=""
if [ "$DIED" = 0 ]; then
    t_start=${EPOCHREALTIME/./}
    while :; do
        open=$(tunnels_open || echo "")
        waited=$(((${EPOCHREALTIME/./} - t_start) / 1000000))
        if [ "$open" = 0 ]; then
            DRAIN_S=$(awk -v a="$t_start" -v b="${EPOCHREALTIME/./}" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
            event drained "after ${DRAIN_S}s"
            break
        fi
        if [ "$waited" -ge "$DRAIN_LIMIT" ]; then
            event not_drained "tunnels_open=$open after ${DRAIN_LIMIT}s"
            break
        fi
        sleep 1
    done
    # Descriptors of closed tunnels (and of the last /metrics request) are gone at once.
    for _ in $(seq 15); do
        FINAL_FDS=$(fd_count)
        [ "$FINAL_FDS" -le "$BASE_FDS" ] && break
        sleep 1
    done
    event fds "baseline=$BASE_FDS final=$FINAL_FDS"
    kill -USR1 "$MOAT_PID" && USR1S=$((USR1S + 1)) && event sigusr1 "final"
    sleep 1
    sample end "$OUT/metrics-end.txt" || DIED=1
fi

# SIGTERM: a graceful shutdown with nothing left to wait for.
MOAT_RC=""
if kill -TERM "$MOAT_PID" 2>/dev/null; then
    event sigterm ""
    for _ in $(seq 40); do
        kill -0 "$MOAT_PID" 2>/dev/null || break
        sleep 1
    done
fi
MOAT_RC=0
wait "$MOAT_PID" || MOAT_RC=$?
event moat_exit "rc=$MOAT_RC"
kill -TERM "$BACKEND_PID" 2>/dev/null || true
rm -f "$OUT/moat.fifo"

{
    echo "duration=$DURATION"
    echo "load_at=$LOAD_AT"
    echo "idle=$IDLE"
    echo "slowloris=$SLOWLORIS"
    echo "workers=$WORKERS"
    echo "sample_every=$SAMPLE_EVERY"
    echo "sighups=$HUPS"
    echo "sigusr1s=$USR1S"
    echo "died=$DIED"
    echo "moat_rc=$MOAT_RC"
    echo "base_fds=$BASE_FDS"
    echo "final_fds=$FINAL_FDS"
    echo "drain_s=$DRAIN_S"
    echo "gens=${GENS[*]}"
    for name in "${GENS[@]}"; do
        echo "rc_$name=${GEN_RC[$name]:-}"
    done
    echo "nproc=$(nproc)"
    echo "kernel=$(uname -r)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
    echo "rustc=$(rustc --version 2>/dev/null || true)"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || true)"
    echo "fd_limit=$(ulimit -n)"
} >"$OUT/run.env"

python3 "$ROOT/benches/soak_report.py" --dir "$OUT" --svg "$SVG"
