//! Measuring a process from outside, shared by every bench phase, the churn
//! and the soak: its RSS and CPU time (`/proc/<pid>/status`, `stat`), this
//! thread's CPU clock, the load average, the machine and the day, and
//! starting and stopping the tools measured (oom-probe, `oom-hog`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

// The test harness's process plumbing and local API server, named here once
// for the bench and the soak.
pub(crate) use oom_probe_test_support::{
    apiserver, free_loopback_addr, http_get, spawn_until_ready,
};

/// One mebibyte, in bytes (cgroup limits).
pub(crate) const MIB: u64 = 1 << 20;

/// A process's memory (KiB, from `/proc/<pid>/status`) and CPU time (ms,
/// utime + stime from `/proc/<pid>/stat`); 0 for what could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ProcessStats {
    /// Resident set (VmRSS).
    pub(crate) rss_kib: u64,
    /// The anonymous part of the RSS (RssAnon: heap, stacks).
    pub(crate) anon_kib: u64,
    /// The file-backed part (RssFile: mostly the binary's own code).
    pub(crate) file_kib: u64,
    /// Peak RSS (VmHWM).
    pub(crate) hwm_kib: u64,
    /// User plus system CPU time since the process started.
    pub(crate) cpu_ms: u64,
}

impl ProcessStats {
    /// The RSS and its split, as the JSON results write it.
    pub(crate) fn rss(&self) -> Rss {
        Rss {
            rss_kib: self.rss_kib,
            anon_kib: self.anon_kib,
            file_kib: self.file_kib,
        }
    }
}

/// A process's RSS and its anonymous and file-backed parts, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Rss {
    /// VmRSS.
    pub(crate) rss_kib: u64,
    /// RssAnon.
    pub(crate) anon_kib: u64,
    /// RssFile.
    pub(crate) file_kib: u64,
}

/// The figures of process `pid` now.
pub(crate) fn process_stats(pid: u32) -> ProcessStats {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    parse_process_stats(&status, &stat, hz)
}

/// [`ProcessStats`] from the text of `/proc/<pid>/status` and `stat`, with
/// `hz` clock ticks a second.
fn parse_process_stats(status: &str, stat: &str, hz: u64) -> ProcessStats {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    // Fields after the ")" of comm (which may hold spaces and parentheses):
    // utime and stime are the 12th and 13th.
    let ticks: u64 = stat
        .rsplit(')')
        .next()
        .map(|rest| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    ProcessStats {
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        file_kib: field("RssFile:"),
        hwm_kib: field("VmHWM:"),
        cpu_ms: ticks * 1000 / hz.max(1),
    }
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in
/// nanoseconds.
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer; the clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages (empty if unreadable).
pub(crate) fn load_average() -> Vec<f64> {
    parse_load_average(&fs::read_to_string("/proc/loadavg").unwrap_or_default())
}

fn parse_load_average(text: &str) -> Vec<f64> {
    text.split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// `<cores> x <CPU model>, kernel <release>`, from /proc.
pub(crate) fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split(':')
                .nth(1)
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    format!("{cores} x {cpu}, kernel {}", kernel.trim())
}

/// Today in UTC, `YYYY-MM-DD`.
pub(crate) fn today() -> String {
    let rfc3339 = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    rfc3339[..10].to_string()
}

/// SIGTERM, then SIGKILL if the tool is still there 5 s later: bpftrace
/// once caught a SIGTERM that came while it attached and never exited,
/// which held a whole bench run.
pub(crate) fn stop(child: &mut Child) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("bench: pid {} ignored SIGTERM for 5 s: SIGKILL", child.id());
    let _ = child.kill();
    let _ = child.wait();
}

/// The oom-probe binary measured: `$OOM_PROBE_BIN`, else the release build.
pub(crate) fn oom_probe_binary() -> PathBuf {
    std::env::var_os("OOM_PROBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "target/release/oom-probe".into())
}

/// `oom-probe watch --output json` of [`oom_probe_binary`], stdin closed.
pub(crate) fn oom_probe() -> Command {
    oom_probe_at(&oom_probe_binary())
}

/// `<binary> watch --output json`, stdin closed.
pub(crate) fn oom_probe_at(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["watch", "--output", "json"])
        .stdin(Stdio::null());
    command
}

/// `oom-probe run` as a DaemonSet runs it: JSON lines on stdout, /metrics
/// on `addr`, its state file and history store in `dir`, a reconciliation
/// every 5 s.
pub(crate) fn agent_with_files(binary: &str, dir: &Path, addr: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["run", "--output", "json", "--listen", addr])
        .arg("--state-file")
        .arg(dir.join("state.json"))
        .arg("--history-file")
        .arg(dir.join("history.redb"))
        .args(["--reconcile-interval", "5"])
        .stdin(Stdio::null());
    command
}

/// The release `oom-hog`, the process the kernel kills.
pub(crate) fn hog() -> Command {
    Command::new("target/release/oom-hog")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\toom-probe\nVmHWM:\t   12524 kB\nVmRSS:\t    9336 kB\n\
        RssAnon:\t    1024 kB\nRssFile:\t    8312 kB\nRssShmem:\t       0 kB\n";

    #[test]
    fn reads_memory_and_cpu_from_proc_text() {
        // comm with a space and a ")" must not shift the fields; utime 150
        // and stime 50 ticks at 100 Hz are 2 s.
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 1 0";
        let stats = parse_process_stats(STATUS, stat, 100);
        assert_eq!(
            stats,
            ProcessStats {
                rss_kib: 9336,
                anon_kib: 1024,
                file_kib: 8312,
                hwm_kib: 12524,
                cpu_ms: 2000,
            }
        );
    }

    #[test]
    fn a_gone_process_reads_as_zero() {
        assert_eq!(parse_process_stats("", "", 100), ProcessStats::default());
    }

    #[test]
    fn load_average_is_the_first_three_fields() {
        assert_eq!(
            parse_load_average("3.66 1.37 0.77 2/345 6789\n"),
            [3.66, 1.37, 0.77]
        );
        assert!(parse_load_average("").is_empty());
    }

    #[test]
    fn today_is_a_date() {
        let today = today();
        assert_eq!(today.len(), 10);
        assert_eq!(today.as_bytes()[4], b'-');
        assert!(today.starts_with("20"));
    }

    #[test]
    fn thread_cpu_clock_advances_with_work() {
        let before = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(thread_cpu_ns() > before, "{x}");
    }
}
