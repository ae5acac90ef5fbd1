//! The pressure phase: RSS, CPU time and open fds of oom-probe watching
//! `n` memory cgroups for `memory_pressure`, all quiet and with one of them
//! held at its limit, against `--no-pressure`.

use std::{
    fs,
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    thread,
    time::Duration,
};

use anyhow::Result;
use oom_probe_cgroupfs::testing::MemoryCgroup;
use serde::Serialize;

use super::measure::{hog, oom_probe, process_stats, spawn_until_ready, stop, MIB};

/// The figures with one count of watched cgroups (an element of `pressure`
/// in the JSON).
#[derive(Debug, Serialize)]
pub(crate) struct PressureFootprint {
    /// Memory cgroups under `--pressure-cgroup`.
    pub(crate) watched_cgroups: usize,
    /// The window of each of the three runs.
    pub(crate) seconds: u64,
    /// All quiet.
    pub(crate) with_pressure: PressureRun,
    /// One cgroup held at its limit for the whole window.
    pub(crate) one_held_at_limit: PressureRun,
    /// All quiet, `--no-pressure`.
    pub(crate) no_pressure: PressureRun,
}

/// One run of oom-probe over the window.
#[derive(Debug, Serialize)]
pub(crate) struct PressureRun {
    /// At the end of the window.
    pub(crate) rss_kib: u64,
    /// Over the window (start-up excluded).
    pub(crate) cpu_ms: u64,
    /// Open fds at the end of the window.
    pub(crate) open_fds: usize,
    /// `memory_pressure` events printed, start-up to stop.
    pub(crate) memory_pressure_events: usize,
}

/// oom-probe watching `n` memory cgroups (each with a 64 MiB limit, under
/// one parent given as `--pressure-cgroup`) for `seconds`. Three runs: all
/// quiet; one of them held at its limit by `oom-hog --reclaim` for the
/// whole window (notifications, file reads and a `memory_pressure` event a
/// minute); and all quiet with `--no-pressure`.
pub(crate) fn pressure_footprint(n: usize, seconds: u64) -> Result<PressureFootprint> {
    let parent = MemoryCgroup::create(64 * MIB * n as u64)?;
    let children = (0..n)
        .map(|_| parent.create_child(Some(64 * MIB)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let run = |pressure: bool, held: Option<&MemoryCgroup>| -> Result<PressureRun> {
        let mut command = oom_probe();
        command.args(["--no-history", "--pressure-cgroup", parent.relative_path()]);
        if !pressure {
            command.arg("--no-pressure");
        }
        let (mut child, stdout, _stderr) = spawn_until_ready(&mut command, false)?;
        // Other kills on the node are printed too: keep the pipe drained,
        // counting the pressure events.
        let events = thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
                .filter(|line| line.contains("\"type\":\"memory_pressure\""))
                .count()
        });
        let mut holder = held
            .map(|cgroup| hold_at_limit(cgroup, seconds + 5))
            .transpose()?;
        // Let the hog reach the limit before the window starts.
        if holder.is_some() {
            thread::sleep(Duration::from_secs(3));
        }
        let before = process_stats(child.id());
        thread::sleep(Duration::from_secs(seconds));
        let after = process_stats(child.id());
        let fds = fs::read_dir(format!("/proc/{}/fd", child.id()))
            .map(|d| d.count())
            .unwrap_or(0);
        stop(&mut child);
        if let Some(hog) = &mut holder {
            let _ = hog.kill();
            let _ = hog.wait();
        }
        Ok(PressureRun {
            rss_kib: after.rss_kib,
            cpu_ms: after.cpu_ms.saturating_sub(before.cpu_ms),
            open_fds: fds,
            memory_pressure_events: events.join().unwrap_or(0),
        })
    };
    let with_pressure = run(true, None)?;
    let one_held_at_limit = run(true, children.first())?;
    let no_pressure = run(false, None)?;
    drop(children);
    Ok(PressureFootprint {
        watched_cgroups: n,
        seconds,
        with_pressure,
        one_held_at_limit,
        no_pressure,
    })
}

/// Holds `cgroup` (64 MiB limit) at its limit for `seconds`, as the
/// pressure tests do: on v1 anon just under the limit plus a file set
/// re-read through the rest; on v2 anon above `memory.high`, churned.
fn hold_at_limit(cgroup: &MemoryCgroup, seconds: u64) -> Result<Child> {
    let files =
        std::env::temp_dir().join(format!("oom-probe-bench-pressure-{}", std::process::id()));
    let (anon_mb, files_mb, churn_kb) = if cgroup.is_v2() {
        cgroup.write("memory.high", &(32 * MIB).to_string())?;
        (34, 0, 512)
    } else {
        (59, 16, 0)
    };
    Ok(hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .arg("--reclaim")
        .arg(&files)
        .args(["--mb", &anon_mb.to_string()])
        .args(["--files-mb", &files_mb.to_string()])
        .args(["--churn-kb", &churn_kb.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .stdout(Stdio::null())
        .spawn()?)
}
