//! A userspace OOM killer's polite signal, with the real earlyoom in the
//! host's pid namespace (where its kills count): a SIGTERM that ends the
//! process is one `userspace_kill` with `signal: "SIGTERM"`; a SIGTERM the
//! process ignores, followed by earlyoom's SIGKILL when the node's
//! available memory drops further, is one `userspace_kill`, `SIGKILL`.
//!
//! earlyoom picks the biggest process it can see and acts on the node's
//! `MemAvailable`. So that it can pick nothing but the test's victim on
//! this shared machine, it runs as a uid of its own, in a mount namespace
//! whose /proc hides other users' processes (`hidepid=2`, earlyoom's own
//! advice for such set-ups), from the cgroup oom-probe allows it; the
//! victim runs as that uid (and `kill(2)` from it could reach no one
//! else's process anyway). The thresholds are set on the node's own
//! figures; the only real memory is the victim's, inside its memcg limit.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt,
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use oom_probe_test_support::{earlyoom_or_skip, hog, root_or_skip, MemoryCgroup, Watcher};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const SETTLE: Duration = Duration::from_secs(3);

/// A uid no one else on the machine has, one per test (they run at once).
fn killer_uid(test: u32) -> u32 {
    3_900_000 + (std::process::id() % 10_000) * 10 + test
}

/// `MemTotal` and `MemAvailable` of the node, KiB.
fn meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/meminfo"))
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// Starts the victim: `oom-hog --on-sigterm MODE` as `uid` in `cgroup`,
/// 8 MiB resident, `oom_score_adj` 1000; returns it, its pid and its
/// stdout (the lines after `waiting <pid>`).
fn start_victim(
    cgroup: &MemoryCgroup,
    uid: u32,
    mode: &str,
    extra: &[&str],
) -> (Child, u32, BufReader<ChildStdout>) {
    let mut child = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args(["--comm", "eo-polite", "--mb", "8", "--on-sigterm", mode])
        .args(["--uid", &uid.to_string(), "--oom-score-adj", "1000"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let pid = line
        .trim()
        .strip_prefix("waiting ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the victim said {line:?}"));
    (child, pid, stdout)
}

/// Starts earlyoom with `thresholds` (its `-M`/`-m` and `-s` options) as
/// `uid` in `unit`, seeing only `uid`'s processes.
fn start_earlyoom(earlyoom: &str, unit: &MemoryCgroup, uid: u32, thresholds: &str) -> Child {
    let script = format!(
        "mount -t proc -o hidepid=2 proc /proc && echo 0 > {unit}/cgroup.procs && \
         exec setpriv --reuid={uid} --regid={uid} --clear-groups {earlyoom} {thresholds} -r 0",
        unit = unit.path().display(),
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the victim's end, at most a minute (then kills it: `None`).
fn end_of(victim: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Some(status) = victim.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = victim.kill();
    None
}

/// Stops earlyoom; returns what it printed.
fn stop(mut earlyoom: Child) -> String {
    let _ = earlyoom.kill();
    let output = earlyoom.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every event about `cgroup` until one came and `SETTLE` passed.
fn events_of(watcher: &mut Watcher, cgroup: &MemoryCgroup) -> Vec<Value> {
    let path = cgroup.relative_path().to_owned();
    watcher
        .events_matching(1, SETTLE, move |e| e["victim"]["cgroup_path"] == path)
        .unwrap()
}

#[test]
fn a_sigterm_from_earlyoom_that_ends_the_process_is_a_sigterm_kill() {
    const TEST: &str = "a_sigterm_from_earlyoom_that_ends_the_process_is_a_sigterm_kill";
    if !root_or_skip(TEST) {
        return;
    }
    let Some(earlyoom) = earlyoom_or_skip(TEST) else {
        return;
    };
    let uid = killer_uid(1);
    let unit = MemoryCgroup::create(64 * MIB).unwrap();
    let victims = MemoryCgroup::create(64 * MIB).unwrap();
    let killer = format!("earlyoom@{}", unit.relative_path());
    let mut watcher = Watcher::start(&["--userspace-killers", &killer]).unwrap();
    let (mut victim, pid, _) = start_victim(&victims, uid, "die", &[]);
    // SIGTERM at once (available memory is below all of it), SIGKILL never.
    let (total_kib, _) = meminfo();
    let earlyoom = start_earlyoom(
        &earlyoom,
        &unit,
        uid,
        &format!("-M {total_kib},0 -s 100,100"),
    );
    let status = end_of(&mut victim);
    let said = stop(earlyoom);
    let status = status.unwrap_or_else(|| panic!("the victim was not killed: {said}"));
    let events = events_of(&mut watcher, &victims);
    assert!(
        said.contains(&format!("sending SIGTERM to process {pid} ")),
        "earlyoom did not SIGTERM the victim: {said}"
    );
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{said}");
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["type"], "userspace_kill", "{event:#}");
    assert_eq!(event["victim"]["pid"], pid, "{event:#}");
    assert_eq!(event["trigger"]["comm"], "earlyoom", "{event:#}");
    assert_eq!(event["signal"], "SIGTERM", "{event:#}");
    assert_eq!(event["exit"]["signal"], "SIGTERM", "{event:#}");
    assert_eq!(event["exit"]["code"], Value::Null, "{event:#}");
    let explanation = event["explanation"].as_str().unwrap();
    eprintln!("earlyoom said:\n{said}\nthe event: {event}");
    assert!(
        explanation.starts_with("SIGTERM from earlyoom, a userspace OOM killer, ended the process (it died of the signal)"),
        "{explanation}"
    );
    drop((unit, victims));
}

#[test]
fn a_sigterm_ignored_then_earlyoom_s_sigkill_is_one_sigkill_kill() {
    const TEST: &str = "a_sigterm_ignored_then_earlyoom_s_sigkill_is_one_sigkill_kill";
    if !root_or_skip(TEST) {
        return;
    }
    let Some(earlyoom) = earlyoom_or_skip(TEST) else {
        return;
    };
    let uid = killer_uid(2);
    let (total_kib, available_kib) = meminfo();
    // earlyoom SIGKILLs once the node has `margin` less available than now;
    // the victim then takes three times that (inside its memcg's limit),
    // so the node's own ups and downs meanwhile do not decide it.
    let margin_kib = (1 << 20).min(available_kib / 8);
    let grow_mib = 3 * margin_kib / 1024;
    let unit = MemoryCgroup::create(64 * MIB).unwrap();
    let victims = MemoryCgroup::create((grow_mib + 256) * MIB).unwrap();
    let killer = format!("earlyoom@{}", unit.relative_path());
    let mut watcher = Watcher::start(&["--userspace-killers", &killer]).unwrap();
    let grow = grow_mib.to_string();
    let (mut victim, pid, mut stdout) =
        start_victim(&victims, uid, "ignore", &["--sigterm-mb", &grow]);
    let (_, available_kib) = meminfo();
    let thresholds = format!(
        "-M {total_kib},{} -s 100,100",
        available_kib.saturating_sub(margin_kib)
    );
    let earlyoom = start_earlyoom(&earlyoom, &unit, uid, &thresholds);
    let status = end_of(&mut victim);
    let said = stop(earlyoom);
    let status = status.unwrap_or_else(|| panic!("the victim was not killed: {said}"));
    let mut after = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut after).unwrap();
    let events = events_of(&mut watcher, &victims);
    assert!(
        said.contains(&format!("sending SIGTERM to process {pid} "))
            && said.contains("escalating to SIGKILL"),
        "earlyoom did not SIGTERM, then SIGKILL the victim: {said}"
    );
    assert!(
        after.contains("sigterm"),
        "the victim saw no SIGTERM: {after}"
    );
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{said}");
    assert_eq!(events.len(), 1, "one kill, not two: {events:#?}");
    let event = &events[0];
    assert_eq!(event["type"], "userspace_kill", "{event:#}");
    assert_eq!(event["victim"]["pid"], pid, "{event:#}");
    assert_eq!(event["signal"], "SIGKILL", "{event:#}");
    assert_eq!(event["exit"], Value::Null, "{event:#}");
    let explanation = event["explanation"].as_str().unwrap();
    eprintln!("earlyoom said:\n{said}\nthe event: {event}");
    assert!(
        explanation.contains("after a SIGTERM the process did not end on"),
        "{explanation}"
    );
    drop((unit, victims));
}
