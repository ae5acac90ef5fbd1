//! The bursts phase: N processes killed at once in N cgroups, at several
//! ring buffer sizes, each repeated: events reported against the kernel's
//! own counters, oom-probe's RSS and CPU during the burst, and per size the
//! spread of lost records over the repeats.

use std::{
    process::Child,
    sync::mpsc::{self, Receiver, Sender},
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use oom_probe_cgroupfs::testing::MemoryCgroup;
use serde::Serialize;

use super::{
    measure::{hog, load_average, process_stats, stop, MIB},
    sightings::{lost_from_stderr, start_oom_probe, Sighting},
    stats::lost_spread,
};

/// One burst size at one ring buffer size, over its repeats (an element of
/// `bursts` in the JSON).
#[derive(Debug, Serialize)]
pub(crate) struct BurstSize {
    /// Processes killed at once.
    pub(crate) processes: usize,
    /// oom-probe's `--ring-buffer-size`.
    pub(crate) ring_buffer_bytes: u32,
    /// Fewest lost records in a run (null for no runs).
    pub(crate) lost_min: Option<u64>,
    /// The median run's lost records (the upper one of an even count).
    pub(crate) lost_median: Option<u64>,
    /// Most lost records in a run.
    pub(crate) lost_max: Option<u64>,
    /// Runs that lost any record.
    pub(crate) runs_with_loss: usize,
    /// Runs where reported + lost fell short of the kernel's count.
    pub(crate) runs_reported_plus_lost_short_of_kernel: usize,
    /// Every run, in the order made.
    pub(crate) runs: Vec<BurstRun>,
}

/// One burst.
#[derive(Debug, Serialize)]
pub(crate) struct BurstRun {
    /// Processes killed at once.
    pub(crate) processes: usize,
    /// oom-probe's `--ring-buffer-size`.
    pub(crate) ring_buffer_bytes: u32,
    /// Kills the cgroups' own counters counted.
    pub(crate) kernel_counted: u64,
    /// Kills oom-probe printed.
    pub(crate) reported: u64,
    /// Records oom-probe said it lost (ring buffer full).
    pub(crate) lost: u64,
    /// oom-probe's RSS 2 s after the last kill.
    pub(crate) rss_kib: u64,
    /// oom-probe's CPU over the burst.
    pub(crate) cpu_ms: u64,
    /// From starting the hogs to the exit of the last one.
    pub(crate) killed_in_ms: u64,
    /// `/proc/loadavg` (1, 5, 15 min) just before.
    pub(crate) load_average: Vec<f64>,
    /// Kernel-counted kills over `killed_in_ms`.
    pub(crate) kernel_kills_per_s: f64,
    /// oom-probe's CPU over the burst per kill reported, µs.
    pub(crate) cpu_us_per_kill: f64,
}

impl BurstSize {
    /// The summary of `runs` of `processes` kills at `ring_buffer_bytes`.
    fn of(processes: usize, ring_buffer_bytes: u32, runs: Vec<BurstRun>) -> Self {
        let spread = lost_spread(runs.iter().map(|r| r.lost).collect());
        let short = runs
            .iter()
            .filter(|r| r.reported + r.lost < r.kernel_counted)
            .count();
        Self {
            processes,
            ring_buffer_bytes,
            lost_min: spread.min,
            lost_median: spread.median,
            lost_max: spread.max,
            runs_with_loss: spread.runs_with_loss,
            runs_reported_plus_lost_short_of_kernel: short,
            runs,
        }
    }
}

/// The bursts at every size and ring size, each repeated `repeats` times.
/// The repeats are interleaved (every ring size once, then again), so a
/// burst of load from elsewhere on the machine spreads over the sizes.
pub(crate) fn bursts(
    sizes: &[usize],
    ring_sizes: &[u32],
    repeats: usize,
) -> Result<Vec<BurstSize>> {
    let mut rows = Vec::new();
    for &n in sizes {
        let mut runs: Vec<Vec<BurstRun>> = ring_sizes.iter().map(|_| Vec::new()).collect();
        for _ in 0..repeats.max(1) {
            for (i, &ring) in ring_sizes.iter().enumerate() {
                runs[i].push(burst(n, ring)?);
            }
        }
        for (&ring, runs) in ring_sizes.iter().zip(runs) {
            rows.push(BurstSize::of(n, ring, runs));
        }
    }
    Ok(rows)
}

/// `n` hogs started at once, each in its own 8 MiB cgroup, under oom-probe
/// with a `ring`-byte ring buffer.
fn burst(n: usize, ring: u32) -> Result<BurstRun> {
    let (tx, rx): (Sender<Sighting>, Receiver<Sighting>) = mpsc::channel();
    let mut tool = start_oom_probe(&tx, "oom-probe", ring, &[])?;
    let cgroups: Vec<MemoryCgroup> = (0..n)
        .map(|_| MemoryCgroup::create(8 * MIB))
        .collect::<std::io::Result<_>>()?;
    let before = process_stats(tool.child.id());
    let load = load_average();
    let started = Instant::now();
    let mut hogs: Vec<Child> = cgroups
        .iter()
        .map(|c| {
            hog()
                .arg("--cgroup")
                .arg(c.path())
                .args(["--comm", "burst-hog", "--mb", "32"])
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let pids: Vec<u32> = hogs.iter().map(Child::id).collect();
    for hog in &mut hogs {
        hog.wait()?;
    }
    let killed_in = started.elapsed();
    thread::sleep(Duration::from_secs(2));
    let during = process_stats(tool.child.id());
    let kernel: u64 = cgroups
        .iter()
        .map(|c| c.kernel_oom_kills().unwrap_or(0))
        .sum();
    stop(&mut tool.child);
    thread::sleep(Duration::from_millis(200));
    let lost = lost_from_stderr(&tool);
    let reported = rx.try_iter().filter(|s| pids.contains(&s.pid)).count() as u64;
    let cpu_ms = during.cpu_ms.saturating_sub(before.cpu_ms);
    Ok(BurstRun {
        processes: n,
        ring_buffer_bytes: ring,
        kernel_counted: kernel,
        reported,
        lost,
        rss_kib: during.rss_kib,
        cpu_ms,
        killed_in_ms: killed_in.as_millis() as u64,
        load_average: load,
        kernel_kills_per_s: kernel as f64 / killed_in.as_secs_f64().max(1e-3),
        cpu_us_per_kill: (cpu_ms * 1000) as f64 / reported.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kernel_counted: u64, reported: u64, lost: u64) -> BurstRun {
        BurstRun {
            processes: 50,
            ring_buffer_bytes: 4096,
            kernel_counted,
            reported,
            lost,
            rss_kib: 0,
            cpu_ms: 0,
            killed_in_ms: 0,
            load_average: Vec::new(),
            kernel_kills_per_s: 0.0,
            cpu_us_per_kill: 0.0,
        }
    }

    #[test]
    fn summarises_lost_records_and_shortfalls() {
        let size = BurstSize::of(
            50,
            4096,
            vec![run(50, 50, 0), run(50, 40, 10), run(50, 45, 2)],
        );
        assert_eq!(
            (size.lost_min, size.lost_median, size.lost_max),
            (Some(0), Some(2), Some(10))
        );
        assert_eq!(size.runs_with_loss, 2);
        // 45 + 2 < 50: one run has kills neither reported nor counted lost.
        assert_eq!(size.runs_reported_plus_lost_short_of_kernel, 1);
        assert_eq!(size.runs.len(), 3);
    }
}
