//! The agent (`oom-probe run`): Prometheus metrics scraped over real HTTP
//! after real kills, health endpoints, a graceful SIGTERM, and the history
//! store across a SIGKILL.

use std::time::Duration;

use oom_probe_test_support::{
    free_loopback_addr, history, http_get, http_get_accept, root_or_skip, run_hog_with_child,
    MemoryCgroup, Watcher,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

#[test]
fn metrics_count_real_kills_and_sigterm_stops_cleanly() {
    if !root_or_skip("metrics_count_real_kills_and_sigterm_stops_cleanly") {
        return;
    }
    let addr = free_loopback_addr();
    let state =
        std::env::temp_dir().join(format!("oom-probe-agent-state-{}.json", std::process::id()));
    let mut agent = Watcher::start_command(
        "run",
        &[
            "--listen",
            &addr,
            "--state-file",
            state.to_str().unwrap(),
            "--no-history",
        ],
    )
    .unwrap();
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
    assert_eq!(
        http_get(&addr, "/readyz").unwrap().0,
        200,
        "ready once probes are attached"
    );

    let cgroup = MemoryCgroup::create(32 * MIB).unwrap();
    for i in 0..2 {
        run_hog_with_child(&cgroup, "--fork", format!("metric-{i}"), 128).unwrap();
    }
    agent
        .events_for(cgroup.relative_path(), 2, Duration::from_millis(500))
        .unwrap();

    // What Prometheus asks for.
    let (status, body) = http_get_accept(
        &addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .unwrap();
    assert_eq!(status, 200);
    let kills = body
        .lines()
        .find(|l| {
            l.starts_with("oom_probe_kills_total{")
                && l.contains("constraint=\"memcg\"")
                && l.contains("silent=\"true\"")
        })
        .unwrap_or_else(|| panic!("no kill series:\n{body}"));
    let count: f64 = kills.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2.0, "{kills}");
    let last_kill = body
        .lines()
        .find(|l| {
            l.starts_with("oom_probe_last_kill_timestamp_seconds{")
                && l.contains("constraint=\"memcg\"")
                && l.contains("silent=\"true\"")
        })
        .unwrap_or_else(|| panic!("no last-kill gauge:\n{body}"));
    assert!(
        last_kill
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 1.7e9,
        "{last_kill}"
    );
    for name in [
        "oom_probe_lost_events_total 0",
        "oom_probe_unobserved_kills_total",
        "oom_probe_enrichment_failures_total",
        "oom_probe_build_info{version=",
        "oom_probe_start_time_seconds ",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    // What curl gets: the classic text format, counters named as samples.
    let (status, plain) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        plain.contains("# TYPE oom_probe_kills_total counter\n") && !plain.contains("# EOF"),
        "{plain}"
    );

    let exit = agent.terminate().unwrap();
    assert!(
        exit.success(),
        "SIGTERM must stop the agent cleanly: {exit}"
    );
    let _ = std::fs::remove_file(state);
}

/// The history store: every kill the agent printed is in it, readable by
/// `oom-probe history` while the agent runs; after a SIGKILL and a restart on
/// the same store, each kill is there once, in order, with its names.
#[test]
fn history_keeps_each_kill_once_across_a_sigkill() {
    if !root_or_skip("history_keeps_each_kill_once_across_a_sigkill") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("oom-probe-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("history.redb");
    let store_arg = store.to_str().unwrap().to_string();
    let state = dir.join("state.json");
    let start = || start_run(&state, &store_arg);
    let cgroup = MemoryCgroup::create(32 * MIB).unwrap();
    let path = cgroup.relative_path().to_string();
    let stored_kills = || {
        stored_events(&store_arg, |e| {
            e["type"] == "oom_kill" && e["victim"]["cgroup_path"] == path.as_str()
        })
    };

    let mut agent = start();
    let mut printed = Vec::new();
    for i in 0..2 {
        run_hog_with_child(&cgroup, "--fork", format!("hist-{i}"), 128).unwrap();
    }
    printed.extend(
        agent
            .events_for(&path, 2, Duration::from_millis(500))
            .unwrap(),
    );
    // Read while the agent runs and holds the store open for writing.
    assert_eq!(stored_kills(), printed, "the store holds what was printed");
    agent.kill().unwrap();

    let mut agent = start();
    run_hog_with_child(&cgroup, "--fork", "hist-2", 128).unwrap();
    printed.extend(
        agent
            .events_for(&path, 1, Duration::from_millis(500))
            .unwrap(),
    );
    let stored = stored_kills();
    assert_eq!(
        stored, printed,
        "each kill once, in order, across the SIGKILL"
    );
    let comms: Vec<_> = stored.iter().map(|e| e["victim"]["comm"].clone()).collect();
    assert_eq!(comms, ["hist-0", "hist-1", "hist-2"]);
    let pids: std::collections::HashSet<_> =
        stored.iter().map(|e| e["victim"]["pid"].clone()).collect();
    assert_eq!(pids.len(), 3, "three different victims");

    // Filters and the table, as a person in a node shell uses them.
    let recent = history(&[
        "--history-file",
        &store_arg,
        "--since",
        "1h",
        "--type",
        "oom_kill",
        "--output",
        "json",
    ])
    .unwrap();
    assert!(
        recent
            .lines()
            .filter(|l| l.contains(&format!("\"cgroup_path\":\"{path}\"")))
            .count()
            == 3,
        "{recent}"
    );
    let unobserved = history(&[
        "--history-file",
        &store_arg,
        "--type",
        "oom_kill_unobserved",
        "--output",
        "json",
    ])
    .unwrap();
    assert!(
        !unobserved.contains("\"type\":\"oom_kill\""),
        "{unobserved}"
    );
    let in_pods = history(&[
        "--history-file",
        &store_arg,
        "--namespace",
        "no-such-namespace",
    ])
    .unwrap();
    assert!(in_pods.trim().is_empty(), "{in_pods}");
    let table = history(&["--history-file", &store_arg, "--output", "table"]).unwrap();
    assert!(table.starts_with("TIME"), "{table}");
    for comm in ["hist-0", "hist-1", "hist-2"] {
        assert!(
            table.lines().any(|l| l.contains(comm) && l.contains(&path)),
            "{comm}: {table}"
        );
    }

    assert!(agent.terminate().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A history store that cannot be opened (here: a file under /proc, where
/// nothing can be created) does not stop the agent: kills are still
/// reported, and every event it could not keep is counted.
#[test]
fn a_history_store_that_cannot_be_opened_costs_no_kill_and_is_counted() {
    let test = "a_history_store_that_cannot_be_opened_costs_no_kill_and_is_counted";
    if !root_or_skip(test) {
        return;
    }
    let addr = free_loopback_addr();
    let state = std::env::temp_dir().join(format!(
        "oom-probe-agent-nohist-{}.json",
        std::process::id()
    ));
    let mut agent = Watcher::start_command(
        "run",
        &[
            "--listen",
            &addr,
            "--state-file",
            state.to_str().unwrap(),
            "--history-file",
            "/proc/oom-probe-cannot-be-here/history.redb",
        ],
    )
    .unwrap();
    let cgroup = MemoryCgroup::create(32 * MIB).unwrap();
    run_hog_with_child(&cgroup, "--fork", "nohist-0", 128).unwrap();
    let events = agent
        .events_for(cgroup.relative_path(), 1, Duration::from_millis(500))
        .unwrap();
    assert_eq!(
        events.len(),
        1,
        "the kill is reported without a history store"
    );
    let (_, body) = http_get(&addr, "/metrics").unwrap();
    let failures: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("oom_probe_history_write_failures_total "))
        .unwrap_or_else(|| panic!("no history failure counter:\n{body}"))
        .trim()
        .parse()
        .unwrap();
    assert!(
        failures >= 1.0,
        "the kill it could not keep is counted:\n{body}"
    );
    let _ = std::fs::remove_file(&state);
}

/// The agent SIGKILLed in the middle of a write to its history store, over
/// and over: a burst of kills keeps it committing, and each round it is
/// killed at a random moment, the first time one of its threads is seen in
/// a write or sync system call on the store's file (`/proc/<pid>/task/*/
/// syscall`). After every crash `oom-probe history` opens the store (no
/// writer has repaired it yet) and holds every event the agent printed
/// (each printed only after its commit), in order and once; the next
/// agent opens it for writing and carries on. At the end every printed
/// event of every round is there once, in order.
#[test]
fn history_survives_sigkills_in_the_middle_of_writes() {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let test = "history_survives_sigkills_in_the_middle_of_writes";
    if !root_or_skip(test) {
        return;
    }
    const ROUNDS: usize = 6;
    const WORKERS: usize = 4;
    let dir = std::env::temp_dir().join(format!("oom-probe-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("history.redb");
    let store_arg = store.to_str().unwrap().to_string();
    let state = dir.join("state.json");
    let cgroups: Vec<MemoryCgroup> = (0..WORKERS)
        .map(|_| MemoryCgroup::create(16 * MIB).unwrap())
        .collect();
    let paths: Vec<String> = cgroups
        .iter()
        .map(|c| c.relative_path().to_string())
        .collect();
    let ours = |e: &Value| {
        e["victim"]["cgroup_path"]
            .as_str()
            .is_some_and(|p| paths.iter().any(|q| q == p))
    };
    let stored = || stored_events(&store_arg, ours);
    let mut random = seed();
    let mut printed_all: Vec<Value> = Vec::new();
    let mut landed = 0;
    for round in 0..ROUNDS {
        let mut agent = start_run(&state, &store_arg);
        // The burst: each worker OOM-kills a hog in its own cgroup, again
        // and again, until told to stop.
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = cgroups
            .iter()
            .enumerate()
            .map(|(w, cgroup)| {
                let stop = stop.clone();
                let cgroup = cgroup.path().to_path_buf();
                std::thread::spawn(move || {
                    let mut kills = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let status = oom_probe_test_support::hog()
                            .arg("--cgroup")
                            .arg(&cgroup)
                            .args(["--comm", &format!("crash-{round}-{w}-{kills}")])
                            .args(["--mb", "64"])
                            .status()
                            .unwrap();
                        assert_eq!(
                            std::os::unix::process::ExitStatusExt::signal(&status),
                            Some(9),
                            "{status}"
                        );
                        kills += 1;
                    }
                })
            })
            .collect();
        // A random moment into the burst, then the first store write seen.
        std::thread::sleep(Duration::from_millis(300 + random() % 1200));
        let pid = agent.pid();
        let mid_write = wait_for_store_write(pid, &store, Duration::from_secs(5));
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        if let Some(call) = &mid_write {
            landed += 1;
            eprintln!("{test}: round {round}: SIGKILL during {call}");
        } else {
            eprintln!("{test}: round {round}: SIGKILL, no store write seen in 5 s");
        }
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.join().unwrap();
        }
        // Everything it printed before it died (the pipe keeps it).
        let printed = agent.events_within(Duration::from_millis(500), ours);
        agent.kill().unwrap();
        assert!(!printed.is_empty(), "round {round}: no kill was printed");
        printed_all.extend(printed.iter().cloned());

        // Reopened by a reader right after the crash: every committed
        // event, nothing twice, in order.
        let in_store = stored();
        assert_printed_in_order(&printed_all, &in_store, &format!("round {round}"));
        let replayed = printed_all.iter().filter(|e| e["replayed"] == true).count();
        eprintln!(
            "{test}: round {round}: {} printed ({replayed} of them replays after a restart), {} in the store",
            printed_all.len(),
            in_store.len(),
        );
    }
    // The store still takes writes after the last crash.
    let mut agent = start_run(&state, &store_arg);
    run_hog_with_child(&cgroups[0], "--fork", "crash-last", 64).unwrap();
    let last = agent
        .events_for(&paths[0], 1, Duration::from_millis(500))
        .unwrap();
    assert!(agent.terminate().unwrap().success());
    printed_all.extend(last);
    let in_store = stored();
    assert_printed_in_order(&printed_all, &in_store, "after the last restart");
    assert_eq!(
        in_store.last().map(|e| &e["victim"]["comm"]),
        Some(&Value::from("crash-last"))
    );
    eprintln!(
        "{test}: {landed} of {ROUNDS} SIGKILLs landed in a store write; {} events printed, {} stored",
        printed_all.len(),
        in_store.len()
    );
    if oom_probe_test_support::in_vm() {
        // The VM's /tmp is a tmpfs: a write there takes microseconds and
        // is rarely caught; the crash checks above ran all the same.
        if landed == 0 {
            oom_probe_test_support::skipped(
                &format!("{test} (mid-write landing)"),
                "no SIGKILL landed inside a store write on the VM's tmpfs",
            );
        }
    } else {
        assert!(
            landed * 2 >= ROUNDS,
            "only {landed} of {ROUNDS} SIGKILLs landed inside a store write"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `oom-probe run` with this state file and history store, listening on a
/// free loopback port.
fn start_run(state: &std::path::Path, store: &str) -> Watcher {
    Watcher::start_command(
        "run",
        &[
            "--listen",
            &free_loopback_addr(),
            "--state-file",
            state.to_str().unwrap(),
            "--history-file",
            store,
        ],
    )
    .unwrap()
}

/// The events of the history store that `keep` accepts, in order, as
/// `oom-probe history --output json` prints them.
fn stored_events(store: &str, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    history(&["--history-file", store, "--output", "json"])
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|e| keep(e))
        .collect()
}

/// `printed` (events the agent printed, each after its commit) is in
/// `stored` in the same order, each byte for byte; an event printed again
/// after a restart (`replayed: true`, same `event_id`) is in the store once,
/// as first committed; no kill is stored twice.
fn assert_printed_in_order(printed: &[Value], stored: &[Value], when: &str) {
    let mut rest = stored.iter();
    for event in printed.iter().filter(|e| e["replayed"] != true) {
        assert!(
            rest.any(|s| s == event),
            "{when}: printed but not in the store (or out of order): {event}\nstore: {stored:#?}"
        );
    }
    for replay in printed.iter().filter(|e| e["replayed"] == true) {
        assert!(
            stored.iter().any(|s| s["event_id"] == replay["event_id"]),
            "{when}: replayed but never stored: {replay}"
        );
    }
    let mut ids: Vec<String> = stored.iter().map(|e| e["event_id"].to_string()).collect();
    let events = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        events,
        "{when}: an event stored twice: {stored:#?}"
    );
    let mut kills: Vec<String> = stored
        .iter()
        .filter(|e| e["type"] == "oom_kill")
        .map(|e| format!("{} {}", e["victim"]["pid"], e["victim"]["comm"]))
        .collect();
    let count = kills.len();
    kills.sort();
    kills.dedup();
    assert_eq!(
        kills.len(),
        count,
        "{when}: a kill stored twice: {stored:#?}"
    );
    assert!(
        stored
            .iter()
            .filter(|e| e["type"] == "oom_kill")
            .all(|e| e["victim"]["comm"]
                .as_str()
                .is_some_and(|c| c.starts_with("crash-"))),
        "{when}: a stored kill without its name: {stored:#?}"
    );
}

/// Polls the threads of `pid` until one is inside a write, sync or resize
/// system call on `file` (`/proc/<pid>/task/<tid>/syscall`: the number, then
/// the first argument, the descriptor); returns which, or None after
/// `timeout`.
fn wait_for_store_write(pid: u32, file: &std::path::Path, timeout: Duration) -> Option<String> {
    let calls: [(i64, &str); 7] = [
        (libc::SYS_write, "write"),
        (libc::SYS_pwrite64, "pwrite64"),
        (libc::SYS_pwritev, "pwritev"),
        (libc::SYS_fsync, "fsync"),
        (libc::SYS_fdatasync, "fdatasync"),
        (libc::SYS_ftruncate, "ftruncate"),
        (libc::SYS_fallocate, "fallocate"),
    ];
    let deadline = std::time::Instant::now() + timeout;
    let mut store_fds = Vec::new();
    while std::time::Instant::now() < deadline {
        if store_fds.is_empty() {
            store_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == file))
                .filter_map(|fd| fd.file_name().to_str()?.parse::<u64>().ok())
                .collect();
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return None;
        };
        for task in tasks.flatten() {
            let Ok(line) = std::fs::read_to_string(task.path().join("syscall")) else {
                continue;
            };
            let mut fields = line.split_whitespace();
            let Some(nr) = fields.next().and_then(|n| n.parse::<i64>().ok()) else {
                continue; // "running"
            };
            let fd = fields
                .next()
                .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
            if let Some((_, name)) = calls.iter().find(|(n, _)| *n == nr) {
                if fd.is_some_and(|fd| store_fds.contains(&fd)) {
                    return Some(format!("{name}(fd {})", fd.unwrap_or_default()));
                }
            }
        }
    }
    None
}

/// A small xorshift generator seeded from the clock: where each SIGKILL
/// lands differs from run to run (the seed is printed to repeat one).
fn seed() -> impl FnMut() -> u64 {
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("history crash test: seed {state}");
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
