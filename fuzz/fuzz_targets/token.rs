#![no_main]
//! Token decoding and verification on arbitrary bytes (see `iosetu_license::fuzzing::token`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| iosetu_license::fuzzing::token(data));
