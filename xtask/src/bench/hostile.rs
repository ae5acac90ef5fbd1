//! The hostile phase of `cargo xtask bench` (issue 27.7): the agent
//! (`oom-probe run`, with its state file, history store and HTTP listener,
//! as the DaemonSet runs it) under what a hostile or broken neighbour can
//! do. First a storm of OOM kills (`kills`, by 8 workers each killing hogs
//! in a cgroup of its own) while `/healthz` is asked every 50 ms: the
//! probe's latency during the storm. Then `clients` slow clients, each
//! sending half a request header and holding its connection: the agent's
//! RSS before, with them open and after its header timeout, `/healthz`
//! meanwhile, and how many of them the agent closed. Nothing is asserted.

use std::{
    fs,
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    process::{Child, ChildStdout, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use oom_probe_cgroupfs::testing::MemoryCgroup;
use serde::Serialize;

use super::{
    measure::{
        agent_with_files, free_loopback_addr, hog, http_get, process_stats, spawn_until_ready,
        stop, Rss, MIB,
    },
    stats::{percentiles, Percentiles},
};

/// Workers killing at the same time, each in its own cgroup.
const WORKERS: usize = 8;
/// How often `/healthz` is asked during the storm.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How long the agent sits before the first figures (past its start-up).
const QUIET: Duration = Duration::from_secs(10);
/// The agent's request-header timeout (oom-probe/src/sink/http.rs), plus a
/// margin: past it every slow client should have been closed.
const PAST_HEADER_TIMEOUT: Duration = Duration::from_secs(7);

/// The phase's figures (`hostile` in the JSON).
#[derive(Debug, Serialize)]
pub(crate) struct Hostile {
    /// Kills the storm set out to cause.
    pub(crate) storm_kills: usize,
    /// Kills the storm's cgroups counted (`memory.events` `oom_kill`).
    pub(crate) kernel_kills: u64,
    /// `oom_kill` lines the agent printed.
    pub(crate) reported: u64,
    /// How long the storm took.
    pub(crate) storm_seconds: f64,
    /// `/healthz` requests during the storm, each on a new connection.
    pub(crate) healthz_during_storm: usize,
    /// Of those, the ones that failed or did not answer 200.
    pub(crate) healthz_failed_during_storm: usize,
    /// Their latency, connect to the end of the response (failed ones
    /// left out); null if none answered.
    pub(crate) healthz_during_storm_us: Option<Percentiles>,
    /// Slow clients started (each sends half a request header, holds).
    pub(crate) slow_clients: usize,
    /// Of those, the ones whose connect succeeded.
    pub(crate) slow_clients_connected: usize,
    /// How long connecting them all took.
    pub(crate) slow_clients_open_ms: u64,
    /// `/healthz` once, with them all connected (null if it failed).
    pub(crate) healthz_with_slow_clients_us: Option<u64>,
    /// Of the connected, the ones the agent had closed
    /// `past_header_timeout_seconds` after the last connected.
    pub(crate) slow_clients_closed_by_agent: usize,
    /// That wait.
    pub(crate) past_header_timeout_seconds: u64,
    /// The agent's RSS after the storm, quiet, before the slow clients.
    pub(crate) rss_before_slow_clients: Rss,
    /// With the slow clients just connected.
    pub(crate) rss_with_slow_clients: Rss,
    /// After the header timeout, the clients still holding their sockets.
    pub(crate) rss_after_slow_clients: Rss,
    /// Peak RSS (VmHWM) at the end.
    pub(crate) peak_kib: u64,
}

/// Runs the phase with `binary` (a release `oom-probe`): a storm of
/// `kills` OOM kills, then `clients` slow clients.
pub(crate) fn hostile(binary: &str, kills: usize, clients: usize) -> Result<Hostile> {
    let dir = std::env::temp_dir().join(format!("oom-probe-hostile-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let addr = free_loopback_addr();
    let mut command = agent_with_files(binary, &dir, &addr);
    command.args(["--userspace-killers", ""]);
    let (mut agent, stdout, _stderr) = spawn_until_ready(&mut command, false)?;
    let result = measure(&agent, stdout, &addr, kills, clients);
    stop(&mut agent);
    let _ = fs::remove_dir_all(&dir);
    result
}

/// The storm, then the slow clients, against the running `agent`.
fn measure(
    agent: &Child,
    stdout: ChildStdout,
    addr: &str,
    kills: usize,
    clients: usize,
) -> Result<Hostile> {
    let pid = agent.id();
    let reported = Arc::new(AtomicU64::new(0));
    {
        // Drained, or the agent blocks on a full pipe mid-storm.
        let reported = reported.clone();
        thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            while matches!(std::io::BufRead::read_line(&mut reader, &mut line), Ok(n) if n > 0) {
                if line.contains("\"type\":\"oom_kill\"") {
                    reported.fetch_add(1, Ordering::Relaxed);
                }
                line.clear();
            }
        });
    }
    thread::sleep(QUIET);
    println!("hostile: {kills} kills by {WORKERS} workers, /healthz every {PROBE_EVERY:?}");
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (done, addr) = (done.clone(), addr.to_string());
        thread::spawn(move || {
            let mut latencies = Vec::new();
            let mut failed = 0;
            while !done.load(Ordering::Relaxed) {
                match timed_healthz(&addr) {
                    Some(ns) => latencies.push(ns),
                    None => failed += 1,
                }
                thread::sleep(PROBE_EVERY);
            }
            (latencies, failed)
        })
    };
    let started = Instant::now();
    let kernel_kills = storm(kills)?;
    let storm_seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let (mut latencies, failed) = prober.join().expect("the /healthz prober");
    let asked = latencies.len() + failed;
    thread::sleep(QUIET);
    let before = process_stats(pid);
    println!("hostile: {clients} slow clients");
    let opened = Instant::now();
    let held: Vec<TcpStream> = (0..clients).filter_map(|_| half_a_header(addr)).collect();
    let open_ms = opened.elapsed().as_millis() as u64;
    let healthz = timed_healthz(addr).map(|ns| ns / 1000);
    let with = process_stats(pid);
    thread::sleep(PAST_HEADER_TIMEOUT);
    let closed = held.iter().filter(|s| closed_by_peer(s)).count();
    let after = process_stats(pid);
    let result = Hostile {
        storm_kills: kills,
        kernel_kills,
        reported: reported.load(Ordering::Relaxed),
        storm_seconds,
        healthz_during_storm: asked,
        healthz_failed_during_storm: failed,
        healthz_during_storm_us: percentiles(&mut latencies),
        slow_clients: clients,
        slow_clients_connected: held.len(),
        slow_clients_open_ms: open_ms,
        healthz_with_slow_clients_us: healthz,
        slow_clients_closed_by_agent: closed,
        past_header_timeout_seconds: PAST_HEADER_TIMEOUT.as_secs(),
        rss_before_slow_clients: before.rss(),
        rss_with_slow_clients: with.rss(),
        rss_after_slow_clients: after.rss(),
        peak_kib: after.hwm_kib,
    };
    drop(held);
    Ok(result)
}

/// `kills` OOM kills by [`WORKERS`] workers, each killing `oom-hog`s one
/// after the other in an 8 MiB cgroup of its own; the kills the cgroups
/// counted.
fn storm(kills: usize) -> Result<u64> {
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let share = kills / WORKERS + usize::from(i < kills % WORKERS);
            thread::spawn(move || -> Result<u64> {
                let cgroup = MemoryCgroup::create(8 * MIB)?;
                for _ in 0..share {
                    hog()
                        .arg("--cgroup")
                        .arg(cgroup.path())
                        .args(["--comm", "storm-hog", "--mb", "32"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()?;
                }
                Ok(cgroup.kernel_oom_kills()?)
            })
        })
        .collect();
    let mut counted = 0;
    for worker in workers {
        counted += worker.join().expect("a storm worker")?;
    }
    Ok(counted)
}

/// One `GET /healthz` on a new connection: nanoseconds to the end of a 200
/// response, or `None`.
fn timed_healthz(addr: &str) -> Option<u64> {
    let started = Instant::now();
    match http_get(addr, "/healthz") {
        Ok((200, _)) => Some(started.elapsed().as_nanos() as u64),
        _ => None,
    }
}

/// A connection that sends half a request header (no blank line) and is
/// held; `None` if the connect failed.
fn half_a_header(addr: &str) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).ok()?;
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: oom-probe\r\nX-Slow: ");
    Some(stream)
}

/// Whether the agent has closed `stream` (EOF or reset), read without
/// waiting more than a millisecond.
fn closed_by_peer(stream: &TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1)));
    let mut buf = [0u8; 512];
    loop {
        match (&*stream).read(&mut buf) {
            Ok(0) => return true,
            // A response (a 408, say): closed if its end follows.
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connection_reads_as_closed_and_a_held_one_does_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let held = half_a_header(&addr).unwrap();
        let (mut server_side, _) = listener.accept().unwrap();
        let mut sent = [0u8; 64];
        let n = server_side.read(&mut sent).unwrap();
        assert!(sent[..n].starts_with(b"GET /metrics HTTP/1.1\r\n"));
        assert!(
            !sent[..n].windows(4).any(|w| w == b"\r\n\r\n"),
            "half a header"
        );
        assert!(!closed_by_peer(&held));
        drop(server_side);
        assert!(closed_by_peer(&held));
    }
}
