//! `memory_pressure`: a memory cgroup held at its limit with steady reclaim
//! must be reported at most once per `--pressure-interval`, then once as
//! `memory_pressure_end` when it stops; a quiet cgroup never; a kill that
//! follows carries `pressure_before`. The node's `memory_pressure` needs the
//! node short of memory as well as stalled: one cgroup at its own limit
//! gives none, a node-wide squeeze (in the VM) one that names the cgroup
//! that stalls.
//!
//! The pressure is real. On cgroup v1 (the host) `oom-hog --reclaim` keeps
//! 59 MiB of anonymous memory in a 64 MiB cgroup and re-reads 16 MiB of
//! files, so the kernel thrashes page cache (`memory.pressure_level`
//! `medium`, `memory.failcnt` rising; at 56 MiB it only says `low`). On
//! cgroup v2 (the VM kernels, whose root is a RAM disk with no page cache to
//! reclaim) `memory.high` at half the limit throttles the same process,
//! which keeps 34 MiB and frees and touches 512 KiB again all the time
//! (`--churn-kb`): PSI stall and `memory.events` `high` rising.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use oom_probe_test_support::{hog, in_vm, root_or_skip, skipped, MemoryCgroup, Watcher};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const LIMIT: u64 = 64 * MIB;
/// `--pressure-interval` and `--pressure-clear-after` in these tests.
const INTERVAL_S: f64 = 3.0;
const CLEAR_S: u64 = 3;

fn pressure_args<'a>(cgroups: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--pressure-interval",
        "3s",
        "--pressure-clear-after",
        "3s",
        "--no-history",
    ];
    for cgroup in cgroups {
        args.extend(["--pressure-cgroup", cgroup]);
    }
    args
}

/// True when this kernel can give the pressure these tests make (said
/// loudly when not).
fn pressure_available(test: &str, cgroup: &MemoryCgroup) -> bool {
    let file = if cgroup.is_v2() {
        "memory.pressure"
    } else {
        "memory.pressure_level"
    };
    if !cgroup.path().join(file).exists() {
        skipped(
            test,
            &format!("this kernel has no {file} (PSI disabled or not built)"),
        );
        return false;
    }
    true
}

/// Starts the workload that holds `cgroup` at its limit for `seconds`
/// (then exits, or with `then_oom` grows until the OOM killer kills it).
fn hold_at_limit(cgroup: &MemoryCgroup, seconds: u32, then_oom: bool) -> Child {
    let files = std::env::temp_dir().join(format!(
        "oom-probe-pressure-{}-{}",
        std::process::id(),
        cgroup.relative_path().rsplit('-').next().unwrap_or("0")
    ));
    let (anon_mb, files_mb, churn_kb) = if cgroup.is_v2() {
        // Held 2 MiB above memory.high, with 512 KiB given back and charged
        // again every round: every 64 pages charged are throttled (a
        // reclaim that finds nothing, then a sleep PSI counts as a stall),
        // from the start to the end of the S seconds. (Only touching more
        // and more above memory.high, as this test once did, stalls while
        // the memory grows and not after: episodes that stopped and
        // started again on a slow VM, and none at all once it was touched.)
        cgroup
            .write("memory.high", &(LIMIT / 2).to_string())
            .expect("set memory.high");
        (34, 0, 512)
    } else {
        (59, 16, 0)
    };
    let mut command: Command = hog();
    command
        .arg("--cgroup")
        .arg(cgroup.path())
        .arg("--reclaim")
        .arg(&files)
        .args(["--mb", &anon_mb.to_string()])
        .args(["--files-mb", &files_mb.to_string()])
        .args(["--churn-kb", &churn_kb.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .stdout(Stdio::null());
    if then_oom {
        command.arg("--then-oom");
    }
    command.spawn().expect("start oom-hog --reclaim")
}

fn is_pressure(event: &Value, path: &str) -> bool {
    let kind = event["type"].as_str().unwrap_or("");
    kind.starts_with("memory_pressure") && event["cgroup_path"] == path
}

fn time_s(event: &Value, field: &str) -> f64 {
    let text = event[field].as_str().expect("an RFC 3339 time");
    let time = humantime_parse(text);
    time.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// RFC 3339 with milliseconds, UTC (what oom-probe writes).
fn humantime_parse(text: &str) -> std::time::SystemTime {
    // 2026-11-30T04:02:30.650Z
    let (date, clock) = text.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, millis) = clock.split_once('.').unwrap_or((clock, "0"));
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + t[0] * 3600 + t[1] * 60 + t[2];
    std::time::UNIX_EPOCH
        + Duration::from_secs(secs as u64)
        + Duration::from_millis(millis.parse().unwrap())
}

#[test]
fn a_cgroup_held_at_its_limit_is_warned_at_the_interval_then_ends_and_a_quiet_one_never() {
    let test = "a_cgroup_held_at_its_limit_is_warned_at_the_interval_then_ends";
    if !root_or_skip(test) {
        return;
    }
    let busy = MemoryCgroup::create(LIMIT).expect("create the busy cgroup");
    let quiet = MemoryCgroup::create(LIMIT).expect("create the quiet cgroup");
    if !pressure_available(test, &busy) {
        return;
    }
    let (busy_path, quiet_path) = (busy.relative_path(), quiet.relative_path());
    let mut watcher =
        Watcher::start(&pressure_args(&[busy_path, quiet_path])).expect("start the watcher");
    let mut off = Watcher::start(&[
        "--no-pressure",
        "--no-history",
        "--pressure-cgroup",
        busy_path,
    ])
    .expect("start the watcher with --no-pressure");
    // The quiet cgroup: a process that holds 16 MiB and sleeps.
    let mut quiet_hog = hog()
        .arg("--cgroup")
        .arg(quiet.path())
        .args(["--mb", "16"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start the quiet hog");
    let mut busy_hog = hold_at_limit(&busy, 12, false);
    let status = busy_hog.wait().expect("wait for the busy hog");
    eprintln!("busy hog ended: {status}");
    // Everything up to the end event (clear-after, plus a margin).
    let events = watcher.events_within(Duration::from_secs(CLEAR_S + 12), |e| {
        is_pressure(e, busy_path) || is_pressure(e, quiet_path)
    });
    let _ = quiet_hog.kill();
    let _ = quiet_hog.wait();
    assert!(
        events.iter().all(|e| e["cgroup_path"] == busy_path),
        "the quiet cgroup got events: {events:#?}"
    );
    let warnings: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "memory_pressure")
        .collect();
    let ends: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "memory_pressure_end")
        .collect();
    assert!(
        warnings.len() >= 2,
        "12 s at the limit must give at least 2 warnings at a 3 s interval: {events:#?}"
    );
    assert_eq!(ends.len(), 1, "one end event: {events:#?}");
    let end = ends[0];
    assert_eq!(
        events.last().map(|e| &e["type"]),
        Some(&Value::from("memory_pressure_end")),
        "the end comes last: {events:#?}"
    );
    assert_eq!(end["events"], warnings.len(), "{end:#}");
    assert_eq!(end["cgroup_removed"], false, "{end:#}");
    assert_eq!(end["since"], warnings[0]["since"], "{end:#}");
    // The interval: never two warnings closer than it (both times are
    // oom-probe's own clock at emission, so this holds however slow the host).
    for pair in warnings.windows(2) {
        let gap = time_s(pair[1], "time") - time_s(pair[0], "time");
        assert!(
            gap >= INTERVAL_S - 0.002,
            "warnings {gap:.3} s apart, interval {INTERVAL_S} s: {pair:#?}"
        );
    }
    // And no more of them than the episode's length allows.
    let episode = time_s(end, "last") - time_s(end, "since");
    assert!(
        warnings.len() as f64 <= episode / INTERVAL_S + 1.0,
        "{} warnings in a {episode:.1} s episode",
        warnings.len()
    );
    for warning in &warnings {
        assert_eq!(warning["scope"], "cgroup", "{warning:#}");
        assert_eq!(warning["since"], warnings[0]["since"], "{warning:#}");
        assert!(
            warning["cgroup_id"].as_u64().is_some_and(|id| id > 1),
            "{warning:#}"
        );
        assert_eq!(warning["memcg"]["limit_bytes"], LIMIT, "{warning:#}");
        let usage = warning["memcg"]["usage_bytes"].as_u64().unwrap();
        assert!(
            usage > LIMIT / 2 && usage <= LIMIT,
            "usage {usage}: {warning:#}"
        );
        assert!(
            warning["memcg_stat"]["anon"].as_u64().unwrap() > 32 * MIB,
            "{warning:#}"
        );
        // A number; it may stay 0 on v1, where a charge that fails on a
        // memory+swap limit equal to the memory limit is not counted.
        assert!(warning["limit_hits"].as_u64().is_some(), "{warning:#}");
        let tasks = warning["tasks"].as_array().expect("tasks");
        assert!(!tasks.is_empty() && tasks.len() <= 5, "{warning:#}");
        assert_eq!(tasks[0]["pid"], busy_hog.id(), "{warning:#}");
        let explanation = warning["explanation"].as_str().unwrap();
        assert!(
            explanation.contains(busy_path) && explanation.contains("of its 64 MiB limit"),
            "{explanation}"
        );
        if busy.is_v2() {
            assert_eq!(warning["source"], "psi", "{warning:#}");
            assert!(
                warning["psi"]["some_total_us"]
                    .as_u64()
                    .is_some_and(|t| t > 0),
                "{warning:#}"
            );
        } else {
            assert_eq!(warning["source"], "pressure_level", "{warning:#}");
            assert!(warning["psi"].is_null(), "{warning:#}");
        }
    }
    let duration = end["duration_seconds"].as_f64().unwrap();
    assert!(duration > 0.0, "{end:#}");
    // --no-pressure: not one pressure event.
    let unwanted = off.events_within(Duration::from_millis(200), |e| {
        e["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("memory_pressure"))
    });
    assert!(unwanted.is_empty(), "--no-pressure printed {unwanted:#?}");
}

#[test]
fn a_kill_after_pressure_carries_pressure_before() {
    let test = "a_kill_after_pressure_carries_pressure_before";
    if !root_or_skip(test) {
        return;
    }
    let cgroup = MemoryCgroup::create(LIMIT).expect("create the cgroup");
    if !pressure_available(test, &cgroup) {
        return;
    }
    let path = cgroup.relative_path();
    let mut watcher = Watcher::start_with("watch", &pressure_args(&[path]), |c| {
        c.env("RUST_LOG", "info,oom_probe::pressure=debug");
    })
    .expect("start the watcher");
    let mut hog = hold_at_limit(&cgroup, 5, true);
    let status = hog.wait().expect("wait for the hog");
    eprintln!("hog ended: {status}");
    let events = watcher.events_within(Duration::from_secs(5), |e| {
        is_pressure(e, path) || (e["type"] == "oom_kill" && e["victim"]["cgroup_path"] == path)
    });
    let kill = events
        .iter()
        .find(|e| e["type"] == "oom_kill")
        .unwrap_or_else(|| panic!("no kill: {events:#?}"));
    // The last warning before the kill: on a slow machine (a TCG VM) the
    // growth towards the kill can pause the pressure longer than
    // --pressure-clear-after, so the kill may follow a second episode.
    let last_warning = events
        .iter()
        .take_while(|e| e["type"] != "oom_kill")
        .filter(|e| e["type"] == "memory_pressure")
        .last()
        .unwrap_or_else(|| {
            panic!(
                "no warning before the kill: {events:#?}\nmemory.events: {:?}\nmemory.pressure: {:?}",
                std::fs::read_to_string(cgroup.path().join("memory.events")),
                std::fs::read_to_string(cgroup.path().join("memory.pressure")),
            )
        });
    let before = &kill["pressure_before"];
    assert!(before.is_object(), "no pressure_before: {kill:#}");
    // The episode the last warning told of, which the kill ends.
    assert_eq!(before["since"], last_warning["since"], "{kill:#}");
    assert!(
        time_s(before, "since") <= time_s(kill, "time"),
        "{before:#} after the kill {}",
        kill["time"]
    );
    if cgroup.is_v2() {
        assert!(
            before["peak_psi_some_avg10"].as_f64().is_some(),
            "{before:#}"
        );
    } else {
        assert!(before["peak_psi_some_avg10"].is_null(), "{before:#}");
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The fewest open fds of `pid` over a second: files the watcher reads
/// meanwhile (the node's PSI every second, /proc when the node is under
/// pressure) add to the count only for a moment.
fn settled_fds(pid: u32) -> usize {
    (0..6)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            open_fds(pid)
        })
        .min()
        .unwrap_or(0)
}

/// Waits (up to 30 s) until `pid` has `want` open fds; returns the last
/// count. The watcher learns of cgroups made and removed, and of limits
/// written, from inotify; its safety walk comes every 10 minutes, so a
/// change seen within 30 s was notified, not found by a walk.
fn wait_for_fds(pid: u32, want: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = open_fds(pid);
        if now == want || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cgroups_made_later_are_watched_and_removed_ones_give_their_fds_back() {
    let test = "cgroups_made_later_are_watched_and_removed_ones_give_their_fds_back";
    if !root_or_skip(test) {
        return;
    }
    let parent = MemoryCgroup::create(4 * LIMIT).expect("create the parent");
    if !pressure_available(test, &parent) {
        return;
    }
    // The parent itself is not a leaf once it has children; with none yet
    // it is watched.
    let watcher = Watcher::start(&pressure_args(&[parent.relative_path()])).expect("start");
    let pid = watcher.pid();
    std::thread::sleep(Duration::from_secs(1));
    let base = settled_fds(pid);
    let children: Vec<MemoryCgroup> = (0..3)
        .map(|_| parent.create_child(Some(LIMIT)).expect("create a child"))
        .collect();
    // Three new leaves watched (one notification fd each), the parent no
    // longer a leaf (its fd closed).
    let watching = wait_for_fds(pid, base + 2);
    assert_eq!(
        watching,
        base + 2,
        "fds after 3 cgroups appeared (base {base})"
    );
    // A cgroup made without a limit is not watched; once its limit is
    // written (as `docker update --memory` or a pod resize would) it is.
    let unlimited = parent.create_child(None).expect("create a child");
    assert_eq!(settled_fds(pid), base + 2, "a cgroup without a limit");
    let limit_file = if unlimited.is_v2() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    unlimited
        .write(limit_file, &LIMIT.to_string())
        .expect("set the limit");
    let limited = wait_for_fds(pid, base + 3);
    assert_eq!(limited, base + 3, "fds after a limit was set (base {base})");
    drop(unlimited);
    drop(children);
    // The children gone, the parent is a leaf again.
    let after = wait_for_fds(pid, base);
    assert_eq!(after, base, "fds after the cgroups were removed");
}

/// The node's memory: `(MemTotal, MemAvailable)` in bytes, and the sum of
/// `/proc/vmstat`'s `allocstall_*` (direct reclaims of the node).
fn node_memory() -> (u64, u64, u64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let kib = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/meminfo"))
    };
    let vmstat = std::fs::read_to_string("/proc/vmstat").expect("/proc/vmstat");
    let allocstalls = vmstat
        .lines()
        .filter(|l| l.starts_with("allocstall"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    (
        kib("MemTotal") * 1024,
        kib("MemAvailable") * 1024,
        allocstalls,
    )
}

/// The node's PSI `some` total, µs.
fn node_stall_us() -> u64 {
    let text = std::fs::read_to_string("/proc/pressure/memory").expect("/proc/pressure/memory");
    text.lines()
        .find(|l| l.starts_with("some "))
        .and_then(|l| l.rsplit("total=").next()?.trim().parse().ok())
        .expect("some total")
}

/// Waits for `hog` while reading the node's PSI every 250 ms; the most the
/// node stalled in any 1 s (µs), as the agent's default trigger (100 ms in
/// 1 s) would see it.
fn wait_reading_node_stall(hog: &mut Child) -> u64 {
    let mut readings = vec![(std::time::Instant::now(), node_stall_us())];
    let mut most = 0;
    while hog.try_wait().expect("wait for the hog").is_none() {
        std::thread::sleep(Duration::from_millis(250));
        let now = (std::time::Instant::now(), node_stall_us());
        if let Some(base) = readings
            .iter()
            .rev()
            .find(|(at, _)| now.0.duration_since(*at) >= Duration::from_secs(1))
        {
            most = most.max(now.1 - base.1);
        }
        readings.push(now);
    }
    eprintln!("hog ended: {:?}", hog.wait());
    most
}

fn is_node(event: &Value) -> bool {
    event["scope"] == "node"
        && event["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("memory_pressure"))
}

/// True when this kernel has node PSI (said loudly when not).
fn node_psi_available(test: &str) -> bool {
    if !std::path::Path::new("/proc/pressure/memory").exists() {
        skipped(
            test,
            "this kernel has no /proc/pressure/memory (no CONFIG_PSI, or booted with psi=0)",
        );
        return false;
    }
    true
}

/// Issue 29: one small cgroup thrashing at its own limit stalls the node's
/// PSI (any task stalled on memory counts there; measured: the VM's `some
/// avg10` follows the cgroup's) while the node has most of its RAM free.
/// That is no node pressure: the cgroup is warned of, the node is not.
#[test]
fn one_cgroup_thrashing_at_its_own_limit_is_no_node_pressure() {
    let test = "one_cgroup_thrashing_at_its_own_limit_is_no_node_pressure";
    if !root_or_skip(test) || !node_psi_available(test) {
        return;
    }
    let (total, available, _) = node_memory();
    if available < total / 10 + 256 * MIB {
        skipped(
            test,
            &format!(
                "the node is short of memory already ({available} of {total} bytes available)"
            ),
        );
        return;
    }
    let cgroup = MemoryCgroup::create(LIMIT).expect("create the cgroup");
    if !pressure_available(test, &cgroup) {
        return;
    }
    let path = cgroup.relative_path().to_string();
    let mut watcher = Watcher::start(&pressure_args(&[&path])).expect("start the watcher");
    let (_, _, allocstalls_before) = node_memory();
    let mut hog = hold_at_limit(&cgroup, 8, false);
    let node_stall = wait_reading_node_stall(&mut hog);
    let events = watcher.events_within(Duration::from_secs(CLEAR_S + 6), |e| {
        is_node(e) || is_pressure(e, &path)
    });
    let (_, _, allocstalls_after) = node_memory();
    eprintln!(
        "most node stall in 1 s: {node_stall} us; direct reclaims meanwhile: {}",
        allocstalls_after - allocstalls_before
    );
    if node_stall < 100_000 {
        // Without a node stall at the trigger's share the test proves
        // nothing. The VM gives one; a host may not (what else it runs).
        assert!(
            !in_vm(),
            "the cgroup at its limit did not stall the node's PSI 100 ms in 1 s ({node_stall} us)"
        );
        skipped(
            test,
            &format!("the held cgroup stalled the host's PSI only {node_stall} us in 1 s"),
        );
        return;
    }
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "memory_pressure" && e["cgroup_path"] == path.as_str()),
        "the cgroup itself is warned of: {events:#?}"
    );
    let node_events: Vec<&Value> = events.iter().filter(|e| is_node(e)).collect();
    if !node_events.is_empty() && allocstalls_after > allocstalls_before && !in_vm() {
        // Other work on a shared host entered direct reclaim: a shortage
        // the agent saw rightly.
        skipped(
            test,
            "the host entered direct reclaim during the test (other work): its node event was due",
        );
        return;
    }
    assert!(
        node_events.is_empty(),
        "the node, not short of memory, was warned of: {node_events:#?}"
    );
}

/// A real node-wide squeeze (the VM's 1 GiB, no swap): a process in a
/// cgroup without a limit takes the node's RAM until `MemAvailable` is
/// about 8 % of `MemTotal`, and a small cgroup stalls at its own limit
/// meanwhile. Short and stalled: a node `memory_pressure` that says the
/// node is short and names the cgroup that stalls (the squeezer, which
/// does not stall, is not named); its end after the stall.
#[test]
fn a_node_wide_squeeze_is_node_pressure_naming_the_cgroups_that_stall() {
    let test = "a_node_wide_squeeze_is_node_pressure_naming_the_cgroups_that_stall";
    if !root_or_skip(test) || !node_psi_available(test) {
        return;
    }
    if !in_vm() {
        skipped(
            test,
            "squeezing the host's RAM would squeeze whatever else it runs; the VM matrix \
             (1 GiB, no swap) does it",
        );
        return;
    }
    let cgroup = MemoryCgroup::create(LIMIT).expect("create the cgroup");
    if !pressure_available(test, &cgroup) {
        return;
    }
    let squeeze = MemoryCgroup::create(LIMIT).expect("create the squeeze's cgroup");
    let unlimited = if squeeze.is_v2() {
        ("memory.max", "max")
    } else {
        ("memory.limit_in_bytes", "-1")
    };
    squeeze
        .write(unlimited.0, unlimited.1)
        .expect("lift the squeeze's limit");
    let path = cgroup.relative_path().to_string();
    let mut watcher = Watcher::start(&pressure_args(&[&path])).expect("start the watcher");
    // Leave 8 % of MemTotal available, then less once the cgroup holds its
    // 34 MiB: short, and above the watermarks (about 5 MiB in 1 GiB), so no
    // OOM kill. (At 7 %, 10 MiB were left at the hold's end on 6.12.)
    let (total, available, _) = node_memory();
    let fill = available.saturating_sub(total * 8 / 100) / MIB;
    eprintln!("node: {available} of {total} bytes available; the squeeze takes {fill} MiB");
    let mut squeezer = hog()
        .arg("--cgroup")
        .arg(squeeze.path())
        .args(["--mb", &fill.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("start the squeeze");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, available, _) = node_memory();
        if available < total / 10 {
            eprintln!("squeezed: {available} bytes available");
            break;
        }
        assert!(
            squeezer.try_wait().expect("the squeeze").is_none(),
            "the squeeze ended before the node was short"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the node is not short after 120 s: {available} of {total} bytes available"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut hog = hold_at_limit(&cgroup, 8, false);
    let node_stall = wait_reading_node_stall(&mut hog);
    let (_, available, _) = node_memory();
    eprintln!("most node stall in 1 s: {node_stall} us; {available} bytes available");
    let events = watcher.events_within(Duration::from_secs(CLEAR_S + 6), is_node);
    let _ = squeezer.kill();
    let _ = squeezer.wait();
    // The warning that names the stalling cgroup (an earlier one, while the
    // squeeze filled the node, would name what stalled then).
    let warning = events
        .iter()
        .find(|e| {
            e["type"] == "memory_pressure"
                && e["stalling"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["cgroup_path"] == path.as_str()))
        })
        .unwrap_or_else(|| {
            panic!("no node warning naming {path} while the node was squeezed: {events:#?}")
        });
    assert_eq!(warning["source"], "psi", "{warning:#}");
    for field in [
        "cgroup_id",
        "cgroup_path",
        "kubernetes",
        "limit_hits",
        "memcg_stat",
    ] {
        assert!(warning[field].is_null(), "{field}: {warning:#}");
    }
    assert_eq!(warning["memcg"]["limit_bytes"], total, "{warning:#}");
    assert_eq!(
        warning["shortage"]["mem_available_low"], true,
        "{warning:#}"
    );
    assert!(
        warning["psi"]["some_total_us"]
            .as_u64()
            .is_some_and(|t| t > 0),
        "{warning:#}"
    );
    let stalling = warning["stalling"].as_array().expect("stalling");
    let named = stalling
        .iter()
        .find(|s| s["cgroup_path"] == path.as_str())
        .expect("named");
    assert!(
        named["stall_percent"].as_f64().is_some_and(|p| p >= 1.0),
        "{warning:#}"
    );
    assert!(named["cgroup_id"].as_u64().is_some(), "{warning:#}");
    assert!(
        stalling
            .iter()
            .all(|s| s["cgroup_path"] != squeeze.relative_path()),
        "the squeeze holds memory but does not stall: {warning:#}"
    );
    let explanation = warning["explanation"].as_str().unwrap();
    assert!(
        explanation.starts_with("node at ")
            && explanation.contains("MemAvailable low")
            && explanation.contains("stalling: ")
            && explanation.contains(&path),
        "{explanation}"
    );
    let end = events
        .iter()
        .find(|e| e["type"] == "memory_pressure_end")
        .unwrap_or_else(|| panic!("no node end: {events:#?}"));
    assert!(end["cgroup_path"].is_null(), "{end:#}");
    assert_eq!(end["since"], warning["since"], "{end:#}");
}
