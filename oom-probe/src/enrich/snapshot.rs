//! Whether what is read after a kill still describes the kill. The kernel
//! gives three things at the kill that nothing later can change: the
//! memcg's usage (its page counter), the victim's RSS by kind, and the
//! kill's time. A `memory.stat` read later is judged against them
//! ([`judge`]), and a process is told apart by whether it started after
//! the kill ([`KillClock::started_after`]). The judge is pure; the few
//! reads it needs (`memory.current`, the victim's `/proc/<pid>/stat`) are
//! the thin shell at the end.

use std::{fs, io, path::Path};

use crate::event::{MemcgStat, MemcgStatSource};

/// How long after the kill a read is late: time enough for the victim to
/// have exited and for its runtime to start it again. The agent reads
/// within milliseconds when it keeps up (p99 8.1 ms under load,
/// docs/performance.md); a read this late means it fell behind (a kill
/// storm, a slow runtime, a paused agent).
pub const LATE_READ_NS: u64 = 1_000_000_000;

/// The least memory that must show as charged after the kill before a
/// snapshot is set aside: an eighth of the usage at the kill, and never
/// under this (per-CPU charge batches and the trigger's own allocation,
/// which succeeds once the victim is gone, move the counters by that much).
pub const MIN_CHARGED_SINCE: u64 = 1 << 20;

/// What the kernel gave at the kill, for the memcg whose `memory.stat` is
/// read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtKill {
    /// That memcg's page counter at the kill, bytes (`oom_memcg.usage_bytes`,
    /// else `memcg.usage_bytes`); `None` when the kernel could not give it.
    pub usage: Option<u64>,
    /// The victim's anonymous RSS at the kill, bytes (`victim.rss_bytes.anon`).
    pub victim_anon: Option<u64>,
    /// The kill's CLOCK_MONOTONIC stamp, ns (`kernel_time_ns`).
    pub time_ns: u64,
}

/// A `memory.stat` read after the kill, and what was known at that read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The memcg's `memory.stat`, mapped.
    pub stat: MemcgStat,
    /// Its page counter at the read (`memory.current`,
    /// `memory.usage_in_bytes`), bytes; `None` when unreadable.
    pub usage_now: Option<u64>,
    /// CLOCK_MONOTONIC at the read, ns.
    pub time_ns: u64,
    /// True when the victim was known to have exited at the read (its
    /// memory released); false when it was not looked at or may still live.
    pub victim_exited: bool,
}

/// Whether a snapshot fits the kill, and why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// It can stand for the kill (`after_kill`).
    Fits,
    /// No usage at the kill to judge against (`after_kill_inconsistent`).
    NoUsageAtKill,
    /// Its total (anon + file + kernel + sock) is under three quarters of
    /// the usage at the kill: memory was freed before the read (the OOM
    /// reaper, the victim's exit, the cgroup's removal)
    /// (`after_kill_inconsistent`).
    Drained {
        /// The snapshot's total, bytes.
        total: u64,
        /// The usage at the kill, bytes.
        usage_at_kill: u64,
    },
    /// It shows more memory than could be left from the kill: at least
    /// `charged_since` bytes were charged after it (a restarted container
    /// refilling, survivors allocating) (`after_kill_late`).
    ChargedSince {
        /// The least that was charged after the kill, bytes.
        charged_since: u64,
        /// What the memcg could still hold from the kill: the usage at the
        /// kill, less the victim's anonymous RSS when it had exited.
        could_hold: u64,
        /// How long after the kill the read was, ns.
        read_after_ns: u64,
    },
}

impl Fit {
    /// The `memcg_stat_source` this verdict gives.
    pub fn source(&self) -> MemcgStatSource {
        match self {
            Self::Fits => MemcgStatSource::AfterKill,
            Self::NoUsageAtKill | Self::Drained { .. } => MemcgStatSource::AfterKillInconsistent,
            Self::ChargedSince { .. } => MemcgStatSource::AfterKillLate,
        }
    }

    /// Why it does not fit, in a sentence; `None` when it fits.
    pub fn reason(&self) -> Option<String> {
        use super::explain::size;
        match *self {
            Self::Fits => None,
            Self::NoUsageAtKill => Some("the kernel gave no usage at the kill to check it".into()),
            Self::Drained {
                total,
                usage_at_kill,
            } => Some(format!(
                "it holds {} of the {} charged at the kill: memory was freed before the read",
                size(total),
                size(usage_at_kill)
            )),
            Self::ChargedSince {
                charged_since,
                could_hold,
                read_after_ns,
            } => Some(format!(
                "read {:.1} s after the kill, it holds at least {} more than the {} the memcg \
                 could still hold from the kill: memory charged after it",
                read_after_ns as f64 / 1e9,
                size(charged_since),
                size(could_hold)
            )),
        }
    }
}

/// Judges a snapshot against the kill, in this order:
///
/// 1. no usage at the kill: nothing to judge against, inconsistent;
/// 2. charged since: the most the memcg can still hold from the kill is the
///    usage at the kill, less the victim's anonymous RSS once a late read
///    ([`LATE_READ_NS`]) finds the victim exited (its anonymous memory goes
///    with it; its file pages and tmpfs files may stay). A snapshot whose
///    total, or the usage read with it, passes that by more than an eighth
///    of the usage at the kill (at least [`MIN_CHARGED_SINCE`]) shows
///    memory charged after the kill: late;
/// 3. drained: a total under three quarters of the usage at the kill:
///    inconsistent;
/// 4. otherwise it fits.
///
/// Rule 2 without the victim's share is a proof from the page counters
/// alone (more than the memcg held at the kill). With it, it assumes the
/// victim's anonymous memory was its own: a worker forked without exec
/// shares pages with its parent that outlive it, so a late read of a
/// preforking server can be set aside that did fit. That errs toward the
/// kill's own figures, which are exact.
pub fn judge(at_kill: &AtKill, read: &Snapshot) -> Fit {
    let Some(usage) = at_kill.usage else {
        return Fit::NoUsageAtKill;
    };
    let stat = &read.stat;
    let total = stat
        .anon
        .saturating_add(stat.file)
        .saturating_add(stat.kernel)
        .saturating_add(stat.sock);
    let seen = total.max(read.usage_now.unwrap_or(0));
    let read_after_ns = read.time_ns.saturating_sub(at_kill.time_ns);
    let freed = match read_after_ns >= LATE_READ_NS && read.victim_exited {
        true => at_kill.victim_anon.unwrap_or(0).min(usage),
        false => 0,
    };
    let could_hold = usage - freed;
    let margin = (usage / 8).max(MIN_CHARGED_SINCE);
    if seen > could_hold.saturating_add(margin) {
        return Fit::ChargedSince {
            charged_since: seen - could_hold,
            could_hold,
            read_after_ns,
        };
    }
    if total.saturating_mul(4) < usage.saturating_mul(3) {
        return Fit::Drained {
            total,
            usage_at_kill: usage,
        };
    }
    Fit::Fits
}

/// The kill's time on the clock `/proc/<pid>/stat` gives process start
/// times in (CLOCK_BOOTTIME, in clock ticks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillClock {
    /// The kill on CLOCK_BOOTTIME, ns.
    pub boot_ns: u64,
    /// One clock tick (`sysconf(_SC_CLK_TCK)`), ns.
    pub tick_ns: u64,
}

impl KillClock {
    /// The kill at CLOCK_MONOTONIC `kernel_time_ns`, on this machine's
    /// clocks now.
    pub fn of(kernel_time_ns: u64) -> Self {
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
            hz if hz > 0 => hz as u64,
            _ => 100,
        };
        Self {
            boot_ns: crate::clock::boottime_ns(kernel_time_ns),
            tick_ns: 1_000_000_000 / hz,
        }
    }

    /// True when a process whose `starttime` is `start_ticks` provably
    /// started after the kill. The kernel rounds a start time down to a
    /// tick, so a process started in the kill's own tick is taken to have
    /// been there (it may have been).
    pub fn started_after(&self, start_ticks: u64) -> bool {
        start_ticks.saturating_mul(self.tick_ns) > self.boot_ns
    }
}

/// `starttime` (field 22, clock ticks since boot) and the state letter
/// (field 3) of a `/proc/<pid>/stat` line; the name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Reads a process's state and start time from `procfs`.
pub fn read_stat(procfs: &Path, pid: u32) -> io::Result<Option<(char, u64)>> {
    let text = fs::read_to_string(procfs.join(pid.to_string()).join("stat"))?;
    Ok(parse_stat(&text))
}

/// True when the victim `pid` has exited: no `/proc/<pid>`, a zombie (its
/// memory is released before it becomes one), or its pid now a process
/// that started after the kill. Reads the victim's `stat` when it is still
/// there, which takes a reference to its memory: call it only for a late
/// read, never while the victim may still be exiting.
pub fn victim_exited(procfs: &Path, pid: u32, kill: &KillClock) -> bool {
    match read_stat(procfs, pid) {
        Err(e) => e.kind() == io::ErrorKind::NotFound,
        Ok(Some((state, start))) => matches!(state, 'Z' | 'X') || kill.started_after(start),
        Ok(None) => false,
    }
}

/// The memcg's page counter now: `memory.current` (v2) or
/// `memory.usage_in_bytes` (v1) of the cgroup directory `dir`.
pub fn read_usage(dir: &Path) -> Option<u64> {
    ["memory.current", "memory.usage_in_bytes"]
        .iter()
        .find_map(|file| fs::read_to_string(dir.join(file)).ok())
        .and_then(|text| text.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const SECOND: u64 = 1_000_000_000;

    /// A 64 MiB memcg killed at its limit, its victim holding 60 MiB of
    /// anonymous memory, at t = 100 s.
    fn at_kill() -> AtKill {
        AtKill {
            usage: Some(64 * MIB),
            victim_anon: Some(60 * MIB),
            time_ns: 100 * SECOND,
        }
    }

    fn read(stat: MemcgStat, after_ns: u64, victim_exited: bool) -> Snapshot {
        Snapshot {
            stat,
            usage_now: None,
            time_ns: 100 * SECOND + after_ns,
            victim_exited,
        }
    }

    fn anon(bytes: u64) -> MemcgStat {
        MemcgStat {
            anon: bytes,
            ..MemcgStat::default()
        }
    }

    #[test]
    fn a_read_before_the_victim_exits_fits() {
        // Read 2 ms after the kill, the victim's memory still charged.
        let fit = judge(&at_kill(), &read(anon(63 * MIB), 2_000_000, false));
        assert_eq!(fit, Fit::Fits);
        assert_eq!(fit.source(), MemcgStatSource::AfterKill);
        assert_eq!(fit.reason(), None);
    }

    #[test]
    fn a_restarted_container_that_refilled_tmpfs_is_late() {
        // The case: the victim is gone, its container restarted
        // and wrote 50 MiB to tmpfs; read 5 s after the kill.
        let refilled = MemcgStat {
            anon: 2 * MIB,
            file: 50 * MIB,
            shmem: 50 * MIB,
            kernel: MIB,
            ..MemcgStat::default()
        };
        let fit = judge(&at_kill(), &read(refilled, 5 * SECOND, true));
        assert_eq!(
            fit,
            Fit::ChargedSince {
                charged_since: 49 * MIB,
                could_hold: 4 * MIB,
                read_after_ns: 5 * SECOND
            }
        );
        assert_eq!(fit.source(), MemcgStatSource::AfterKillLate);
        assert_eq!(
            fit.reason().unwrap(),
            "read 5.0 s after the kill, it holds at least 49 MiB more than the 4 MiB the memcg \
             could still hold from the kill: memory charged after it"
        );
        // Its total is over three quarters of the usage at the kill: the
        // same read on time, the victim maybe still there, passes.
        assert_eq!(
            judge(&at_kill(), &read(refilled, 2_000_000, false)),
            Fit::Fits
        );
    }

    #[test]
    fn the_victims_share_counts_only_for_a_late_read_of_an_exited_victim() {
        let stat = anon(50 * MIB);
        // On time, or the victim not known gone: it may still hold its
        // memory, so 50 MiB of 64 fits.
        assert_eq!(judge(&at_kill(), &read(stat, 10_000_000, true)), Fit::Fits);
        assert_eq!(judge(&at_kill(), &read(stat, 5 * SECOND, false)), Fit::Fits);
        assert!(matches!(
            judge(&at_kill(), &read(stat, 5 * SECOND, true)),
            Fit::ChargedSince { .. }
        ));
        // Without its RSS nothing is subtracted.
        let unknown = AtKill {
            victim_anon: None,
            ..at_kill()
        };
        assert_eq!(judge(&unknown, &read(stat, 5 * SECOND, true)), Fit::Fits);
    }

    #[test]
    fn usage_grown_past_the_kill_is_late_at_any_time() {
        // A limit raised after the kill (an in-place resize), read on time:
        // the page counter alone proves what was charged since.
        let mut snapshot = read(anon(60 * MIB), 1_000_000, false);
        snapshot.usage_now = Some(80 * MIB);
        assert!(matches!(
            judge(&at_kill(), &snapshot),
            Fit::ChargedSince {
                charged_since,
                could_hold,
                ..
            } if charged_since == 16 * MIB && could_hold == 64 * MIB
        ));
        // Within an eighth of the usage at the kill: counter noise, fits.
        snapshot.usage_now = Some(72 * MIB);
        assert_eq!(judge(&at_kill(), &snapshot), Fit::Fits);
    }

    #[test]
    fn a_small_excess_is_not_late_and_a_drained_read_is_inconsistent() {
        // Exited victim, read late: 4 MiB could stay; 11 MiB is within the
        // 8 MiB margin's reach (4 + 8 = 12) but under three quarters.
        let fit = judge(&at_kill(), &read(anon(11 * MIB), 3 * SECOND, true));
        assert_eq!(
            fit,
            Fit::Drained {
                total: 11 * MIB,
                usage_at_kill: 64 * MIB
            }
        );
        assert_eq!(fit.source(), MemcgStatSource::AfterKillInconsistent);
        assert!(fit.reason().unwrap().contains("freed before the read"));
        // A tiny memcg: the margin is at least 1 MiB.
        let tiny = AtKill {
            usage: Some(2 * MIB),
            victim_anon: Some(2 * MIB),
            time_ns: 0,
        };
        let snapshot = Snapshot {
            stat: anon(MIB - 4096),
            usage_now: None,
            time_ns: 2 * SECOND,
            victim_exited: true,
        };
        assert!(matches!(judge(&tiny, &snapshot), Fit::Drained { .. }));
    }

    #[test]
    fn no_usage_at_the_kill_is_inconsistent() {
        let at_kill = AtKill {
            usage: None,
            ..at_kill()
        };
        let fit = judge(&at_kill, &read(anon(MIB), 0, false));
        assert_eq!(fit, Fit::NoUsageAtKill);
        assert_eq!(fit.source(), MemcgStatSource::AfterKillInconsistent);
    }

    #[test]
    fn start_times_in_the_kills_tick_count_as_before() {
        // The kill at 12.345 s of boot time, 100 ticks a second.
        let kill = KillClock {
            boot_ns: 12_345_000_000,
            tick_ns: 10_000_000,
        };
        assert!(!kill.started_after(1233), "12.33 s: before");
        assert!(
            !kill.started_after(1234),
            "12.34 s, the kill's own tick: maybe before"
        );
        assert!(kill.started_after(1235), "12.35 s: after");
    }

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        // A name with spaces and a parenthesis; starttime 4711.
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 4711 \
                    1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        assert_eq!(parse_stat(line), Some(('S', 4711)));
        assert_eq!(parse_stat("42 (x) Z"), None, "cut short");
        let me = read_stat(Path::new("/proc"), std::process::id())
            .unwrap()
            .unwrap();
        let now = KillClock::of(crate::clock::monotonic_now_ns());
        assert!(!now.started_after(me.1), "this test started before now");
        let at_boot = KillClock { boot_ns: 0, ..now };
        assert!(at_boot.started_after(me.1));
    }

    #[test]
    fn a_gone_or_zombie_victim_has_exited_and_a_live_one_not() {
        let now = KillClock::of(crate::clock::monotonic_now_ns());
        assert!(!victim_exited(Path::new("/proc"), std::process::id(), &now));
        assert!(
            victim_exited(Path::new("/proc"), u32::MAX, &now),
            "no such pid"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it has run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !victim_exited(Path::new("/proc"), pid, &now) {
            assert!(std::time::Instant::now() < deadline, "never a zombie");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
        // Its pid held by a process that started after the kill (this
        // one, against a kill at boot): the victim is gone.
        let at_boot = KillClock { boot_ns: 0, ..now };
        assert!(victim_exited(
            Path::new("/proc"),
            std::process::id(),
            &at_boot
        ));
    }
}
