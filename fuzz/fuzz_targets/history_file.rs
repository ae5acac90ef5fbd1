//! A history store file with any contents, opened and read by `oom-probe
//! history` (a corrupted disk, a file that is not a store).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oom_probe::fuzzing::history_file(data));
