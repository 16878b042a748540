#!/usr/bin/env bash
# Runs one fuzz target in the background, politely: nice 19, one worker, at most SECONDS,
# a 2 GiB RSS cap. New inputs go to fuzz/corpus/TARGET/ (minimise them afterwards with
# `cargo +nightly fuzz cmin TARGET`), crashes to fuzz/artifacts/TARGET/, libFuzzer's log to
# fuzz/logs/TARGET/fuzz-0.log. The PIDs of the fuzzer and its worker are appended to
# fuzz/logs/pids and, if the directory exists, /work/notes/fuzz-pids, so a benchmark can
# pause them with SIGSTOP (and resume them with SIGCONT).
#
#   fuzz/run.sh TARGET SECONDS [LIBFUZZER FLAGS...]     # e.g. fuzz/run.sh tunnel 3600
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET SECONDS [FLAGS...]}
seconds=${2:?usage: fuzz/run.sh TARGET SECONDS [FLAGS...]}
shift 2
cargo +nightly fuzz build "$target"
binary="$PWD/target/x86_64-unknown-linux-gnu/release/$target"
mkdir -p "logs/$target" "corpus/$target" "artifacts/$target"
cd "logs/$target"
# -jobs=1 -workers=1: libFuzzer runs the fuzzing in one child process, logging to
# fuzz-0.log in this directory, and survives a crash report to say so.
nohup nice -n 19 "$binary" "../../corpus/$target" -artifact_prefix="../../artifacts/$target/" \
  -jobs=1 -workers=1 -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=60 \
  -print_final_stats=1 "$@" > run.log 2>&1 &
parent=$!
sleep 2
pids="$parent $(pgrep -P "$parent" | tr '\n' ' ')"
for shell in $(pgrep -P "$parent"); do pids="$pids $(pgrep -P "$shell" | tr '\n' ' ')"; done
for pid in $pids; do
  echo "$pid" >> ../pids
  if [ -d /work/notes ]; then echo "$pid" >> /work/notes/fuzz-pids; fi
done
echo "fuzzing $target for ${seconds}s: pids $pids; log fuzz/logs/$target/fuzz-0.log"
