//! The fuzzer's targets, as plain functions from bytes to checks.
//!
//! `fuzz/` (cargo-fuzz, libFuzzer, nightly) calls these with the inputs libFuzzer makes, and
//! `tests/fuzz_corpus.rs` calls them with every file of the committed corpus on the stable
//! toolchain, so CI replays what the fuzzer found on every run. Keeping the harnesses here,
//! in the crate, means both run the very same code.
//!
//! Nothing in moat calls this module. Unlike the rest of the crate, its functions panic on
//! purpose: a panic is how the fuzzer learns that an invariant broke. What each target
//! checks, and how to run it, is in `docs/ROBUSTNESS.md`.

pub mod cli;
pub mod config;
mod der;
pub mod policy;
pub mod proxy_header;
pub mod tunnel;

/// Whether `text` displays as one line: no line break and no other control character (a
/// terminal escape could rewrite what is already on the screen).
pub(crate) fn is_one_line(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
}

/// Reads a fuzz input front to back; reading past its end gives zeros.
#[derive(Debug)]
pub(crate) struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        taken
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}
