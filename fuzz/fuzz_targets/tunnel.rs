#![no_main]
//! See moat::fuzzing::tunnel.

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzzing::tunnel::run(data));
