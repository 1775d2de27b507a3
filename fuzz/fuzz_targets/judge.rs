#![no_main]
//! Bytes as a schedule for the judge: clocks, restarts, reads, notices and tampering,
//! checked by the simulation's oracles (see `iosetu_license::fuzzing::judge`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    iosetu_license::fuzzing::judge(data);
});
