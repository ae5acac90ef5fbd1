//! Reliability under stress (issue 13): the agent SIGKILLed in the middle of
//! a burst of kills and restarted at once, and state storage that fails
//! (missing directory, read-only, full, corrupt). The invariant checked
//! everywhere: for every cgroup, the kills reported plus the kills reported
//! as `oom_kill_unobserved` equal the kernel's own counter; a kill printed
//! twice is the same event (same `event_id`) marked `replayed: true`.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use oom_probe_test_support::{
    free_loopback_addr, history, hog, oom_probe_bin, root_or_skip, spawn_until_ready, MemoryCgroup,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Every JSON line any run of the agent printed, in order, across restarts;
/// a last line cut by a SIGKILL is counted, not parsed.
#[derive(Default)]
struct Printed {
    events: Vec<Value>,
    cut_lines: usize,
}

/// One `oom-probe run` whose stdout goes to a shared [`Printed`].
struct Agent {
    child: Child,
    reader: Option<thread::JoinHandle<()>>,
    stderr: mpsc::Receiver<String>,
}

impl Agent {
    fn start(args: &[&str], printed: &Arc<Mutex<Printed>>) -> Agent {
        Self::start_with_env(args, &[], printed)
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)], printed: &Arc<Mutex<Printed>>) -> Agent {
        let mut command = Command::new(oom_probe_bin());
        command
            .args(["run", "--output", "json"])
            .args(args)
            .envs(env.iter().copied());
        let (child, stdout, stderr) = spawn_until_ready(&mut command, true).unwrap();
        let printed = printed.clone();
        let reader = thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match stdout.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let mut printed = printed.lock().unwrap();
                match serde_json::from_slice::<Value>(&line) {
                    Ok(event) if line.ends_with(b"\n") => printed.events.push(event),
                    _ if !line.ends_with(b"\n") => printed.cut_lines += 1,
                    Err(e) => panic!(
                        "oom-probe printed a line that is not JSON ({e}): {}",
                        String::from_utf8_lossy(&line)
                    ),
                    Ok(_) => unreachable!(),
                }
            }
        });
        Agent {
            child,
            reader: Some(reader),
            stderr,
        }
    }

    /// SIGKILL, and wait until everything it printed has been read.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
    }

    /// SIGTERM (a clean stop), and wait until everything is read.
    fn terminate(mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert!(self.child.wait().unwrap().success());
        self.reader.take().unwrap().join().unwrap();
    }

    /// Stderr lines so far.
    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory of the test's own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("oom-probe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Per cgroup path: the kills printed (distinct event ids) plus the
/// unobserved counts (distinct event ids). Panics on a repeated id that is
/// not marked `replayed: true`, or a repeat that differs from the first.
fn accounted(events: &[Value], paths: &HashSet<String>) -> HashMap<String, u64> {
    let mut first: HashMap<String, Value> = HashMap::new();
    let mut counts: HashMap<String, u64> = HashMap::new();
    for event in events {
        let (path, count) = match event["type"].as_str() {
            Some("oom_kill") => (event["victim"]["cgroup_path"].as_str(), 1),
            Some("oom_kill_unobserved") => (
                event["cgroup_path"].as_str(),
                event["count"].as_u64().unwrap(),
            ),
            _ => continue,
        };
        let Some(path) = path.filter(|p| paths.contains(*p)) else {
            continue;
        };
        let id = event["event_id"].as_str().unwrap_or_default().to_string();
        assert!(!id.is_empty(), "an event without an id: {event}");
        match first.get(&id) {
            Some(earlier) => {
                assert_eq!(
                    event["replayed"], true,
                    "{id} printed twice, the repeat not marked replayed:\n{earlier}\n{event}"
                );
                let mut same = event.clone();
                same["replayed"] = earlier["replayed"].clone();
                assert_eq!(&same, earlier, "a replay differs from the first print");
            }
            None => {
                first.insert(id, event.clone());
                *counts.entry(path.to_string()).or_default() += count;
            }
        }
    }
    counts
}

/// Every event printed for cgroup `path`, and every kill printed without a
/// cgroup path, one JSON line each (what a failed count needs to be read).
fn events_of(events: &[Value], path: &str) -> String {
    events
        .iter()
        .filter(|e| {
            let p = e["victim"]["cgroup_path"]
                .as_str()
                .or(e["cgroup_path"].as_str());
            p == Some(path)
                || (p.is_none() && e["type"].as_str().is_some_and(|t| t.contains("kill")))
        })
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// 500 kills in 50 cgroups (10 rounds, one kill per cgroup per round), the
/// agent SIGKILLed in the middle of round 3 and again of round 7 and
/// restarted at once each time: every kill counted exactly once, reported
/// or unobserved, and the history store holds each event id once.
#[test]
fn a_sigkill_mid_burst_twice_loses_no_kill_and_counts_none_twice() {
    let test = "a_sigkill_mid_burst_twice_loses_no_kill_and_counts_none_twice";
    if !root_or_skip(test) {
        return;
    }
    const CGROUPS: usize = 50;
    const ROUNDS: usize = 10;
    let dir = TempDir::new("burst-crash");
    let state = dir.0.join("state.json");
    let store = dir.0.join("history.redb");
    let (state_arg, store_arg) = (state.to_str().unwrap(), store.to_str().unwrap());
    let cgroups: Vec<MemoryCgroup> = (0..CGROUPS)
        .map(|_| MemoryCgroup::create(8 * MIB).unwrap())
        .collect();
    let paths: HashSet<String> = cgroups
        .iter()
        .map(|c| c.relative_path().to_string())
        .collect();
    let printed = Arc::new(Mutex::new(Printed::default()));
    let start = || {
        Agent::start(
            &[
                "--listen",
                &free_loopback_addr(),
                "--state-file",
                state_arg,
                "--history-file",
                store_arg,
                "--reconcile-interval",
                "0.3",
            ],
            &printed,
        )
    };
    let mut agent = start();
    // The first reconcile records the baseline (the state file appears).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.exists() {
        assert!(Instant::now() < deadline, "no state file written");
        thread::sleep(Duration::from_millis(50));
    }
    for round in 0..ROUNDS {
        let mut hogs: Vec<Child> = cgroups
            .iter()
            .map(|c| {
                hog()
                    .arg("--cgroup")
                    .arg(c.path())
                    .args(["--comm", &format!("crash-{round}"), "--mb", "32"])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        if round == 3 || round == 7 {
            // Mid-round: some of these kills are done, some are coming.
            thread::sleep(Duration::from_millis(150));
            agent.kill();
            agent = start();
        }
        for hog in &mut hogs {
            hog.wait().unwrap();
        }
    }
    let kernel: HashMap<String, u64> = cgroups
        .iter()
        .map(|c| (c.relative_path().to_string(), c.kernel_oom_kills().unwrap()))
        .collect();
    let total: u64 = kernel.values().sum();
    assert_eq!(
        total,
        (CGROUPS * ROUNDS) as u64,
        "every hog OOM-killed once"
    );
    // Wait for the reconciliations to account for everything.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = accounted(&printed.lock().unwrap().events, &paths);
        let short: Vec<_> = kernel
            .iter()
            .filter(|(p, k)| counts.get(*p).copied().unwrap_or(0) < **k)
            .collect();
        if short.is_empty() || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    // One more reconcile period, to catch a late double count.
    thread::sleep(Duration::from_secs(1));
    let stderr = agent.stderr_lines();
    agent.terminate();
    let printed = printed.lock().unwrap();
    let counts = accounted(&printed.events, &paths);
    for (path, kills) in &kernel {
        assert_eq!(
            counts.get(path).copied().unwrap_or(0),
            *kills,
            "cgroup {path}: reported + unobserved != the kernel's count; its events:\n{}",
            events_of(&printed.events, path)
        );
    }
    let mine = |e: &&Value| {
        let path = e["victim"]["cgroup_path"]
            .as_str()
            .or(e["cgroup_path"].as_str());
        path.is_some_and(|p| paths.contains(p))
    };
    let kills = printed
        .events
        .iter()
        .filter(mine)
        .filter(|e| e["type"] == "oom_kill")
        .count();
    let replayed = printed
        .events
        .iter()
        .filter(mine)
        .filter(|e| e["replayed"] == true)
        .count();
    let unobserved: u64 = printed
        .events
        .iter()
        .filter(mine)
        .filter(|e| e["type"] == "oom_kill_unobserved")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    // Kills in no cgroup of this test the node counted while the agent
    // was down (other tests' removed cgroups; never one of these).
    let node_counter_ahead: u64 = printed
        .events
        .iter()
        .filter(|e| e["reason"] == "node_counter_ahead")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    eprintln!(
        "burst across two SIGKILLs: kernel {total}, oom_kill lines {kills}, unobserved {unobserved}, \
         replayed lines {replayed}, lines cut by the kill {}, node_counter_ahead {node_counter_ahead}",
        printed.cut_lines
    );
    assert!(
        unobserved > 0 || replayed > 0 || kills == total as usize,
        "the crashes fell between rounds"
    );
    // The history store: each event id once.
    let stored = history(&["--history-file", store_arg, "--output", "json"]).unwrap();
    let mut ids = HashSet::new();
    for line in stored.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        if let Some(id) = event["event_id"].as_str().filter(|id| !id.is_empty()) {
            assert!(ids.insert(id.to_string()), "{id} stored twice");
        }
    }
    let _ = stderr;
}

/// A sustained burst (H2): 8 threads OOM-kill hogs in 8 cgroups, one after
/// the other, for 8 s (hundreds of kills) while `/healthz` is polled every
/// 50 ms; in the middle the agent gets SIGTERM and is started again at
/// once. Every poll answers within [`HEALTHZ_BOUND`] (the listener has its
/// own thread, and the loop takes records in bounded turns), the SIGTERM
/// ends the agent within [`SIGTERM_BOUND`], and every kill is still
/// counted once (reported + unobserved = the kernel's count per cgroup).
#[test]
fn a_sustained_burst_starves_neither_healthz_nor_sigterm_and_loses_no_kill() {
    let test = "a_sustained_burst_starves_neither_healthz_nor_sigterm_and_loses_no_kill";
    if !root_or_skip(test) {
        return;
    }
    const HEALTHZ_BOUND: Duration = Duration::from_secs(1);
    const SIGTERM_BOUND: Duration = Duration::from_secs(2);
    const CGROUPS: usize = 8;
    const BURST: Duration = Duration::from_secs(8);
    let dir = TempDir::new("burst-healthz");
    let state = dir.0.join("state.json");
    let store = dir.0.join("history.redb");
    let (state_arg, store_arg) = (state.to_str().unwrap(), store.to_str().unwrap());
    let cgroups: Vec<MemoryCgroup> = (0..CGROUPS)
        .map(|_| MemoryCgroup::create(8 * MIB).unwrap())
        .collect();
    let paths: HashSet<String> = cgroups
        .iter()
        .map(|c| c.relative_path().to_string())
        .collect();
    let printed = Arc::new(Mutex::new(Printed::default()));
    let start = |addr: &str| {
        Agent::start(
            &[
                "--listen",
                addr,
                "--state-file",
                state_arg,
                "--history-file",
                store_arg,
                "--reconcile-interval",
                "0.3",
            ],
            &printed,
        )
    };
    let addr = free_loopback_addr();
    let mut agent = start(&addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.exists() {
        assert!(Instant::now() < deadline, "no state file written");
        thread::sleep(Duration::from_millis(50));
    }
    // The poller: the address of the running agent, none while it restarts.
    let target: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(Some(addr)));
    let polling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = {
        let (target, polling) = (target.clone(), polling.clone());
        thread::spawn(move || {
            let mut latencies = Vec::new();
            while polling.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(addr) = target.lock().unwrap().clone() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let asked = Instant::now();
                let answer = oom_probe_test_support::http_get(&addr, "/healthz");
                let took = asked.elapsed();
                // A poll that raced the restart's pause is not counted.
                if target.lock().unwrap().as_deref() == Some(addr.as_str()) {
                    let (status, body) = answer.expect("/healthz did not answer");
                    assert_eq!((status, body.as_str()), (200, "ok\n"));
                    latencies.push(took);
                }
                thread::sleep(Duration::from_millis(50));
            }
            latencies
        })
    };
    let burst_end = Instant::now() + BURST;
    let burst: Vec<_> = cgroups
        .iter()
        .map(|c| {
            let cgroup = c.path().to_path_buf();
            thread::spawn(move || {
                let mut n = 0;
                while Instant::now() < burst_end {
                    let status = hog()
                        .arg("--cgroup")
                        .arg(&cgroup)
                        .args(["--comm", &format!("burst-{n}"), "--mb", "32"])
                        .stdout(std::process::Stdio::null())
                        .status()
                        .unwrap();
                    assert_eq!(
                        std::os::unix::process::ExitStatusExt::signal(&status),
                        Some(9)
                    );
                    n += 1;
                }
            })
        })
        .collect();
    thread::sleep(BURST / 2);
    *target.lock().unwrap() = None;
    let asked = Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    let status = agent.child.wait().unwrap();
    let sigterm_took = asked.elapsed();
    assert!(status.success(), "SIGTERM mid-burst: {status}");
    agent.reader.take().unwrap().join().unwrap();
    drop(agent);
    let addr = free_loopback_addr();
    let agent = start(&addr);
    *target.lock().unwrap() = Some(addr);
    for thread in burst {
        thread.join().unwrap();
    }
    polling.store(false, std::sync::atomic::Ordering::Relaxed);
    let latencies = poller.join().unwrap();
    let kernel: HashMap<String, u64> = cgroups
        .iter()
        .map(|c| (c.relative_path().to_string(), c.kernel_oom_kills().unwrap()))
        .collect();
    let total: u64 = kernel.values().sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = accounted(&printed.lock().unwrap().events, &paths);
        let short = kernel
            .iter()
            .any(|(p, k)| counts.get(p).copied().unwrap_or(0) < *k);
        if !short || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_secs(1));
    agent.terminate();
    let printed = printed.lock().unwrap();
    let counts = accounted(&printed.events, &paths);
    for (path, kills) in &kernel {
        assert_eq!(
            counts.get(path).copied().unwrap_or(0),
            *kills,
            "cgroup {path}: reported + unobserved != the kernel's count; its events:\n{}",
            events_of(&printed.events, path)
        );
    }
    let max = latencies.iter().max().copied().unwrap_or_default();
    let mut sorted = latencies.clone();
    sorted.sort();
    let p99 = sorted
        .get(sorted.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    let mine = |e: &&Value| {
        e["victim"]["cgroup_path"]
            .as_str()
            .or(e["cgroup_path"].as_str())
            .is_some_and(|p| paths.contains(p))
    };
    let kill_lines = printed
        .events
        .iter()
        .filter(mine)
        .filter(|e| e["type"] == "oom_kill")
        .count();
    eprintln!(
        "burst: kernel {total} kills in {} s, oom_kill lines {kill_lines}, {} /healthz polls, \
         p99 {p99:?}, max {max:?}; SIGTERM mid-burst exited in {sigterm_took:?}",
        BURST.as_secs(),
        latencies.len()
    );
    assert!(total >= 300, "only {total} kills: not a burst");
    assert!(latencies.len() >= 50, "only {} polls", latencies.len());
    assert!(
        max < HEALTHZ_BOUND,
        "/healthz took {max:?} during the burst"
    );
    assert!(
        sigterm_took < SIGTERM_BOUND,
        "SIGTERM mid-burst took {sigterm_took:?}"
    );
}

/// M9: a kill made while the agent is stopped, in a cgroup removed before
/// it starts again, leaves no counter to walk; the node's count of OOM
/// kills (`/proc/vmstat`, kept in the state file) still has it. The
/// restarted agent reports it as one `oom_kill_unobserved` with reason
/// `node_counter_ahead`, `cgroup_id` 0 and no path. (Other tests' kills in
/// cgroups they removed meanwhile may be in its count: at least 1.)
#[test]
fn a_kill_in_a_cgroup_removed_while_the_agent_was_down_is_reported_from_the_node_count() {
    let test =
        "a_kill_in_a_cgroup_removed_while_the_agent_was_down_is_reported_from_the_node_count";
    if !root_or_skip(test) {
        return;
    }
    let dir = TempDir::new("node-residual");
    let state = dir.0.join("state.json");
    let state_arg = state.to_str().unwrap();
    let printed = Arc::new(Mutex::new(Printed::default()));
    let start = || {
        Agent::start(
            &[
                "--listen",
                &free_loopback_addr(),
                "--state-file",
                state_arg,
                "--reconcile-interval",
                "0.3",
            ],
            &printed,
        )
    };
    let agent = start();
    // A walk completed: the node's count is in the state file.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&state)
        .is_ok_and(|s| s.contains("\"node_kills\":") && !s.contains("\"node_kills\":null"))
    {
        assert!(Instant::now() < deadline, "no node count in the state file");
        thread::sleep(Duration::from_millis(50));
    }
    agent.terminate();
    let first = printed.lock().unwrap().events.len();
    // Down: one kill, and its cgroup removed.
    let removed = {
        let cgroup = MemoryCgroup::create(8 * MIB).unwrap();
        let status = hog()
            .arg("--cgroup")
            .arg(cgroup.path())
            .args(["--comm", "while-down", "--mb", "32"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert_eq!(cgroup.kernel_oom_kills().unwrap(), 1);
        cgroup.relative_path().to_string()
    };
    let agent = start();
    let node_events = || -> Vec<Value> {
        printed.lock().unwrap().events[first..]
            .iter()
            .filter(|e| e["reason"] == "node_counter_ahead")
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while node_events().is_empty() {
        assert!(Instant::now() < deadline, "no node_counter_ahead event");
        thread::sleep(Duration::from_millis(50));
    }
    // More walks: never a second one.
    thread::sleep(Duration::from_secs(1));
    agent.terminate();
    let events = node_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["type"], "oom_kill_unobserved");
    assert_eq!(event["cgroup_id"], 0);
    assert_eq!(event["cgroup_path"], Value::Null);
    let count = event["count"].as_u64().unwrap();
    assert!(count >= 1, "{event}");
    let printed = printed.lock().unwrap();
    assert!(
        !printed
            .events
            .iter()
            .any(|e| e["victim"]["cgroup_path"] == removed.as_str()
                || e["cgroup_path"] == removed.as_str()),
        "the removed cgroup was reported by path"
    );
    eprintln!("killed while down in a removed cgroup: node_counter_ahead count {count}: {event}");
}

/// Kills the ring buffer had no room for, in cgroups removed right after
/// their kill: the agent's reader is stopped (SIGSTOP) while 40 cgroups,
/// one after the other, get one kill each, have their kernel counter read
/// and are removed; the agent's 4 KiB ring holds about a dozen records, so
/// most are dropped, and their cgroups' kernel counters are gone before the
/// agent runs again. Every kill is still counted once: reported, or
/// `oom_kill_unobserved` with `reason: ring_buffer_full` from the eBPF
/// side's count by cgroup.
#[test]
fn kills_the_ring_had_no_room_for_are_reported_even_in_removed_cgroups() {
    let test = "kills_the_ring_had_no_room_for_are_reported_even_in_removed_cgroups";
    if !root_or_skip(test) {
        return;
    }
    const CGROUPS: usize = 40;
    let dir = TempDir::new("ring-full");
    let state = dir.0.join("state.json");
    let store = dir.0.join("history.redb");
    let printed = Arc::new(Mutex::new(Printed::default()));
    let agent = Agent::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--state-file",
            state.to_str().unwrap(),
            "--history-file",
            store.to_str().unwrap(),
            "--ring-buffer-size",
            "4096",
            "--reconcile-interval",
            "0.5",
        ],
        &printed,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.exists() {
        assert!(Instant::now() < deadline, "no state file written");
        thread::sleep(Duration::from_millis(50));
    }
    let pid = agent.child.id() as i32;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Per cgroup id: the kernel's count, read just before removal.
    let mut kernel: HashMap<u64, u64> = HashMap::new();
    for i in 0..CGROUPS {
        let cgroup = MemoryCgroup::create(8 * MIB).unwrap();
        let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(cgroup.path()).unwrap());
        kill_in(cgroup.path(), &format!("ringfull-{i}"));
        kernel.insert(id, cgroup.kernel_oom_kills().unwrap());
        drop(cgroup);
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let total: u64 = kernel.values().sum();
    assert_eq!(total, CGROUPS as u64, "one kill per cgroup");
    let deadline = Instant::now() + Duration::from_secs(30);
    while accounted_by_id(&printed.lock().unwrap().events, &kernel) != kernel
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(200));
    }
    // A few more reconciles, to catch a late double count.
    thread::sleep(Duration::from_secs(2));
    agent.terminate();
    let printed = printed.lock().unwrap();
    let counts = accounted_by_id(&printed.events, &kernel);
    let ring_full: u64 = printed
        .events
        .iter()
        .filter(|e| e["reason"] == "ring_buffer_full")
        .filter(|e| {
            e["cgroup_id"]
                .as_u64()
                .is_some_and(|id| kernel.contains_key(&id))
        })
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    let reported = printed
        .events
        .iter()
        .filter(|e| e["type"] == "oom_kill")
        .filter(|e| {
            e["victim"]["cgroup_id"]
                .as_u64()
                .is_some_and(|id| kernel.contains_key(&id))
        })
        .count();
    eprintln!(
        "ring full: kernel {total}, oom_kill {reported}, unobserved (ring_buffer_full) {ring_full}"
    );
    for (id, kills) in &kernel {
        assert_eq!(
            counts.get(id).copied().unwrap_or(0),
            *kills,
            "cgroup {id}: reported + unobserved != the kernel's count read before removal"
        );
    }
    assert!(
        ring_full > 0,
        "the ring buffer never overflowed: nothing tested"
    );
}

/// [`accounted`] by cgroup id, for the cgroups in `kernel` (removed
/// cgroups have no path to name them by).
fn accounted_by_id(events: &[Value], kernel: &HashMap<u64, u64>) -> HashMap<u64, u64> {
    let mut ids = HashSet::new();
    let mut counts = HashMap::new();
    for event in events {
        let (cgroup, count) = match event["type"].as_str() {
            Some("oom_kill") => (event["victim"]["cgroup_id"].as_u64(), 1),
            Some("oom_kill_unobserved") => (
                event["cgroup_id"].as_u64(),
                event["count"].as_u64().unwrap(),
            ),
            _ => continue,
        };
        let Some(cgroup) = cgroup.filter(|c| kernel.contains_key(c)) else {
            continue;
        };
        let id = event["event_id"].as_str().unwrap_or_default().to_string();
        if !ids.insert(id.clone()) {
            assert_eq!(
                event["replayed"], true,
                "{id} printed twice, not marked replayed"
            );
            continue;
        }
        *counts.entry(cgroup).or_default() += count;
    }
    counts
}

/// The two crash windows of the commit protocol, made certain with
/// `OOM_PROBE_FAULT`: the agent SIGKILLs itself right after committing a
/// batch of kills (before printing it), or right after printing it (before
/// dropping it from the state file); restarted at once, it prints that batch
/// again marked `replayed: true` with the same ids, and every kill is still
/// counted once.
#[test]
fn a_crash_in_either_commit_window_replays_the_batch_marked_and_counts_it_once() {
    let test = "a_crash_in_either_commit_window_replays_the_batch_marked_and_counts_it_once";
    if !root_or_skip(test) {
        return;
    }
    for fault in ["crash-after-commit:2", "crash-after-print:2"] {
        let dir = TempDir::new("commit-window");
        let state = dir.0.join("state.json");
        let store = dir.0.join("history.redb");
        let (state_arg, store_arg) = (state.to_str().unwrap(), store.to_str().unwrap());
        let cgroups: Vec<MemoryCgroup> = (0..4)
            .map(|_| MemoryCgroup::create(8 * MIB).unwrap())
            .collect();
        let paths: HashSet<String> = cgroups
            .iter()
            .map(|c| c.relative_path().to_string())
            .collect();
        let printed = Arc::new(Mutex::new(Printed::default()));
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--state-file",
            state_arg,
            "--history-file",
            store_arg,
            "--reconcile-interval",
            "0.3",
        ];
        let mut agent = Agent::start_with_env(&args, &[("OOM_PROBE_FAULT", fault)], &printed);
        let kill_all = |round: usize| {
            for c in &cgroups {
                let status = hog()
                    .arg("--cgroup")
                    .arg(c.path())
                    .args(["--comm", &format!("window-{round}"), "--mb", "32"])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap();
                assert_eq!(
                    std::os::unix::process::ExitStatusExt::signal(&status),
                    Some(9)
                );
            }
        };
        // Kills one at a time until the agent crashes itself at its second batch.
        let mut round = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "{fault}: the agent never crashed"
            );
            kill_all(round);
            round += 1;
            thread::sleep(Duration::from_millis(100));
        }
        agent.kill();
        // The restarted run serves /metrics on a known address.
        let addr = free_loopback_addr();
        let mut restart_args = args;
        restart_args[1] = &addr;
        let first_of_restart = printed.lock().unwrap().events.len();
        let agent = Agent::start(&restart_args, &printed);
        kill_all(round);
        let kernel: HashMap<String, u64> = cgroups
            .iter()
            .map(|c| (c.relative_path().to_string(), c.kernel_oom_kills().unwrap()))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while kernel.iter().any(|(p, k)| {
            accounted(&printed.lock().unwrap().events, &paths)
                .get(p)
                .copied()
                .unwrap_or(0)
                < *k
        }) && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(200));
        }
        thread::sleep(Duration::from_secs(1));
        // The restarted run's metrics count every kill it printed, the
        // replayed ones too (M7: a kill committed but not printed before
        // the crash was counted by no process), each once. Kills of other
        // tests on the node count on both sides; a kill landing between
        // the two reads is retried.
        let (mut in_metrics, mut in_stream) = (0.0, 0.0);
        for _ in 0..20 {
            in_metrics = kills_in_metrics(&addr);
            in_stream = printed.lock().unwrap().events[first_of_restart..]
                .iter()
                .filter(|e| e["type"] == "oom_kill" || e["type"] == "userspace_kill")
                .count() as f64;
            if in_metrics == in_stream {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            in_metrics,
            in_stream,
            "{fault}: oom_probe_kills_total after the restart != the kills it printed, replays \
             included:\n{}\n{}",
            printed.lock().unwrap().events[first_of_restart..]
                .iter()
                .map(|e| format!(
                    "{} {} {} {}",
                    e["type"], e["replayed"], e["event_id"], e["victim"]["comm"]
                ))
                .collect::<Vec<_>>()
                .join("\n"),
            oom_probe_test_support::http_get(&addr, "/metrics")
                .unwrap()
                .1
        );
        agent.terminate();
        let printed = printed.lock().unwrap();
        let replayed_kills = printed.events[first_of_restart..]
            .iter()
            .filter(|e| e["replayed"] == true && e["type"] == "oom_kill")
            .count();
        eprintln!(
            "{fault}: after the restart oom_probe_kills_total {in_metrics}, {replayed_kills} \
             replayed kill(s) among them"
        );
        let counts = accounted(&printed.events, &paths);
        for (path, kills) in &kernel {
            assert_eq!(
                counts.get(path).copied().unwrap_or(0),
                *kills,
                "{fault}: cgroup {path}: reported + unobserved != the kernel's count; its \
                 events:\n{}",
                events_of(&printed.events, path)
            );
        }
        let replayed: Vec<&Value> = printed
            .events
            .iter()
            .filter(|e| e["replayed"] == true)
            .collect();
        assert!(!replayed.is_empty(), "{fault}: nothing replayed");
        let ids_before: HashSet<&str> = printed
            .events
            .iter()
            .filter(|e| e["replayed"] == false)
            .filter_map(|e| e["event_id"].as_str())
            .collect();
        let repeats = replayed
            .iter()
            .filter(|e| ids_before.contains(e["event_id"].as_str().unwrap()))
            .count();
        if fault.starts_with("crash-after-print") {
            assert_eq!(
                repeats,
                replayed.len(),
                "printed before the crash, so repeats"
            );
        } else {
            assert_eq!(repeats, 0, "never printed before the crash");
        }
        let stored = history(&["--history-file", store_arg, "--output", "json"]).unwrap();
        let mut ids = HashSet::new();
        for line in stored.lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            if let Some(id) = event["event_id"].as_str().filter(|id| !id.is_empty()) {
                assert!(ids.insert(id.to_string()), "{fault}: {id} stored twice");
            }
        }
        for event in &replayed {
            assert!(
                ids.contains(event["event_id"].as_str().unwrap()),
                "{fault}: replayed but not stored"
            );
        }
        eprintln!(
            "{fault}: {} replayed line(s), {repeats} of them repeats",
            replayed.len()
        );
    }
}

/// A tmpfs of `size` mounted on `dir` for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, options: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "oom-probe-test"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Self(dir)
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system `dir` is on: a file grown until ENOSPC.
fn fill(dir: &std::path::Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

/// A counter's value on /metrics.
fn metric(addr: &str, name: &str) -> f64 {
    let (_, body) = oom_probe_test_support::http_get(addr, "/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name}:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

/// The sum of every `oom_probe_kills_total` series on /metrics.
fn kills_in_metrics(addr: &str) -> f64 {
    let (_, body) = oom_probe_test_support::http_get(addr, "/metrics").unwrap();
    body.lines()
        .filter(|l| l.starts_with("oom_probe_kills_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// One kill in `cgroup`, and its event from the agent.
fn one_kill(cgroup: &MemoryCgroup, printed: &Arc<Mutex<Printed>>, comm: &str) -> Value {
    let status = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args(["--comm", comm, "--mb", "32"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(event) = printed
            .lock()
            .unwrap()
            .events
            .iter()
            .find(|e| e["victim"]["comm"] == comm)
        {
            return event.clone();
        }
        assert!(Instant::now() < deadline, "{comm}: no event");
        thread::sleep(Duration::from_millis(50));
    }
}

fn stderr_has(agent: &Agent, seen: &mut Vec<String>, needle: &str) -> bool {
    seen.extend(agent.stderr_lines());
    seen.iter().any(|l| l.contains(needle))
}

/// State and history storage that fails, as it does on real nodes: a
/// directory that does not exist yet, a read-only one, a full disk (a tiny
/// tmpfs filled, then freed), corrupt files. Each time: a clear error line,
/// the kill is still reported, and /metrics counts what could not be saved.
#[test]
fn failing_state_storage_costs_no_kill_says_so_and_is_counted() {
    let test = "failing_state_storage_costs_no_kill_says_so_and_is_counted";
    if !root_or_skip(test) {
        return;
    }
    let dir = TempDir::new("storage");
    let cgroup = MemoryCgroup::create(8 * MIB).unwrap();
    let printed = Arc::new(Mutex::new(Printed::default()));
    let start = |state: &std::path::Path, store: &std::path::Path| {
        let addr = free_loopback_addr();
        let agent = Agent::start(
            &[
                "--listen",
                &addr,
                "--state-file",
                state.to_str().unwrap(),
                "--history-file",
                store.to_str().unwrap(),
                "--reconcile-interval",
                "0.3",
            ],
            &printed,
        );
        (agent, addr)
    };

    // A directory that does not exist yet: created, nothing fails.
    let missing = dir.0.join("a/b/c");
    let (agent, addr) = start(&missing.join("state.json"), &missing.join("history.redb"));
    one_kill(&cgroup, &printed, "st-missing");
    thread::sleep(Duration::from_millis(700));
    assert!(missing.join("state.json").exists() && missing.join("history.redb").exists());
    assert_eq!(metric(&addr, "oom_probe_state_write_failures_total"), 0.0);
    assert_eq!(metric(&addr, "oom_probe_history_write_failures_total"), 0.0);
    agent.terminate();

    // Read-only.
    let ro = Tmpfs::mount(dir.0.join("ro"), "size=1m");
    ro.remount("ro");
    let (agent, addr) = start(&ro.0.join("state.json"), &ro.0.join("history.redb"));
    let mut seen = Vec::new();
    one_kill(&cgroup, &printed, "st-readonly");
    thread::sleep(Duration::from_millis(700));
    // (The history store's line comes before the agent is ready: the
    // harness reads past it; the counter shows it.)
    assert!(
        stderr_has(&agent, &mut seen, "state.json: cannot"),
        "{seen:#?}"
    );
    let state_errors = seen
        .iter()
        .filter(|l| l.contains("state.json: cannot"))
        .count();
    assert_eq!(state_errors, 1, "said once, not at every write: {seen:#?}");
    assert!(metric(&addr, "oom_probe_state_write_failures_total") >= 2.0);
    assert!(metric(&addr, "oom_probe_history_write_failures_total") >= 1.0);
    agent.terminate();
    drop(ro);

    // Full: the store opens on an empty tmpfs, then the disk fills up.
    let full = Tmpfs::mount(dir.0.join("full"), "size=2m");
    let (agent, addr) = start(&full.0.join("state.json"), &full.0.join("history.redb"));
    one_kill(&cgroup, &printed, "st-before-full");
    thread::sleep(Duration::from_millis(700));
    let filler = fill(&full.0);
    let mut seen = Vec::new();
    for i in 0..5 {
        one_kill(&cgroup, &printed, &format!("st-full-{i}"));
    }
    thread::sleep(Duration::from_millis(700));
    assert!(
        stderr_has(&agent, &mut seen, "state.json: cannot"),
        "{seen:#?}"
    );
    let state_failures = metric(&addr, "oom_probe_state_write_failures_total");
    let history_failures = metric(&addr, "oom_probe_history_write_failures_total");
    eprintln!(
        "full disk: {state_failures} state write(s) and {history_failures} event(s) not kept"
    );
    assert!(state_failures >= 1.0);
    assert!(
        history_failures >= 1.0,
        "the history store said nothing on a full disk"
    );
    // Space again: both work again, without a restart.
    std::fs::remove_file(filler).unwrap();
    // The history store is reopened at the first batch 5 s after it failed
    // (kills elsewhere on the node, other tests', may be that batch).
    thread::sleep(Duration::from_millis(5500));
    one_kill(&cgroup, &printed, "st-after-full-0");
    thread::sleep(Duration::from_millis(700));
    assert!(
        stderr_has(&agent, &mut seen, "state file is written again"),
        "{seen:#?}"
    );
    assert!(stderr_has(&agent, &mut seen, "works again"), "{seen:#?}");
    let history_errors = seen.iter().filter(|l| l.contains("history store")).count();
    assert_eq!(
        history_errors, 2,
        "one error line, one recovery line: {seen:#?}"
    );
    let recovered = metric(&addr, "oom_probe_history_write_failures_total");
    one_kill(&cgroup, &printed, "st-after-full");
    thread::sleep(Duration::from_millis(700));
    assert_eq!(
        metric(&addr, "oom_probe_history_write_failures_total"),
        recovered,
        "the history store keeps events again"
    );
    let stored = history(&[
        "--history-file",
        full.0.join("history.redb").to_str().unwrap(),
        "--output",
        "json",
    ])
    .unwrap();
    assert!(
        stored.contains("st-after-full") && stored.contains("st-before-full"),
        "{stored}"
    );
    agent.terminate();
    drop(full);

    // Corrupt files.
    let corrupt = dir.0.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("state.json"), b"{\"boot_id\": 17, garbage").unwrap();
    std::fs::write(corrupt.join("history.redb"), vec![0x5au8; 8192]).unwrap();
    let (agent, addr) = start(&corrupt.join("state.json"), &corrupt.join("history.redb"));
    let mut seen = Vec::new();
    one_kill(&cgroup, &printed, "st-corrupt");
    thread::sleep(Duration::from_millis(700));
    assert!(
        stderr_has(&agent, &mut seen, "ignoring state file"),
        "{seen:#?}"
    );
    assert!(metric(&addr, "oom_probe_history_write_failures_total") >= 1.0);
    assert_eq!(
        metric(&addr, "oom_probe_state_write_failures_total"),
        0.0,
        "rewritten fresh"
    );
    agent.terminate();
}

/// Memory cgroups laid out as the kubelet lays out containers
/// (`kubepods/burstable/pod<uid>/<container id>`), below a test cgroup of
/// our own; each container cgroup is limited to 8 MiB.
struct FakePods {
    containers: Vec<(String, String, MemoryCgroup)>,
    _parents: Vec<MemoryCgroup>,
}

impl FakePods {
    /// `uids[i]` gets one container with id `ids[i]`.
    fn new(uids: &[String], ids: &[String]) -> Self {
        let root = MemoryCgroup::create(512 * MIB).unwrap();
        let kubepods = root.create_child_named("kubepods", None).unwrap();
        let burstable = kubepods.create_child_named("burstable", None).unwrap();
        let mut parents = Vec::new();
        let mut containers = Vec::new();
        for (uid, id) in uids.iter().zip(ids) {
            let pod = burstable
                .create_child_named(&format!("pod{uid}"), None)
                .unwrap();
            let container = pod.create_child_named(id, Some(8 * MIB)).unwrap();
            containers.push((uid.clone(), id.clone(), container));
            parents.push(pod);
        }
        // Dropped children first: containers, pods, then the rest.
        parents.reverse();
        parents.extend([burstable, kubepods, root]);
        Self {
            containers,
            _parents: parents,
        }
    }
}

impl Drop for FakePods {
    fn drop(&mut self) {
        self.containers.clear();
    }
}

/// Kills one process in `cgroup` (by the kernel) with this comm.
fn kill_in(cgroup: &std::path::Path, comm: &str) {
    kill_in_with(cgroup, comm, 32);
}

/// [`kill_in`] with the hog allocating `mb` MiB (more than the limit).
fn kill_in_with(cgroup: &std::path::Path, comm: &str, mb: u32) {
    let status = hog()
        .arg("--cgroup")
        .arg(cgroup)
        .args(["--comm", comm, "--mb", &mb.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

/// The event of the kill with this comm, waiting up to a minute.
fn event_of(printed: &Arc<Mutex<Printed>>, comm: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(event) = printed
            .lock()
            .unwrap()
            .events
            .iter()
            .find(|e| e["victim"]["comm"] == comm)
        {
            return event.clone();
        }
        assert!(Instant::now() < deadline, "{comm}: no event");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A container runtime that accepts connections and never answers (a
/// SIGSTOPped containerd): a burst of kills in 10 containers it was never
/// asked about all come out while it is frozen, named from their cgroup
/// paths, each failed lookup counted; the runtime is asked once, then not
/// for 5 s; once it is back, a kill in its real container is named.
#[test]
fn a_hung_container_runtime_holds_no_event_back_and_names_come_back() {
    let test = "a_hung_container_runtime_holds_no_event_back_and_names_come_back";
    if !root_or_skip(test) || !oom_probe_test_support::host_only(test, "needs containerd and runc")
    {
        return;
    }
    let containerd = oom_probe_test_support::containerd::Containerd::start().unwrap();
    let pod = containerd.run_pod("cri-hang").unwrap();
    let real = pod.start_container("app", 64 * MIB, &["--pause"]).unwrap();
    let uids: Vec<String> = (0..10)
        .map(|i| format!("0000000{i}-1111-2222-3333-444444444444"))
        .collect();
    let ids: Vec<String> = (0..10).map(|i| format!("{i}e").repeat(32)).collect();
    let pods = FakePods::new(&uids, &ids);
    let dir = TempDir::new("cri-hang");
    let addr = free_loopback_addr();
    let printed = Arc::new(Mutex::new(Printed::default()));
    let socket = containerd.socket().to_str().unwrap().to_string();
    let state = dir.0.join("state.json");
    let agent = Agent::start(
        &[
            "--listen",
            &addr,
            "--cri-socket",
            &socket,
            "--state-file",
            state.to_str().unwrap(),
            "--no-history",
        ],
        &printed,
    );

    let frozen = containerd.freeze();
    let started = Instant::now();
    let mut hogs = Vec::new();
    for (i, (_, _, cgroup)) in pods.containers.iter().enumerate() {
        hogs.push(
            hog()
                .arg("--cgroup")
                .arg(cgroup.path())
                .args(["--comm", &format!("cri-hang-{i}"), "--mb", "32"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for mut hog in hogs {
        hog.wait().unwrap();
    }
    for (i, (uid, id, _)) in pods.containers.iter().enumerate() {
        let event = event_of(&printed, &format!("cri-hang-{i}"));
        assert_eq!(event["kubernetes"]["pod_uid"], uid.as_str(), "{event:#}");
        assert_eq!(
            event["kubernetes"]["container_id"],
            id.as_str(),
            "{event:#}"
        );
        assert!(event["kubernetes"]["pod"].is_null(), "{event:#}");
    }
    let all_out = started.elapsed();
    let failures = metric(&addr, "oom_probe_enrichment_failures_total");
    eprintln!(
        "hung runtime: 10 kills in 10 containers, all events out {} ms after the first \
         kill started, {failures} failed lookups counted",
        all_out.as_millis()
    );
    assert!(failures >= 10.0, "every lookup that failed is counted");
    drop(frozen);

    // Back: after the pause, a kill in the real container is named.
    thread::sleep(Duration::from_secs(6));
    let root = pods.containers[0]
        .2
        .path()
        .to_str()
        .unwrap()
        .strip_suffix(pods.containers[0].2.relative_path())
        .unwrap()
        .to_string();
    let real_cgroup = PathBuf::from(format!("{root}{}", real.cgroup_path()));
    // A runtime just thawed on a loaded machine may still miss the 500 ms
    // call timeout once, which pauses its lookups 5 s more: a kill every 2 s
    // until one is named (what is claimed is that names come back, not how
    // fast a loaded containerd answers).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut unnamed = Vec::new();
    let event = loop {
        let comm = format!("cri-back-{}", unnamed.len());
        kill_in_with(&real_cgroup, &comm, 256);
        let event = event_of(&printed, &comm);
        if !event["kubernetes"]["container"].is_null() || Instant::now() > deadline {
            break event;
        }
        unnamed.push(event);
        thread::sleep(Duration::from_secs(2));
    };
    eprintln!(
        "after the thaw: {} kill(s) unnamed before one was named",
        unnamed.len()
    );
    assert_eq!(
        event["kubernetes"]["container"], "app",
        "{event:#}\nbefore: {unnamed:#?}"
    );
    assert_eq!(event["kubernetes"]["pod"], pod.name(), "{event:#}");
    agent.terminate();
}

/// An API server that returns 500 for a while, then hangs (requests held
/// unanswered, the watch silent): kills in pods it has not told about come
/// out at once, unnamed, counted; kills in pods already in the store are
/// named from memory; when the server is back, the names fill in.
#[test]
fn an_api_server_that_fails_or_hangs_holds_no_event_back_and_names_come_back() {
    let test = "an_api_server_that_fails_or_hangs_holds_no_event_back_and_names_come_back";
    if !root_or_skip(test) {
        return;
    }
    use oom_probe_test_support::apiserver::{pod, ApiServer};
    const NODE: &str = "node-reliability";
    let uids: Vec<String> = (1..=3)
        .map(|i| format!("{i}{i}{i}{i}{i}{i}{i}{i}-aaaa-bbbb-cccc-dddddddddddd"))
        .collect();
    let ids: Vec<String> = (1..=3).map(|i| format!("{i}a").repeat(32)).collect();
    let api_pod = |i: usize| {
        let mut p = pod("shop", &format!("web-{i}"), &uids[i], NODE);
        p["spec"]["containers"] = serde_json::json!([{"name": "app", "image": "shop/web"}]);
        p["status"]["containerStatuses"] = serde_json::json!([{
            "name": "app", "containerID": format!("containerd://{}", ids[i]),
            "image": "shop/web", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}},
        }]);
        p
    };
    let server = ApiServer::start().unwrap();
    server.apply_pod(api_pod(0));
    let pods = FakePods::new(&uids, &ids);
    let cgroup = |i: usize| pods.containers[i].2.path().to_path_buf();
    let dir = TempDir::new("api-hang");
    let addr = free_loopback_addr();
    let printed = Arc::new(Mutex::new(Printed::default()));
    let state = dir.0.join("state.json");
    let agent = Agent::start(
        &[
            "--listen",
            &addr,
            "--kubeconfig",
            server.kubeconfig().to_str().unwrap(),
            "--node-name",
            NODE,
            "--state-file",
            state.to_str().unwrap(),
            "--no-history",
        ],
        &printed,
    );
    let named = |comm: &str, want: &str| {
        let event = event_of(&printed, comm);
        assert_eq!(event["kubernetes"]["pod"], want, "{comm}: {event:#}");
    };
    // Healthy: wait for the store, then a kill is named.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        kill_in(&cgroup(0), "api-ok");
        if event_of(&printed, "api-ok")["kubernetes"]["pod"] == "web-0" {
            break;
        }
        printed
            .lock()
            .unwrap()
            .events
            .retain(|e| e["victim"]["comm"] != "api-ok");
        assert!(Instant::now() < deadline, "never named while healthy");
        thread::sleep(Duration::from_millis(500));
    }

    // 500s: a new pod is not heard of; its kill comes out unnamed, counted.
    let before = metric(&addr, "oom_probe_enrichment_failures_total");
    server.fail_requests(Some(500));
    server.apply_pod(api_pod(1));
    kill_in(&cgroup(1), "api-500");
    let event = event_of(&printed, "api-500");
    assert!(event["kubernetes"]["pod"].is_null(), "{event:#}");
    assert_eq!(event["kubernetes"]["pod_uid"], uids[1].as_str());
    kill_in(&cgroup(0), "api-500-known");
    named("api-500-known", "web-0");
    assert!(metric(&addr, "oom_probe_enrichment_failures_total") > before);
    thread::sleep(Duration::from_secs(3));
    server.fail_requests(None);
    let round = until_named(&printed, &cgroup(1), "api-back", "web-1", "after the 500s");
    eprintln!("after the 500s, names came back at kill {round}");

    // Hung: requests held, the watch silent.
    server.hang_requests(true);
    server.apply_pod(api_pod(2));
    let before = metric(&addr, "oom_probe_enrichment_failures_total");
    let started = Instant::now();
    kill_in(&cgroup(2), "api-hang");
    let event = event_of(&printed, "api-hang");
    let took = started.elapsed();
    assert!(event["kubernetes"]["pod"].is_null(), "{event:#}");
    kill_in(&cgroup(0), "api-hang-known");
    named("api-hang-known", "web-0");
    assert!(metric(&addr, "oom_probe_enrichment_failures_total") > before);
    eprintln!("hung API server: kill to event {} ms", took.as_millis());
    thread::sleep(Duration::from_secs(3));
    server.hang_requests(false);
    let round = until_named(
        &printed,
        &cgroup(2),
        "api-unhung",
        "web-2",
        "after the hang",
    );
    eprintln!("after the hang, names came back at kill {round}");
    agent.terminate();
}

/// Kills a process in `cgroup` every 500 ms (comms `<prefix>-0`, `-1`, ...)
/// until one comes out named `pod`, for at most a minute; returns how many
/// kills came out unnamed before it. Panics when the names never came back
/// (`after` says after what).
fn until_named(
    printed: &Arc<Mutex<Printed>>,
    cgroup: &std::path::Path,
    prefix: &str,
    pod: &str,
    after: &str,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    for round in 0.. {
        let comm = format!("{prefix}-{round}");
        kill_in(cgroup, &comm);
        if event_of(printed, &comm)["kubernetes"]["pod"] == pod {
            return round;
        }
        assert!(Instant::now() < deadline, "names never came back {after}");
        thread::sleep(Duration::from_millis(500));
    }
    unreachable!()
}
