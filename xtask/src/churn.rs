//! The churn phase of `cargo xtask bench` (issue 17, point 2): the agent
//! (`oom-probe run`, with its state file, history store and metrics
//! endpoint, as the DaemonSet runs it) idles, then sees `kills` OOM kills
//! spread over `cgroups` memory cgroups that are created, killed in and
//! removed, a few at a time; once every kill is reported and the agent has
//! been quiet for a while, its RSS is read again. Printed: RSS idle, RSS
//! after and the difference, each split into anonymous and file-backed
//! pages (/proc/PID/status RssAnon, RssFile), and the peak (VmHWM).
//! Nothing here is asserted: the figures go to the README.

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
use oom_probe_test_support::spawn_until_ready;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
/// Cgroups alive (and killed in) at the same time.
const AT_ONCE: usize = 8;
/// How long the agent sits before each RSS reading (past its start-up, and
/// past the last kill: at least one reconcile tick of 5 s runs in it).
const QUIET: Duration = Duration::from_secs(15);

/// RSS of a process from /proc/PID/status, in KiB.
#[derive(Clone, Copy, Default)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
    peak: u64,
}

impl Rss {
    fn of(pid: u32) -> Self {
        let stats = crate::bench::process_stats(pid);
        Self {
            total: stats.rss_kib,
            anon: stats.anon_kib,
            file: stats.file_kib,
            peak: stats.hwm_kib,
        }
    }

    fn json(self) -> Value {
        json!({"rss_kib": self.total, "anon_kib": self.anon, "file_kib": self.file})
    }
}

/// Runs the phase with `binary` (a release `oom-probe`) and `hog`
/// (`oom-hog`); returns the figures as JSON.
pub fn churn_footprint(binary: &str, hog: &str, kills: usize, cgroups: usize) -> Result<Value> {
    let per_cgroup = kills.div_ceil(cgroups.max(1)).max(1);
    let dir = std::env::temp_dir().join(format!("oom-probe-churn-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let addr = oom_probe_test_support::free_loopback_addr();
    let mut command = crate::soak::agent_with_files(binary, &dir, &addr);
    command.args(["--userspace-killers", ""]);
    let (mut agent, stdout, _stderr) = spawn_until_ready(&mut command, false)?;
    let pid = agent.id();
    // Kills reported (oom_kill lines) plus kills reported as unobserved.
    let accounted = Arc::new(AtomicU64::new(0));
    let reader = {
        let accounted = accounted.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let n = match event["type"].as_str() {
                    Some("oom_kill") => 1,
                    Some("oom_kill_unobserved") => event["count"].as_u64().unwrap_or(0),
                    _ => 0,
                };
                accounted.fetch_add(n, Ordering::Relaxed);
            }
        })
    };
    thread::sleep(QUIET);
    let idle = Rss::of(pid);
    println!(
        "churn: idle RSS {} KiB; {} kills in {} cgroups ({per_cgroup} each), {AT_ONCE} at a time",
        idle.total,
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
                Rss::of(pid).total
            );
        }
    }
    let churn_seconds = started.elapsed().as_secs_f64();
    let settle = Instant::now() + Duration::from_secs(60);
    while accounted.load(Ordering::Relaxed) < kernel && Instant::now() < settle {
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(QUIET);
    let after = Rss::of(pid);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    agent.wait()?;
    let _ = reader.join();
    let history_bytes = fs::metadata(dir.join("history.redb")).map_or(0, |m| m.len());
    let _ = fs::remove_dir_all(&dir);
    Ok(json!({
        "cgroups_created_and_removed": cgroups,
        "kernel_kills": kernel,
        "reported_plus_unobserved": accounted.load(Ordering::Relaxed),
        "churn_seconds": churn_seconds,
        "quiet_seconds": QUIET.as_secs(),
        "idle": idle.json(),
        "after": after.json(),
        "rss_growth_kib": after.total as i64 - idle.total as i64,
        "anon_growth_kib": after.anon as i64 - idle.anon as i64,
        "peak_kib": after.peak,
        "history_file_bytes": history_bytes,
    }))
}

/// Prints the phase's figures.
pub fn print_churn(churn: &Value) {
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    println!(
        "\nchurn (oom-probe run: state, history, metrics): {} kills counted by the kernel in {} \
         cgroups made and removed, {} reported or unobserved, in {:.0} s",
        cell(&churn["kernel_kills"]),
        cell(&churn["cgroups_created_and_removed"]),
        cell(&churn["reported_plus_unobserved"]),
        churn["churn_seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<24} {:>9} {:>10} {:>10}",
        "", "RSS KiB", "anon KiB", "file KiB"
    );
    for (label, key) in [("idle", "idle"), ("after, quiet again", "after")] {
        let r = &churn[key];
        println!(
            "{:<24} {:>9} {:>10} {:>10}",
            label,
            cell(&r["rss_kib"]),
            cell(&r["anon_kib"]),
            cell(&r["file_kib"])
        );
    }
    println!(
        "RSS after - idle: {} KiB (anonymous {} KiB); peak {} KiB; history file {} bytes",
        cell(&churn["rss_growth_kib"]),
        cell(&churn["anon_growth_kib"]),
        cell(&churn["peak_kib"]),
        cell(&churn["history_file_bytes"])
    );
}
