//! The agent (`oom-probe run`): Prometheus metrics scraped over real HTTP
//! after real kills, health endpoints, a graceful SIGTERM, and the history
//! store across a SIGKILL.

use std::time::Duration;

use oom_probe_tests::{
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
    let start = || {
        Watcher::start_command(
            "run",
            &[
                "--listen",
                &free_loopback_addr(),
                "--state-file",
                state.to_str().unwrap(),
                "--history-file",
                &store_arg,
            ],
        )
        .unwrap()
    };
    let cgroup = MemoryCgroup::create(32 * MIB).unwrap();
    let path = cgroup.relative_path().to_string();
    let stored_kills = || -> Vec<Value> {
        history(&["--history-file", &store_arg, "--output", "json"])
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|e| e["type"] == "oom_kill" && e["victim"]["cgroup_path"] == path.as_str())
            .collect()
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
