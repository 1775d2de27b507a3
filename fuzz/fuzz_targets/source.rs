#![no_main]
//! Arbitrary bytes as a license file, read and verified as the monitor would.
libfuzzer_sys::fuzz_target!(|data: &[u8]| iosetu_license::fuzzing::source(data));
