#![no_main]
//! See moat::fuzzing::config.

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzzing::config::run(data));
