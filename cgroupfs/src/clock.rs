//! The clock the kernel stamps OOM events with (`bpf_ktime_get_ns`:
//! CLOCK_MONOTONIC), read from userspace, to age an event's
//! `kernel_time_ns`.

/// CLOCK_MONOTONIC now, in nanoseconds since boot (time suspended excluded),
/// the same clock as an event's `kernel_time_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
