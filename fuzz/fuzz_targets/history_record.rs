//! A record of the history store (one event's JSON line) as `oom-probe
//! history` reads, filters and prints it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oom_probe::fuzzing::history_record(data));
