//! The agent (`oom-probe run`): Prometheus metrics scraped over real HTTP
//! after real kills, health endpoints, and a graceful SIGTERM.

use std::time::Duration;

use oom_probe_tests::{
    free_loopback_addr, http_get, http_get_accept, root_or_skip, run_hog_with_child, MemoryCgroup,
    Watcher,
};

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
        &["--listen", &addr, "--state-file", state.to_str().unwrap()],
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
