#![no_main]
//! See moat::fuzzing::proxy_header.

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzzing::proxy_header::run(data));
