#!/bin/sh
# Builds moat and the benchmark crate in release mode, then runs the benchmark driver.
# Every argument goes to the driver: benches/run.sh --quick, benches/run.sh --help, ...
#
# Builds go to target/bench (override with CARGO_TARGET_DIR) so they do not wait on, or
# invalidate, a development build in target/.
set -eu
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/bench}"
export CARGO_TARGET_DIR
cargo build --release -p moat -p moat-bench
exec "$CARGO_TARGET_DIR/release/moat-bench" run "$@"
