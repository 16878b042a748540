//! Replays the fuzzer's committed corpus (`fuzz/corpus/<target>/`) and its regression
//! inputs (`fuzz/regressions/<target>/`) through the same harnesses `cargo fuzz` runs
//! (`moat::fuzzing`), on the stable toolchain: what the fuzzer once found stays found.
//! A few hand-written scripts for the tunnel harness show what a typical input does.

use std::fs;
use std::path::{Path, PathBuf};

type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness); 5] = [
    ("cli", moat::fuzzing::cli::run),
    ("config", moat::fuzzing::config::run),
    ("proxy_header", moat::fuzzing::proxy_header::run),
    ("policy", moat::fuzzing::policy::run),
    ("tunnel", moat::fuzzing::tunnel::run),
];

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str, target: &str, harness: Harness) -> usize {
    let files = inputs(kind, target);
    for file in &files {
        let bytes = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let outcome = std::panic::catch_unwind(|| harness(&bytes));
        assert!(
            outcome.is_ok(),
            "{} fails; run it with `cargo +nightly fuzz run {target} {}` to see why",
            file.display(),
            file.display()
        );
    }
    files.len()
}

#[test]
fn every_corpus_input_passes_its_harness() {
    for (target, harness) in TARGETS {
        let count = replay("corpus", target, harness);
        assert!(count > 0, "no corpus for {target} in fuzz/corpus/{target}");
    }
}

#[test]
fn every_regression_input_passes_its_harness() {
    for (target, harness) in TARGETS {
        replay("regressions", target, harness);
    }
}

/// Tunnel script operations (see `moat::fuzzing::tunnel`).
mod op {
    pub const TLS_WRITE: u8 = 0;
    pub const PLAIN_WRITE: u8 = 3;
    pub const CLOSE_NOTIFY: u8 = 10;
    pub const TLS_RESET: u8 = 12;
    pub const PLAIN_SHUT_WRITE: u8 = 14;
    pub const KEY_UPDATE: u8 = 17;
    pub const SETTLE: u8 = 20;
}

/// A script: setup byte, two capacities, then operations.
fn script(setup: u8, capacities: [u8; 2], ops: &[&[u8]]) -> Vec<u8> {
    let mut bytes = vec![setup, capacities[0], capacities[1]];
    for op in ops {
        bytes.extend_from_slice(op);
    }
    bytes
}

#[test]
fn a_tunnel_in_server_mode_carries_both_ways_and_closes_cleanly() {
    use op::*;
    let ops: &[&[u8]] = &[
        &[SETTLE],
        &[TLS_WRITE, 0x00, 0xa0],
        &[PLAIN_WRITE, 0x34, 0x12],
        &[KEY_UPDATE],
        &[SETTLE],
        &[CLOSE_NOTIFY],
        &[PLAIN_SHUT_WRITE],
        &[SETTLE],
    ];
    moat::fuzzing::tunnel::run(&script(0, [0, 200], ops));
    moat::fuzzing::tunnel::run(&script(0b10, [40, 3], ops));
}

#[test]
fn a_tunnel_in_client_mode_carries_both_ways_and_closes_cleanly() {
    use op::*;
    let ops: &[&[u8]] = &[
        &[PLAIN_WRITE, 0x00, 0x40],
        &[SETTLE],
        &[TLS_WRITE, 0x00, 0x90],
        &[SETTLE],
        &[PLAIN_SHUT_WRITE],
        &[CLOSE_NOTIFY],
        &[SETTLE],
    ];
    moat::fuzzing::tunnel::run(&script(1, [100, 100], ops));
    moat::fuzzing::tunnel::run(&script(0b101, [7, 255], ops));
}

#[test]
fn a_reset_or_a_refusal_ends_the_tunnel_without_losing_count_of_buffers() {
    use op::*;
    let reset: &[&[u8]] = &[&[SETTLE], &[TLS_WRITE, 0xff, 0xff], &[TLS_RESET], &[SETTLE]];
    moat::fuzzing::tunnel::run(&script(0, [60, 60], reset));
    let refused: &[&[u8]] = &[&[TLS_WRITE, 0x00, 0x10], &[SETTLE]];
    moat::fuzzing::tunnel::run(&script(0b111000, [60, 60], refused));
    moat::fuzzing::tunnel::run(&script(0b111001, [60, 60], refused));
}
