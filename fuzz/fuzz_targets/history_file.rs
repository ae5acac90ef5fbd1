//! A history store file with any contents, opened and read by `oom-probe
//! history` (a corrupted disk, a file that is not a store).
//!
//! oom-probe catches panics inside redb (it has some on corrupted files)
//! and reports the store as corrupted; libfuzzer-sys's panic hook would
//! abort on those caught panics too, so it is replaced by a silent one. A
//! panic that escapes oom-probe still aborts: libfuzzer-sys's wrapper
//! catches it and aborts, and the input is kept as a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| oom_probe::fuzzing::history_file(data)
);
