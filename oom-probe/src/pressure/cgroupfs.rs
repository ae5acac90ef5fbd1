//! The kernel's side of pressure watching: the files and notifications of
//! one memory cgroup (v1 or v2) or of the node, and nothing else.
//!
//! - cgroup v1: `memory.pressure_level` notifications, registered by writing
//!   `<eventfd> <pressure_level fd> <level>` to `cgroup.event_control`; the
//!   eventfd counts notifications and is also signalled when the cgroup is
//!   removed. Closing it unregisters.
//! - cgroup v2 and the node: a PSI trigger, `some <stall us> <window us>`
//!   written to `memory.pressure` (or `/proc/pressure/memory`), which then
//!   polls `POLLPRI` each window the stall passed the threshold, and
//!   `POLLERR` once the cgroup is gone. Closing it removes the trigger.
//! - cgroup v2: `memory.events` (`max`, `high` counters), whose changes
//!   inotify reports as `IN_MODIFY`.

use std::{
    fs,
    io::{self, Write},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use rustix::event::{eventfd, EventfdFlags};

use crate::event::{Memcg, Psi};

/// A registered notification: readable (eventfd) or `POLLPRI` (PSI trigger)
/// when the kernel reports pressure. Dropping it unregisters.
#[derive(Debug)]
pub struct Notifier {
    pub fd: OwnedFd,
    /// True for a PSI trigger (wait for `POLLPRI`), false for an eventfd.
    pub psi: bool,
}

/// Registers a v1 `memory.pressure_level` notification of `level` (`low`,
/// `medium` or `critical`) on the cgroup directory `dir`.
///
/// Errors: the cgroup is gone, or the kernel refuses the level.
pub fn v1_pressure_level(dir: &Path, level: &str) -> io::Result<Notifier> {
    let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
    let level_file = fs::File::open(dir.join("memory.pressure_level"))?;
    let line = format!(
        "{} {} {level}",
        efd.as_raw_fd(),
        level_file.as_fd().as_raw_fd()
    );
    // The kernel keeps its own references; our pressure_level fd may close.
    fs::write(dir.join("cgroup.event_control"), line)?;
    Ok(Notifier {
        fd: efd,
        psi: false,
    })
}

/// Registers a PSI trigger on `file` (a cgroup's `memory.pressure` or
/// `/proc/pressure/memory`): notify when some task stalled on memory for
/// `stall_us` within a `window_us` window (500 ms to 10 s).
///
/// Errors: no PSI (the file is missing, or `psi=0` makes it refuse writes),
/// an unprivileged caller on a kernel that limits triggers to root, or a
/// window out of range.
pub fn psi_trigger(file: &Path, stall_us: u64, window_us: u64) -> io::Result<Notifier> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags_nonblock()
        .open(file)?;
    f.write_all(format!("some {stall_us} {window_us}\0").as_bytes())?;
    Ok(Notifier {
        fd: f.into(),
        psi: true,
    })
}

/// The longest PSI trigger window the kernel takes (`WINDOW_MAX_US`).
pub const PSI_WINDOW_MAX_US: u64 = 10_000_000;

/// The PSI trigger an unprivileged opener may write instead of
/// `some <stall_us> <window_us>`, or `None` when that one is already
/// allowed: since Linux 6.5 a file opened without `CAP_SYS_RESOURCE` takes
/// only windows that are a multiple of 2 s (they are served by the 2 s
/// averaging work instead of a real-time poll thread), and refuses the rest
/// with `EINVAL`. The window is rounded up to the next multiple of 2 s (at
/// most 10 s) and the stall scaled with it, so the share of stalled time
/// that fires is the same. Returns `(stall_us, window_us)`.
pub fn unprivileged_psi_trigger(stall_us: u64, window_us: u64) -> Option<(u64, u64)> {
    const STEP: u64 = 2_000_000;
    if window_us.is_multiple_of(STEP) {
        return None;
    }
    let window = window_us
        .div_ceil(STEP)
        .saturating_mul(STEP)
        .min(PSI_WINDOW_MAX_US);
    let stall = (stall_us.saturating_mul(window) / window_us.max(1)).clamp(1, window);
    Some((stall, window))
}

/// Writes the PSI trigger `(stall µs, window µs)` to `file`; when the kernel
/// refuses its window to an opener without `CAP_SYS_RESOURCE` (`EINVAL`,
/// Linux 6.5 and later), writes the nearest one it takes instead
/// ([`unprivileged_psi_trigger`]). Returns the notifier and the trigger
/// written.
///
/// Errors: as [`psi_trigger`] for the trigger asked for (the fallback's own
/// error is not returned).
pub fn psi_trigger_or_nearest(
    file: &Path,
    trigger: (u64, u64),
) -> io::Result<(Notifier, (u64, u64))> {
    let (stall, window) = trigger;
    match psi_trigger(file, stall, window) {
        Ok(notifier) => Ok((notifier, trigger)),
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            let Some(fit) = unprivileged_psi_trigger(stall, window) else {
                return Err(err);
            };
            let notifier = psi_trigger(file, fit.0, fit.1).map_err(|_| err)?;
            Ok((notifier, fit))
        }
        Err(err) => Err(err),
    }
}

/// The node PSI file to use when `file` (`<procfs>/pressure/memory`) gave
/// `err`: the agent's own `/proc/pressure/memory` when `err` is `EROFS`
/// (the host's /proc mounted read-only, as the DaemonSet mounts it) and
/// `file` is not that one already. System-wide PSI is one set of numbers
/// for the whole machine, whatever procfs or pid namespace shows it, and a
/// pod's own /proc is writable (`/proc/pressure` is not among the paths
/// container runtimes mask). `None` otherwise.
pub fn own_proc_fallback(file: &Path, err: &io::Error) -> Option<PathBuf> {
    let own = Path::new("/proc/pressure/memory");
    (err.raw_os_error() == Some(libc::EROFS) && file != own).then(|| own.to_path_buf())
}

/// True when the memory hierarchy at `root` (the v1 memory mount or the v2
/// root) is cgroup v2 (it has `cgroup.controllers`).
pub fn memory_hierarchy(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// Why a PSI trigger could not be written to `file`, in words a person can
/// act on (`err` as [`psi_trigger`] returned it).
pub fn psi_trigger_error(file: &Path, err: &io::Error) -> String {
    let why = match err.raw_os_error() {
        Some(libc::ENOENT) => {
            "no PSI: the kernel was built without CONFIG_PSI or booted with psi=0 (Debian \
             kernels before 6.x keep it off by default: boot with psi=1)"
        }
        Some(libc::EOPNOTSUPP) => "PSI is disabled on this kernel (boot with psi=1)",
        Some(libc::EACCES) | Some(libc::EPERM) => "not permitted (PSI triggers need root)",
        Some(libc::EINVAL) => {
            "the kernel refuses the trigger (its window or stall is out of range, or the \
             cgroup has PSI turned off in cgroup.pressure)"
        }
        Some(libc::EROFS) => {
            "the file system is mounted read-only (a trigger is written to the file: mount \
             the cgroup file system read-write)"
        }
        Some(libc::EBUSY) => "the file already has a trigger on this descriptor",
        _ => "",
    };
    if why.is_empty() {
        format!("{}: {err}", file.display())
    } else {
        format!("{}: {why} ({err})", file.display())
    }
}

/// `O_NONBLOCK` on an open, without spelling out `OpenOptionsExt` each time.
trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
    }
}

/// Empties an eventfd after it polled readable (a PSI trigger needs
/// nothing: its `POLLPRI` is per window).
pub fn consume(notifier: &Notifier) {
    if !notifier.psi {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&notifier.fd, &mut buf);
    }
}

/// Parses a PSI file (`memory.pressure`, `/proc/pressure/memory`):
/// `some avg10=.. avg60=.. avg300=.. total=..` and the same for `full`.
pub fn parse_psi(text: &str) -> Option<Psi> {
    let mut psi = Psi {
        some_avg10: 0.0,
        full_avg10: 0.0,
        some_total_us: 0,
        full_total_us: 0,
    };
    let mut seen = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next()?;
        let mut avg10 = None;
        let mut total = None;
        for word in words {
            match word.split_once('=') {
                Some(("avg10", v)) => avg10 = v.parse::<f64>().ok(),
                Some(("total", v)) => total = v.parse::<u64>().ok(),
                _ => {}
            }
        }
        match kind {
            "some" => {
                psi.some_avg10 = avg10?;
                psi.some_total_us = total?;
                seen = true;
            }
            "full" => {
                psi.full_avg10 = avg10?;
                psi.full_total_us = total?;
            }
            _ => {}
        }
    }
    seen.then_some(psi)
}

/// Reads the PSI file at `file`; `None` without PSI.
pub fn read_psi(file: &Path) -> Option<Psi> {
    parse_psi(&fs::read_to_string(file).ok()?)
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Usage and limit of the memory cgroup at `dir`, in bytes: v1
/// `memory.usage_in_bytes`/`memory.limit_in_bytes` (a limit of
/// `PAGE_COUNTER_MAX` pages or more is none), v2
/// `memory.current`/`memory.max` (`max` is none).
pub fn usage_and_limit(dir: &Path, v2: bool) -> Memcg {
    if v2 {
        let limit = fs::read_to_string(dir.join("memory.max"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Memcg {
            usage_bytes: read_u64(&dir.join("memory.current")),
            limit_bytes: limit,
        }
    } else {
        let limit = read_u64(&dir.join("memory.limit_in_bytes")).filter(|&l| l < (1 << 62));
        Memcg {
            usage_bytes: read_u64(&dir.join("memory.usage_in_bytes")),
            limit_bytes: limit,
        }
    }
}

/// True when the usage is within `max(2 MiB, limit / 64)` of the limit:
/// where charges fail and reclaim runs (a charge batch is 64 pages; the
/// slack covers per-CPU stock and the kernel's lazy counters).
pub trait AtLimit {
    fn at_limit(&self) -> bool;
}

impl AtLimit for Memcg {
    fn at_limit(&self) -> bool {
        match (self.usage_bytes, self.limit_bytes) {
            (Some(usage), Some(limit)) => usage + (2 << 20).max(limit / 64) >= limit,
            _ => false,
        }
    }
}

/// How often the cgroup hit its limit so far: v1 `memory.failcnt` plus
/// `memory.memsw.failcnt` (with swap accounting a charge that fails on the
/// memory+swap limit counts only there), v2 `memory.events` `max` plus
/// `high`. `None` when the cgroup is gone.
pub fn limit_hits(dir: &Path, v2: bool) -> Option<u64> {
    if !v2 {
        let memsw = read_u64(&dir.join("memory.memsw.failcnt")).unwrap_or(0);
        return read_u64(&dir.join("memory.failcnt")).map(|hits| hits + memsw);
    }
    let text = fs::read_to_string(dir.join("memory.events")).ok()?;
    Some(
        text.lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(key, _)| *key == "max" || *key == "high")
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum(),
    )
}

/// True when the memory cgroup at `dir` has a limit of its own.
pub fn has_limit(dir: &Path, v2: bool) -> bool {
    usage_and_limit(dir, v2).limit_bytes.is_some()
}

/// The node's memory as a memcg-like pair from `meminfo` (`/proc/meminfo`):
/// usage is MemTotal minus MemAvailable, the limit MemTotal.
pub fn node_memory(meminfo: &str) -> Memcg {
    let kib = |key: &str| {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total = kib("MemTotal").map(|k| k * 1024);
    let available = kib("MemAvailable").map(|k| k * 1024);
    Memcg {
        usage_bytes: total.zip(available).map(|(t, a)| t.saturating_sub(a)),
        limit_bytes: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_psi_with_and_without_full() {
        let psi = parse_psi(
            "some avg10=5.09 avg60=1.92 avg300=0.79 total=24714542\n\
             full avg10=4.18 avg60=1.45 avg300=0.57 total=9325538\n",
        )
        .unwrap();
        assert_eq!(psi.some_avg10, 5.09);
        assert_eq!(psi.full_avg10, 4.18);
        assert_eq!(psi.some_total_us, 24714542);
        assert_eq!(psi.full_total_us, 9325538);
        let some_only = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n").unwrap();
        assert_eq!(some_only.some_total_us, 7);
        assert_eq!(parse_psi(""), None);
        assert_eq!(parse_psi("garbage\n"), None);
    }

    #[test]
    fn unprivileged_triggers_get_whole_2_s_windows_with_the_same_share() {
        // The defaults: 100 ms in 1 s becomes 200 ms in 2 s.
        assert_eq!(
            unprivileged_psi_trigger(100_000, 1_000_000),
            Some((200_000, 2_000_000))
        );
        assert_eq!(
            unprivileged_psi_trigger(150_000, 500_000),
            Some((600_000, 2_000_000))
        );
        assert_eq!(
            unprivileged_psi_trigger(1_000_000, 9_500_000),
            Some((1_052_631, 10_000_000))
        );
        // Already allowed.
        assert_eq!(unprivileged_psi_trigger(100_000, 2_000_000), None);
        assert_eq!(unprivileged_psi_trigger(100_000, 4_000_000), None);
    }

    #[test]
    fn node_usage_is_total_minus_available() {
        let memcg =
            node_memory("MemTotal:       1000 kB\nMemFree:   10 kB\nMemAvailable:    250 kB\n");
        assert_eq!(memcg.limit_bytes, Some(1000 * 1024));
        assert_eq!(memcg.usage_bytes, Some(750 * 1024));
    }
}
