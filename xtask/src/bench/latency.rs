//! The latency phase: the same sequential kills seen side by side by
//! oom-probe as `watch` runs it, oom-probe with the agent's state file and
//! history store, bpftrace on `oom:mark_victim` and a /dev/kmsg regex reader
//! like node-problem-detector's, each a process of its own (so its RSS
//! counts), with the load average before and after.

use std::{fs, sync::mpsc, thread, time::Duration};

use anyhow::Result;
use oom_probe_cgroupfs::testing::MemoryCgroup;
use serde::Serialize;

use super::{
    measure::{hog, load_average, process_stats, stop, MIB},
    sightings::{start_bpftrace, start_kmsg_reader, start_oom_probe, Sighting, DEFAULT_RING},
    stats::{percentiles, Percentiles},
};

/// What the latency figures measure, printed and written with them.
pub(crate) const LATENCY_MEASURES: &str = "from the kernel's timestamp of the kill \
    (bpf_ktime_get_ns in mark_victim: kernel_time_ns, bpftrace's nsecs; kmsg: its own \
    microsecond stamp) to the line in the bench's reader thread, read from the tool's stdout \
    pipe (CLOCK_MONOTONIC)";

/// The phase's figures (`side_by_side` in the JSON).
#[derive(Debug, Serialize)]
pub(crate) struct SideBySide {
    /// Kills the cgroup's own counter counted.
    pub(crate) kernel_counted: u64,
    /// [`LATENCY_MEASURES`].
    pub(crate) latency_measures: &'static str,
    /// `/proc/loadavg` (1, 5, 15 min) before the tools started.
    pub(crate) load_average_before: Vec<f64>,
    /// And after the kills.
    pub(crate) load_average_after: Vec<f64>,
    /// One row per tool that ran.
    pub(crate) tools: Vec<ToolLatency>,
    /// What a reader of the figures must know (a tool missing, ...).
    pub(crate) notes: Vec<String>,
}

/// One tool's view of the kills.
#[derive(Debug, Serialize)]
pub(crate) struct ToolLatency {
    /// The tool's name in the table.
    pub(crate) tool: &'static str,
    /// Kills made.
    pub(crate) kills: usize,
    /// Kills the tool reported.
    pub(crate) caught: usize,
    /// Null when it caught none.
    pub(crate) latency_us: Option<Percentiles>,
    /// The tool's RSS after the kills.
    pub(crate) rss_kib: u64,
    /// Its report names the container (oom-probe's do).
    pub(crate) names_container: bool,
}

/// `kills` sequential kills in one 16 MiB cgroup, every tool watching.
pub(crate) fn side_by_side(kills: usize) -> Result<SideBySide> {
    let load_before = load_average();
    let (tx, rx) = mpsc::channel();
    // The agent's files (`run` keeps them in /var/lib/oom-probe).
    let files = std::env::temp_dir().join(format!("oom-probe-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&files);
    fs::create_dir_all(&files)?;
    let state = files.join("state.json").to_string_lossy().into_owned();
    let store = files.join("history.redb").to_string_lossy().into_owned();
    let mut tools = vec![
        start_oom_probe(&tx, "oom-probe", DEFAULT_RING, &[])?,
        start_oom_probe(
            &tx,
            "oom-probe +files",
            DEFAULT_RING,
            &["--state-file", &state, "--history-file", &store],
        )?,
    ];
    let mut notes = vec![
        "oom-probe +files: with the agent's state file and history store (as `run`)".to_string(),
    ];
    match start_bpftrace(&tx) {
        Ok(tool) => tools.push(tool),
        Err(err) => notes.push(format!("bpftrace unavailable: {err:#}")),
    }
    tools.push(start_kmsg_reader(&tx)?);
    thread::sleep(Duration::from_secs(3)); // bpftrace compiles its script first
    let cgroup = MemoryCgroup::create(16 * MIB)?;
    let mut pids = Vec::new();
    for _ in 0..kills {
        let mut child = hog()
            .arg("--cgroup")
            .arg(cgroup.path())
            .args(["--comm", "bench-hog", "--mb", "64"])
            .spawn()?;
        pids.push(child.id());
        child.wait()?;
    }
    thread::sleep(Duration::from_secs(2));
    let sightings: Vec<Sighting> = rx.try_iter().filter(|s| pids.contains(&s.pid)).collect();
    let mut rows = Vec::new();
    for tool in &mut tools {
        let stats = process_stats(tool.child.id());
        let mut latencies: Vec<u64> = sightings
            .iter()
            .filter(|s| s.tool == tool.name)
            .map(|s| s.latency_ns)
            .collect();
        rows.push(ToolLatency {
            tool: tool.name,
            kills,
            caught: latencies.len(),
            latency_us: percentiles(&mut latencies),
            rss_kib: stats.rss_kib,
            names_container: tool.name.starts_with("oom-probe"),
        });
        stop(&mut tool.child);
    }
    let _ = fs::remove_dir_all(&files);
    Ok(SideBySide {
        kernel_counted: cgroup.kernel_oom_kills()?,
        latency_measures: LATENCY_MEASURES,
        load_average_before: load_before,
        load_average_after: load_average(),
        tools: rows,
        notes,
    })
}
