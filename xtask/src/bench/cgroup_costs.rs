//! The naming and reconciliation costs with `n` cgroups on the node: naming
//! a cgroup id by kernfs file handle against a walk of the hierarchy, a
//! full reconciliation, and oom-probe's own CPU per reconcile tick.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use oom_probe_cgroupfs::{
    counters,
    resolver::CgroupResolver,
    testing::{memory_root, MemoryCgroup},
};
use serde::Serialize;

use super::{
    measure::{free_loopback_addr, http_get, process_stats, stop, thread_cpu_ns, MIB},
    sightings::{start_oom_probe, DEFAULT_RING},
};

/// The costs with one cgroup count (an element of `cgroups` in the JSON).
#[derive(Debug, Serialize)]
pub(crate) struct CgroupCosts {
    /// Cgroups this phase created under one parent.
    pub(crate) cgroups_created: usize,
    /// Cgroups in the whole memory hierarchy (the node's own included).
    pub(crate) cgroups_in_hierarchy: usize,
    /// How the resolver looks ids up (`Debug` of its lookup).
    pub(crate) lookup: String,
    /// Ids (of up to 100) named by file handle.
    pub(crate) named_by_handle: usize,
    /// Thread CPU per id named by file handle, µs.
    pub(crate) name_by_handle_us: f64,
    /// Wall time per id named by file handle, µs.
    pub(crate) name_by_handle_wall_us: f64,
    /// The walk found the id.
    pub(crate) walk_found: bool,
    /// Thread CPU of one walk naming one id, µs.
    pub(crate) name_by_walk_us: f64,
    /// Thread CPU of a walk reading every cgroup's kill counter, ms.
    pub(crate) full_reconcile_cpu_ms: f64,
    /// Kill counters that walk read.
    pub(crate) counters_read: usize,
    /// oom-probe's own CPU per tick (its thread CPU clock, from /metrics), ms.
    pub(crate) agent_tick_cpu_ms: f64,
    /// Ticks oom-probe made in the 5 s window.
    pub(crate) agent_ticks: f64,
    /// Walks of the hierarchy among them.
    pub(crate) agent_walks: f64,
    /// oom-probe's whole process CPU over the window, per tick, ms.
    pub(crate) agent_process_cpu_ms_per_tick: f64,
    /// oom-probe's RSS at the end of the window.
    pub(crate) agent_rss_kib: u64,
}

/// The cost of naming a cgroup id and of a reconciliation tick with `n`
/// cgroups present (created here, under one parent, and removed after):
/// - naming by kernfs file handle (what oom-probe does), per id, over up to
///   100 ids, against one walk of the hierarchy (the fallback, and what
///   every unknown id cost before);
/// - a full reconciliation (walk, and every cgroup's kill counter read),
///   in CPU time, which oom-probe does only when the node's kill count says
///   a kill may be unaccounted for;
/// - oom-probe's own CPU per tick with `--reconcile-interval 0.1` for 5 s
///   (the steady state: one read of /proc/vmstat per tick): measured by
///   oom-probe around each tick (thread CPU clock,
///   `oom_probe_reconcile_cpu_seconds_total` over
///   `oom_probe_reconcile_ticks_total`), with the walks in the window (kills
///   elsewhere on the node cause some); the process's whole CPU over the
///   ticks it really ran is printed beside it.
pub(crate) fn cgroup_costs(n: usize) -> Result<CgroupCosts> {
    let (root, _) = memory_root()?;
    let parent = MemoryCgroup::create(64 * MIB)?;
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        children.push(parent.create_child(None)?);
    }
    let total = CgroupResolver::new(&root).walk().len();
    let ids: Vec<u64> = children
        .iter()
        .rev()
        .take(100)
        .filter_map(|c| fs::metadata(c.path()).ok().map(|m| m.ino()))
        .collect();
    let mut by_handle = CgroupResolver::new(&root);
    by_handle.path_of(fs::metadata(&root)?.ino()); // decides how to look up
    let lookup = format!("{:?}", by_handle.lookup());
    let started = thread_cpu_ns();
    let wall = Instant::now();
    let named = ids
        .iter()
        .filter(|&&id| by_handle.path_of(id).is_some())
        .count();
    let handle_cpu_ns = thread_cpu_ns() - started;
    let handle_wall = wall.elapsed();
    let started = thread_cpu_ns();
    let walked = CgroupResolver::new(&root)
        .walk_only()
        .path_of(ids[0])
        .is_some();
    let walk_cpu_ns = thread_cpu_ns() - started;
    let started = thread_cpu_ns();
    let resolver = CgroupResolver::new(&root);
    let counted = resolver
        .walk()
        .iter()
        .filter(|(_, path)| {
            counters::oom_kills(
                &root.join(path.trim_start_matches('/')),
                counters::Scope::Local,
            )
            .is_ok()
        })
        .count();
    let full_cpu_ns = thread_cpu_ns() - started;
    let (tx, _rx) = mpsc::channel();
    let listen = free_loopback_addr();
    let mut tool = start_oom_probe(
        &tx,
        "oom-probe",
        DEFAULT_RING,
        &["--reconcile-interval", "0.1", "--listen", &listen],
    )?;
    thread::sleep(Duration::from_secs(1)); // past the first (baseline) walk
    let before = process_stats(tool.child.id());
    let metrics_before = reconcile_metrics(&listen)?;
    let seconds = 5;
    thread::sleep(Duration::from_secs(seconds));
    let after = process_stats(tool.child.id());
    let metrics_after = reconcile_metrics(&listen)?;
    stop(&mut tool.child);
    let [ticks, walks, tick_cpu_s] = std::array::from_fn(|i| metrics_after[i] - metrics_before[i]);
    drop(children);
    drop(parent);
    Ok(CgroupCosts {
        cgroups_created: n,
        cgroups_in_hierarchy: total,
        lookup,
        named_by_handle: named,
        name_by_handle_us: handle_cpu_ns as f64 / named.max(1) as f64 / 1000.0,
        name_by_handle_wall_us: handle_wall.as_secs_f64() * 1e6 / named.max(1) as f64,
        walk_found: walked,
        name_by_walk_us: walk_cpu_ns as f64 / 1000.0,
        full_reconcile_cpu_ms: full_cpu_ns as f64 / 1e6,
        counters_read: counted,
        agent_tick_cpu_ms: tick_cpu_s * 1e3 / ticks.max(1.0),
        agent_ticks: ticks,
        agent_walks: walks,
        agent_process_cpu_ms_per_tick: after.cpu_ms.saturating_sub(before.cpu_ms) as f64
            / ticks.max(1.0),
        agent_rss_kib: after.rss_kib,
    })
}

/// `[ticks, walks, CPU seconds]` of oom-probe's reconciliation so far, from
/// its /metrics at `listen`.
fn reconcile_metrics(listen: &str) -> Result<[f64; 3]> {
    let (_, text) = http_get(listen, "/metrics")?;
    parse_reconcile_metrics(&text)
}

/// [`reconcile_metrics`] from the exposition text; an error names a missing
/// metric.
fn parse_reconcile_metrics(text: &str) -> Result<[f64; 3]> {
    let value = |name: &str| -> Result<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .with_context(|| format!("no {name} in oom-probe's /metrics"))
    };
    Ok([
        value("oom_probe_reconcile_ticks_total")?,
        value("oom_probe_reconcile_walks_total")?,
        value("oom_probe_reconcile_cpu_seconds_total")?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reconcile_counters() {
        let text = "# HELP oom_probe_reconcile_ticks_total Ticks.\n\
            # TYPE oom_probe_reconcile_ticks_total counter\n\
            oom_probe_reconcile_ticks_total 48\n\
            oom_probe_reconcile_walks_total 2\n\
            oom_probe_reconcile_cpu_seconds_total 0.0125\n\
            oom_probe_reconcile_cpu_seconds_total_created 1.7e9\n";
        assert_eq!(parse_reconcile_metrics(text).unwrap(), [48.0, 2.0, 0.0125]);
    }

    #[test]
    fn a_missing_counter_is_named() {
        let err = parse_reconcile_metrics("oom_probe_reconcile_ticks_total 1\n").unwrap_err();
        assert!(
            err.to_string().contains("oom_probe_reconcile_walks_total"),
            "{err}"
        );
    }
}
