//! The agent's state file (the kill ledger), as a crash, a full disk or a
//! person may leave it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oom_probe::fuzzing::state_file(data));
