//! The tools that report kills, as the bench runs them: oom-probe, bpftrace
//! on `oom:mark_victim` and the kmsg reader, each a process whose stdout a
//! reader thread turns into [`Sighting`]s (which pid, how long after the
//! kernel's timestamp) sent to one channel.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, Sender},
    thread,
};

use anyhow::{Context, Result};
use oom_probe_cgroupfs::clock::monotonic_ns;
use serde::Deserialize;

use super::measure::{oom_probe, spawn_until_ready};

/// oom-probe's default `--ring-buffer-size` (bytes): every phase but the
/// bursts (which vary it) measures the agent as it ships.
pub(crate) const DEFAULT_RING: u32 = 256 * 1024;

/// One kill as one tool saw it.
pub(crate) struct Sighting {
    /// The tool's name ([`Running::name`]).
    pub(crate) tool: &'static str,
    /// The victim's pid.
    pub(crate) pid: u32,
    /// From the kernel's timestamp of the kill to the line in the reader
    /// thread (CLOCK_MONOTONIC), in nanoseconds.
    pub(crate) latency_ns: u64,
    /// The event named the victim's pod.
    pub(crate) named_pod: bool,
}

/// A tool under test: its process, and its stderr lines where it is ours.
pub(crate) struct Running {
    /// The tool's name in the table and in its [`Sighting`]s.
    pub(crate) name: &'static str,
    /// Its process.
    pub(crate) child: Child,
    /// oom-probe's stderr lines (for [`lost_from_stderr`]); `None` for the
    /// other tools.
    pub(crate) stderr: Option<Receiver<String>>,
}

/// The fields of an oom-probe kill event the bench reads.
#[derive(Deserialize)]
struct KillLine {
    kernel_time_ns: Option<u64>,
    victim: Option<Victim>,
    kubernetes: Option<Kubernetes>,
}

#[derive(Deserialize)]
struct Victim {
    pid: Option<u32>,
}

#[derive(Deserialize)]
struct Kubernetes {
    pod: Option<String>,
}

/// `(victim pid, kernel_time_ns, names a pod)` of an oom-probe JSON line
/// that reports a kill; `None` for any other line.
fn read_kill_line(line: &str) -> Option<(u32, u64, bool)> {
    let event: KillLine = serde_json::from_str(line).ok()?;
    let named_pod = event.kubernetes.and_then(|k| k.pod).is_some();
    Some((event.victim?.pid?, event.kernel_time_ns?, named_pod))
}

/// `oom-probe watch` with `--ring-buffer-size ring` and `extra_args`, its
/// kills sent to `tx` as `name`; its stderr kept for [`lost_from_stderr`].
pub(crate) fn start_oom_probe(
    tx: &Sender<Sighting>,
    name: &'static str,
    ring: u32,
    extra_args: &[&str],
) -> Result<Running> {
    let mut command = oom_probe();
    command
        .args([
            "--ring-buffer-size",
            &ring.to_string(),
            "--userspace-killers",
            "",
        ])
        .args(extra_args);
    let (child, stdout, stderr) = spawn_until_ready(&mut command, false)?;
    let stdout = BufReader::new(stdout);
    let tx = tx.clone();
    thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let now = monotonic_ns();
            let Some((pid, kernel, named_pod)) = read_kill_line(&line) else {
                continue;
            };
            let _ = tx.send(Sighting {
                tool: name,
                pid,
                latency_ns: now.saturating_sub(kernel),
                named_pod,
            });
        }
    });
    Ok(Running {
        name,
        child,
        stderr: Some(stderr),
    })
}

/// bpftrace printing `<nsecs> <pid> <comm>` on `oom:mark_victim`.
pub(crate) fn start_bpftrace(tx: &Sender<Sighting>) -> Result<Running> {
    let script =
        r#"tracepoint:oom:mark_victim { printf("%lld %d %s\n", nsecs, args->pid, comm); }"#;
    let mut child = Command::new("bpftrace")
        .args(["-B", "line", "-e", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run bpftrace (apt-get install bpftrace)")?;
    forward_sightings(&mut child, tx, "bpftrace", 1);
    Ok(Running {
        name: "bpftrace",
        child,
        stderr: None,
    })
}

/// This binary's `kmsg-reader` (node-problem-detector's rule:
/// `Killed process \d+ (.+) total-vm:...`).
pub(crate) fn start_kmsg_reader(tx: &Sender<Sighting>) -> Result<Running> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("kmsg-reader")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    // kmsg stamps records in microseconds.
    forward_sightings(&mut child, tx, "kmsg regex", 1000);
    Ok(Running {
        name: "kmsg regex",
        child,
        stderr: None,
    })
}

/// `(kernel time, pid)` of a `<kernel time> <pid> ...` line.
fn time_and_pid(line: &str) -> Option<(u64, u32)> {
    let mut fields = line.split_whitespace();
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// Reads `<kernel time> <pid> ...` lines from a tool's stdout and sends a
/// sighting per line; `ns_per_unit` converts the tool's time unit.
fn forward_sightings(
    child: &mut Child,
    tx: &Sender<Sighting>,
    tool: &'static str,
    ns_per_unit: u64,
) {
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let tx = tx.clone();
    thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let now = monotonic_ns();
            let Some((time, pid)) = time_and_pid(&line) else {
                continue;
            };
            let _ = tx.send(Sighting {
                tool,
                pid,
                latency_ns: now.saturating_sub(time * ns_per_unit),
                named_pod: false,
            });
        }
    });
}

/// The lost-record total oom-probe printed on stderr as it stopped (0 if
/// it printed none).
pub(crate) fn lost_from_stderr(tool: &Running) -> u64 {
    let Some(lines) = &tool.stderr else { return 0 };
    lines
        .try_iter()
        .filter_map(|line| lost_in_line(&line))
        .max()
        .unwrap_or(0)
}

/// The count before ` record(s) lost` in one stderr line.
fn lost_in_line(line: &str) -> Option<u64> {
    line.split(" record(s) lost")
        .next()?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_kill_event_and_skips_other_lines() {
        let kill = r#"{"type":"oom_kill","kernel_time_ns":123,"victim":{"pid":42,"comm":"x"},"kubernetes":{"pod":"web-0"}}"#;
        assert_eq!(read_kill_line(kill), Some((42, 123, true)));
        let unnamed =
            r#"{"type":"oom_kill","kernel_time_ns":5,"victim":{"pid":7},"kubernetes":null}"#;
        assert_eq!(read_kill_line(unnamed), Some((7, 5, false)));
        let pressure = r#"{"type":"memory_pressure","cgroup_path":"/a"}"#;
        assert_eq!(read_kill_line(pressure), None);
        assert_eq!(read_kill_line("watching"), None);
    }

    #[test]
    fn reads_time_and_pid_of_tool_lines() {
        assert_eq!(time_and_pid("1000 42 hog"), Some((1000, 42)));
        assert_eq!(time_and_pid("Attaching 1 probe..."), None);
        assert_eq!(time_and_pid("12"), None);
    }

    #[test]
    fn reads_the_lost_count() {
        // The line oom-probe logs as it stops (watch.rs).
        assert_eq!(
            lost_in_line("stopped after 250 kill(s); 17 record(s) lost, 0 undecodable"),
            Some(17)
        );
        // The periodic warning is not the total.
        assert_eq!(
            lost_in_line("3 OOM record(s) lost because the ring buffer was full"),
            None
        );
        assert_eq!(lost_in_line("watching"), None);
    }
}
