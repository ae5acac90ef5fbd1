//! Maps the kernel's event timestamps (CLOCK_MONOTONIC, from
//! `bpf_ktime_get_ns`) to wall-clock time, and measures how old an event is.

use std::time::{Duration, SystemTime};

pub use oom_probe_cgroupfs::clock::monotonic_ns as monotonic_now_ns;

/// How long ago the kernel stamped `kernel_time_ns`: the detection latency.
pub fn age(kernel_time_ns: u64) -> Duration {
    Duration::from_nanos(monotonic_now_ns().saturating_sub(kernel_time_ns))
}

/// The wall-clock time at which the kernel stamped `kernel_time_ns`.
/// Sampled per event, so clock steps (NTP) never accumulate.
pub fn wall_time(kernel_time_ns: u64) -> SystemTime {
    SystemTime::now()
        .checked_sub(age(kernel_time_ns))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The CLOCK_MONOTONIC stamp `kernel_time_ns` on CLOCK_BOOTTIME (the clock
/// of process start times in `/proc/<pid>/stat`), in ns: the two differ by
/// the time the machine was suspended, read now.
pub fn boottime_ns(kernel_time_ns: u64) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let monotonic = monotonic_now_ns();
    // SAFETY: a valid timespec pointer; CLOCK_BOOTTIME exists since 2.6.39.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let boottime = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    kernel_time_ns.saturating_add(boottime.saturating_sub(monotonic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_from_now_maps_to_now() {
        let kernel_now = monotonic_now_ns();
        let wall = wall_time(kernel_now);
        let skew = SystemTime::now().duration_since(wall).unwrap();
        assert!(skew < Duration::from_secs(1), "{skew:?}");
    }

    #[test]
    fn boot_time_is_monotonic_time_plus_suspend() {
        let now = monotonic_now_ns();
        let boot = boottime_ns(now);
        assert!(boot >= now);
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let diff = (boot as f64 / 1e9 - uptime).abs();
        assert!(diff < 1.0, "boot time {boot} ns, /proc/uptime {uptime} s");
    }

    #[test]
    fn an_older_timestamp_maps_to_the_past() {
        let two_seconds_ago = monotonic_now_ns() - 2_000_000_000;
        assert!(age(two_seconds_ago) >= Duration::from_secs(2));
        let wall = wall_time(two_seconds_ago);
        let behind = SystemTime::now().duration_since(wall).unwrap();
        assert!(behind >= Duration::from_secs(2) && behind < Duration::from_secs(3));
    }
}
