#![no_main]
//! See moat::fuzzing::cli.

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzzing::cli::run(data));
