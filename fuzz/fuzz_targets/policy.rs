#![no_main]
//! See moat::fuzzing::policy.

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzzing::policy::run(data));
