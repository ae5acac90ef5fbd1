//! Ring-buffer records as the eBPF side would send them, or a mismatched
//! build would: any length, any kind.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = oom_probe::decode::decode(data);
});
