//! The churn phase of `cargo xtask bench` (issue 17, point 2): the agent
//! (`oom-probe run`, with its state file, history store and metrics
//! endpoint, as the DaemonSet runs it) idles, then sees `kills` OOM kills
//! spread over `cgroups` memory cgroups that are created, killed in and
//! removed, a few at a time; once every kill is reported and the agent has
//! been quiet for a while, its RSS is read again: RSS idle, RSS after and
//! the difference, each split into anonymous and file-backed pages
//! (/proc/PID/status RssAnon, RssFile), and the peak (VmHWM). Nothing here
//! is asserted.

use std::{
    fs,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use oom_probe_cgroupfs::testing::MemoryCgroup;
use serde::{Deserialize, Serialize};

use super::measure::{
    agent_with_files, free_loopback_addr, process_stats, spawn_until_ready, Rss, MIB,
};

/// Cgroups alive (and killed in) at the same time.
const AT_ONCE: usize = 8;
/// How long the agent sits before each RSS reading (past its start-up, and
/// past the last kill: at least one reconcile tick of 5 s runs in it).
const QUIET: Duration = Duration::from_secs(15);

/// The phase's figures (`churn` in the JSON).
#[derive(Debug, Serialize)]
pub(crate) struct Churn {
    /// Cgroups made, killed in and removed.
    pub(crate) cgroups_created_and_removed: usize,
    /// Kills the cgroups' own counters counted, read before each removal.
    pub(crate) kernel_kills: u64,
    /// `oom_kill` events plus the counts of `oom_kill_unobserved` ones.
    pub(crate) reported_plus_unobserved: u64,
    /// How long the kills and cgroup churn took.
    pub(crate) churn_seconds: f64,
    /// The quiet before each RSS reading.
    pub(crate) quiet_seconds: u64,
    /// The agent's RSS before the churn.
    pub(crate) idle: Rss,
    /// And after it, quiet again.
    pub(crate) after: Rss,
    /// RSS after minus idle (negative if it shrank).
    pub(crate) rss_growth_kib: i64,
    /// RssAnon after minus idle.
    pub(crate) anon_growth_kib: i64,
    /// Peak RSS (VmHWM) at the end.
    pub(crate) peak_kib: u64,
    /// Size of the history store at the end.
    pub(crate) history_file_bytes: u64,
}

/// The fields of an agent's event line the phase counts.
#[derive(Deserialize)]
struct EventLine {
    #[serde(rename = "type")]
    kind: String,
    count: Option<u64>,
}

/// Kills one event line accounts for: 1 for `oom_kill`, its count for
/// `oom_kill_unobserved`, else 0.
fn kills_accounted(line: &str) -> u64 {
    match serde_json::from_str::<EventLine>(line) {
        Ok(event) if event.kind == "oom_kill" => 1,
        Ok(event) if event.kind == "oom_kill_unobserved" => event.count.unwrap_or(0),
        _ => 0,
    }
}

/// Runs the phase with `binary` (a release `oom-probe`) and `hog`
/// (`oom-hog`).
pub(crate) fn churn_footprint(
    binary: &str,
    hog: &str,
    kills: usize,
    cgroups: usize,
) -> Result<Churn> {
    let per_cgroup = kills.div_ceil(cgroups.max(1)).max(1);
    let dir = std::env::temp_dir().join(format!("oom-probe-churn-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let addr = free_loopback_addr();
    let mut command = agent_with_files(binary, &dir, &addr);
    command.args(["--userspace-killers", ""]);
    let (mut agent, stdout, _stderr) = spawn_until_ready(&mut command, false)?;
    let pid = agent.id();
    // Kills reported (oom_kill lines) plus kills reported as unobserved.
    let accounted = Arc::new(AtomicU64::new(0));
    let reader = {
        let accounted = accounted.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                accounted.fetch_add(kills_accounted(&line), Ordering::Relaxed);
            }
        })
    };
    thread::sleep(QUIET);
    let idle = process_stats(pid);
    println!(
        "churn: idle RSS {} KiB; {} kills in {} cgroups ({per_cgroup} each), {AT_ONCE} at a time",
        idle.rss_kib,
        per_cgroup * cgroups,
        cgroups
    );
    let started = Instant::now();
    let mut kernel = 0u64;
    let mut made = 0usize;
    while made < cgroups {
        let wave = AT_ONCE.min(cgroups - made);
        let workers: Vec<_> = (0..wave)
            .map(|i| {
                let hog = hog.to_string();
                let limit = (4 + ((made + i) % 5) as u64 * 4) * MIB;
                thread::spawn(move || -> Result<u64> {
                    let cgroup = MemoryCgroup::create(limit)?;
                    for _ in 0..per_cgroup {
                        Command::new(&hog)
                            .arg("--cgroup")
                            .arg(cgroup.path())
                            .args(["--comm", "churn-hog", "--mb", "64"])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .context("cannot run oom-hog")?;
                    }
                    // Removed right away, kills maybe still in flight.
                    Ok(cgroup.kernel_oom_kills()?)
                })
            })
            .collect();
        for worker in workers {
            kernel += worker.join().expect("churn worker")?;
        }
        made += wave;
        if made.is_multiple_of(80) {
            println!(
                "  {made} cgroups, {kernel} kills, {:.0} s, RSS {} KiB",
                started.elapsed().as_secs_f64(),
                process_stats(pid).rss_kib
            );
        }
    }
    let churn_seconds = started.elapsed().as_secs_f64();
    let settle = Instant::now() + Duration::from_secs(60);
    while accounted.load(Ordering::Relaxed) < kernel && Instant::now() < settle {
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(QUIET);
    let after = process_stats(pid);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    agent.wait()?;
    let _ = reader.join();
    let history_bytes = fs::metadata(dir.join("history.redb")).map_or(0, |m| m.len());
    let _ = fs::remove_dir_all(&dir);
    Ok(Churn {
        cgroups_created_and_removed: cgroups,
        kernel_kills: kernel,
        reported_plus_unobserved: accounted.load(Ordering::Relaxed),
        churn_seconds,
        quiet_seconds: QUIET.as_secs(),
        idle: idle.rss(),
        after: after.rss(),
        rss_growth_kib: after.rss_kib as i64 - idle.rss_kib as i64,
        anon_growth_kib: after.anon_kib as i64 - idle.anon_kib as i64,
        peak_kib: after.hwm_kib,
        history_file_bytes: history_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_kills_and_unobserved_counts() {
        assert_eq!(
            kills_accounted(r#"{"type":"oom_kill","victim":{"pid":1}}"#),
            1
        );
        assert_eq!(
            kills_accounted(r#"{"type":"oom_kill_unobserved","cgroup_id":7,"count":3}"#),
            3
        );
        assert_eq!(kills_accounted(r#"{"type":"memory_pressure"}"#), 0);
        assert_eq!(kills_accounted("not json"), 0);
    }
}
