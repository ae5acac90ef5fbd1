//! Cgroup paths as the resolver hands them over (bytes: cgroup names may be
//! anything but `/` and NUL): every layout of enrich/cgroup_layout.rs, and
//! the printable escape of names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oom_probe::enrich::cgroup_layout::parse;
use oom_probe_cgroupfs::text;

fuzz_target!(|data: &[u8]| {
    let (printable, escaped) = text::escape(data);
    assert!(escaped || printable.as_bytes() == data);
    let _ = text::terminal_safe(&printable);
    let _ = text::comm(data);
    if let Ok(path) = std::str::from_utf8(data) {
        let identity = parse(path);
        // Documented: leading and trailing slashes do not matter.
        assert_eq!(identity, parse(&format!("/{path}/")), "{path:?}");
    }
});
