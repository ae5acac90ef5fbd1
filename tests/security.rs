//! Hostile inputs (docs/security.md): a process that takes a userspace OOM
//! killer's name, a cgroup path that looks like a pod's, command lines and
//! pipes that used to end oom-probe with a panic, and HTTP clients that
//! never finish their request.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    process::Command,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use oom_probe_test_support::{
    free_loopback_addr, hog, http_get, oom_probe_bin, root_or_skip, MemoryCgroup, Watcher,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const SETTLE: Duration = Duration::from_millis(1500);

/// Held by the tests whose senders are named `earlyoom`: every watcher
/// counts every impostor on the node, so the renamed process's count would
/// also take the real earlyoom's SIGKILL (21 of 20, seen once in three runs
/// when the two ran in parallel).
static EARLYOOM_NAMED: Mutex<()> = Mutex::new(());

fn earlyoom_named() -> MutexGuard<'static, ()> {
    EARLYOOM_NAMED.lock().unwrap_or_else(|e| e.into_inner())
}

/// `--userspace-killers NAME@<cgroup>`: `name` is a killer only in `cgroup`.
fn killer_in(name: &str, cgroup: &MemoryCgroup) -> String {
    format!("{name}@{}", cgroup.relative_path())
}

/// Runs `oom-hog` named `comm` in `cgroup` that SIGKILLs `children` of its
/// own, optionally through `wrapper` (e.g. `unshare --pid --fork`);
/// returns the killed pids.
fn kill_children(wrapper: &[&str], cgroup: &MemoryCgroup, comm: &str, children: u32) -> Vec<u64> {
    let hog_bin = hog().get_program().to_owned();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(hog_bin);
            c
        }
        None => Command::new(hog_bin),
    };
    let output = command
        .arg("--cgroup")
        .arg(cgroup.path())
        .args(["--comm", comm, "--kill-children", &children.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("killed ")?.parse().ok())
        .collect()
}

fn userspace_kill_by(comm: &'static str) -> impl Fn(&Value) -> bool {
    move |e: &Value| e["type"] == "userspace_kill" && e["trigger"]["comm"] == comm
}

/// The running total the agent logged in its impostor warning.
fn impostors_in(line: &str) -> u64 {
    line.rsplit("impostors total ")
        .next()
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no impostor total in {line}"))
}

/// H1: a process that renames itself `earlyoom` (prctl PR_SET_NAME) outside
/// earlyoom's cgroup and SIGKILLs its own children fakes no kill: the kernel
/// drops its SIGKILLs and counts them, the agent says so once.
#[test]
fn a_process_renamed_earlyoom_fakes_no_userspace_kill() {
    if !root_or_skip("a_process_renamed_earlyoom_fakes_no_userspace_kill") {
        return;
    }
    let _earlyoom = earlyoom_named();
    let earlyoom_unit = MemoryCgroup::create(64 * MIB).unwrap();
    let impostor = MemoryCgroup::create(64 * MIB).unwrap();
    let mut watcher = Watcher::start(&[
        "--userspace-killers",
        &killer_in("earlyoom", &earlyoom_unit),
    ])
    .unwrap();
    let killed = kill_children(&[], &impostor, "earlyoom", 20);
    assert_eq!(killed.len(), 20);
    let line = watcher
        .wait_for_stderr("userspace kill impostors total", Duration::from_secs(10))
        .unwrap();
    let counted = impostors_in(&line);
    assert!((1..=20).contains(&counted), "{line}");
    let faked = watcher.events_within(SETTLE, userspace_kill_by("earlyoom"));
    assert!(faked.is_empty(), "{faked:#?}");
}

/// H1: the name in the killer's own cgroup, but from a container's pid
/// namespace, is no killer either.
#[test]
fn a_killer_name_in_a_container_pid_namespace_fakes_no_userspace_kill() {
    if !root_or_skip("a_killer_name_in_a_container_pid_namespace_fakes_no_userspace_kill") {
        return;
    }
    let unit = MemoryCgroup::create(64 * MIB).unwrap();
    let mut watcher = Watcher::start(&["--userspace-killers", &killer_in("oomd", &unit)]).unwrap();
    let killed = kill_children(&["unshare", "--pid", "--fork"], &unit, "oomd", 5);
    assert_eq!(killed.len(), 5);
    let line = watcher
        .wait_for_stderr("userspace kill impostors total", Duration::from_secs(10))
        .unwrap();
    assert!((1..=5).contains(&impostors_in(&line)), "{line}");
    let faked = watcher.events_within(SETTLE, userspace_kill_by("oomd"));
    assert!(faked.is_empty(), "{faked:#?}");
}

/// H1: a sender that meets the rule (the name, the host's pid namespace,
/// the allow-listed cgroup) is still a userspace OOM killer, every kill.
#[test]
fn a_killer_in_its_own_cgroup_is_reported() {
    if !root_or_skip("a_killer_in_its_own_cgroup_is_reported") {
        return;
    }
    let unit = MemoryCgroup::create(64 * MIB).unwrap();
    let mut watcher =
        Watcher::start(&["--userspace-killers", &killer_in("nohang", &unit)]).unwrap();
    let killed = kill_children(&[], &unit, "nohang", 3);
    let events = watcher
        .events_matching(3, SETTLE, userspace_kill_by("nohang"))
        .unwrap();
    assert_eq!(events.len(), 3, "{events:#?}");
    for (event, pid) in events.iter().zip(&killed) {
        assert_eq!(event["victim"]["pid"], *pid, "{event:#}");
        assert_eq!(
            event["victim"]["cgroup_path"],
            unit.relative_path(),
            "{event:#}"
        );
    }
}

/// M1: a cgroup path only looks like a pod's below a directory anyone with
/// a delegated subtree could have made (here a systemd user manager's
/// `user@1000.service`): its kill names no pod, while the kubelet's own
/// layout next to it still does.
#[test]
fn a_pod_look_alike_outside_the_kubelet_root_names_no_pod() {
    if !root_or_skip("a_pod_look_alike_outside_the_kubelet_root_names_no_pod") {
        return;
    }
    const UID: &str = "0f8a1c2e-4b3d-4e5f-9a6b-7c8d9e0f1a2b";
    let root = MemoryCgroup::create(256 * MIB).unwrap();
    // root/<parent>/kubepods/burstable/pod<UID>/<64 hex>
    let pod_container = |parent: &MemoryCgroup, id: &str| {
        let kubepods = parent.create_child_named("kubepods", None).unwrap();
        let burstable = kubepods.create_child_named("burstable", None).unwrap();
        let pod = burstable
            .create_child_named(&format!("pod{UID}"), None)
            .unwrap();
        let container = pod.create_child_named(id, Some(32 * MIB)).unwrap();
        (container, [pod, burstable, kubepods])
    };
    let user = root.create_child_named("user@1000.service", None).unwrap();
    let (look_alike, look_alike_parents) = pod_container(&user, &"ab".repeat(32));
    let (real, real_parents) = pod_container(&root, &"cd".repeat(32));
    let mut watcher = Watcher::start(&["--no-kubernetes-api"]).unwrap();

    oom_probe_test_support::run_hog_with_child(&look_alike, "--fork", "look-alike", 128).unwrap();
    let event = &watcher
        .events_for(look_alike.relative_path(), 1, SETTLE)
        .unwrap()[0];
    assert_eq!(event["type"], "oom_kill", "{event:#}");
    assert_eq!(event["kubernetes"], Value::Null, "{event:#}");

    oom_probe_test_support::run_hog_with_child(&real, "--fork", "real-pod", 128).unwrap();
    let event = &watcher.events_for(real.relative_path(), 1, SETTLE).unwrap()[0];
    assert_eq!(event["kubernetes"]["pod_uid"], UID, "{event:#}");
    assert_eq!(event["kubernetes"]["qos_class"], "Burstable", "{event:#}");
    drop((look_alike, look_alike_parents, user, real, real_parents));
}

/// Runs `oom-probe <args>` through bash with a shell redirection or pipe
/// (`>&-`, `| true`) after it; returns oom-probe's exit code and stderr.
fn oom_probe_sh(args: &str, plumbing: &str) -> (i32, String) {
    let script = format!(
        "{} {args} 2>/tmp/oom-probe-sh-$$.err {plumbing}; code=${{PIPESTATUS[0]}}; \
         cat /tmp/oom-probe-sh-$$.err >&2; rm -f /tmp/oom-probe-sh-$$.err; exit $code",
        oom_probe_bin().display()
    );
    let output = Command::new("bash").args(["-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().expect("exited"), stderr)
}

/// L9: `check` with stdout closed or a reader that left, and with stderr
/// closed, ends with a message and a documented code, never a panic (101).
/// A closed descriptor is /dev/null to a Rust program (its runtime reopens
/// 0, 1 and 2 there), so `>&-` and `2>&-` change nothing but where the
/// text goes.
#[test]
fn check_on_a_closed_or_broken_stdout_exits_cleanly() {
    if !root_or_skip("check_on_a_closed_or_broken_stdout_exits_cleanly") {
        return;
    }
    let normal = Command::new(oom_probe_bin()).arg("check").output().unwrap();
    let normal_code = normal.status.code().expect("exited");
    assert!([0, 2].contains(&normal_code), "{normal:?}");

    let (code, stderr) = oom_probe_sh("check", ">&-");
    assert_eq!(code, normal_code, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // `true` exits at once: check's write meets EPIPE.
    for plumbing in ["| true", "| head -c0"] {
        for command in ["check", "check --json"] {
            let (code, stderr) = oom_probe_sh(command, plumbing);
            assert_eq!(code, 1, "{command} {plumbing}: {stderr}");
            assert!(
                stderr.contains("cannot write the report to stdout")
                    && stderr.contains("Broken pipe"),
                "{command} {plumbing}: {stderr}"
            );
        }
    }

    // stderr closed: the report is still printed, the code is check's own.
    let script = format!("exec {} check 2>&-", oom_probe_bin().display());
    let closed = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(closed.status.code(), Some(normal_code));
    assert_eq!(closed.stdout, normal.stdout);
}

/// L9: durations that are infinite, not a number, negative or too large are
/// a usage error (exit 2) naming the flag, not a panic.
#[test]
fn bad_durations_are_usage_errors() {
    for (flag, value, says) in [
        ("--reconcile-interval", "inf", "not a duration"),
        ("--reconcile-interval", "-1", "0 or more"),
        ("--metrics-series-ttl", "NaN", "not a duration"),
        ("--metrics-series-ttl", "-inf", "0 or more"),
        ("--retain-deleted-pods", "1e300", "not a duration"),
        ("--retain-deleted-pods", "soon", "a duration such as"),
    ] {
        for command in ["watch", "run"] {
            let output = Command::new(oom_probe_bin())
                .arg(command)
                .arg(format!("{flag}={value}"))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{command} {flag}={value}: {stderr}"
            );
            assert!(stderr.contains(flag) && stderr.contains(says), "{stderr}");
        }
    }
    let output = Command::new(oom_probe_bin())
        .args(["watch", "--userspace-killers"])
        .arg(
            (0..33)
                .map(|i| format!("k{i}"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("at most 32"), "{stderr}");
}

/// L9: `history --since` longer ago than the clock can count back reads
/// everything instead of panicking on the subtraction.
#[test]
fn history_since_beyond_the_clock_reads_everything() {
    if !root_or_skip("history_since_beyond_the_clock_reads_everything") {
        return;
    }
    let store = std::env::temp_dir().join(format!("oom-probe-since-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&store);
    let cgroup = MemoryCgroup::create(32 * MIB).unwrap();
    let mut watcher = Watcher::start(&["--history-file", store.to_str().unwrap()]).unwrap();
    oom_probe_test_support::run_hog_with_child(&cgroup, "--fork", "since-hog", 128).unwrap();
    watcher
        .events_for(cgroup.relative_path(), 1, SETTLE)
        .unwrap();
    watcher.terminate().unwrap();
    for since in ["500000000000y", "1000y", "1h"] {
        let output = Command::new(oom_probe_bin())
            .args([
                "history",
                "--output",
                "json",
                "--since",
                since,
                "--history-file",
            ])
            .arg(&store)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "--since {since}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("since-hog"), "--since {since}: {stdout}");
    }
    let _ = std::fs::remove_file(&store);
}

/// The agent's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Reads until the server closes the connection (EOF or reset); `None` if
/// it is still open after `wait`.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Some(got),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// The header timeout of sink/http.rs, plus scheduling slack.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_secs(2);

/// H3: 400 clients that send half a header and stop are all cut off within
/// the header timeout, /healthz answers meanwhile, and the agent's memory
/// stays flat.
#[test]
fn slow_clients_are_cut_off_and_healthz_still_answers() {
    if !root_or_skip("slow_clients_are_cut_off_and_healthz_still_answers") {
        return;
    }
    let addr = free_loopback_addr();
    let watcher = Watcher::start(&["--listen", &addr, "--no-kubernetes-api"]).unwrap();
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
    let rss_before = rss_kib(watcher.pid());
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..400)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).unwrap();
            write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ").unwrap();
            s
        })
        .collect();
    let opened = started.elapsed();
    let asked = Instant::now();
    let (code, body) = http_get(&addr, "/healthz").unwrap();
    let healthz = asked.elapsed();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let rss_during = rss_kib(watcher.pid());
    let mut last_cut = Duration::ZERO;
    for (i, stream) in slow.iter_mut().enumerate() {
        let wait = (HEADER_TIMEOUT + SLACK).saturating_sub(started.elapsed());
        assert!(
            closed_within(stream, wait).is_some(),
            "slow client {i} still open {:?} after it connected",
            started.elapsed()
        );
        last_cut = started.elapsed();
    }
    let rss_after = rss_kib(watcher.pid());
    eprintln!(
        "400 slow clients opened in {opened:?}; /healthz answered in {healthz:?} meanwhile; \
         all cut off by {last_cut:?}; agent RSS {rss_before} KiB before, {rss_during} KiB \
         with 400 open, {rss_after} KiB after"
    );
    assert!(
        rss_during < rss_before + 16 * 1024,
        "RSS {rss_before} -> {rss_during} KiB"
    );
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
}

/// H3: an idle keep-alive connection is closed under the header clock; a
/// header over 8 KiB, a body, a flood of header fields are refused.
#[test]
fn requests_over_the_limits_are_refused() {
    if !root_or_skip("requests_over_the_limits_are_refused") {
        return;
    }
    let addr = free_loopback_addr();
    let _watcher = Watcher::start(&["--listen", &addr, "--no-kubernetes-api"]).unwrap();
    // Keep-alive: one answer, then closed once idle for the header timeout.
    let mut idle = TcpStream::connect(&addr).unwrap();
    let asked = Instant::now();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let answer = closed_within(&mut idle, HEADER_TIMEOUT + SLACK).expect("idle stays open");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(asked.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(500));

    let status_of = |request: String| {
        let mut s = TcpStream::connect(&addr).unwrap();
        // The server may answer and close before all is sent.
        let _ = s.write_all(request.as_bytes());
        let answer = closed_within(&mut s, HEADER_TIMEOUT + SLACK).expect("closed");
        String::from_utf8_lossy(&answer)
            .split_whitespace()
            .nth(1)
            .unwrap_or("none")
            .to_string()
    };
    let big = "x".repeat(9000);
    let header = status_of(format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"
    ));
    assert_eq!(header, "431");
    let fields: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
    let many = status_of(format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{fields}\r\n"));
    assert_eq!(many, "431");
    let body = status_of(format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{}",
        "b".repeat(2000)
    ));
    assert_eq!(body, "413");
    let chunked = status_of(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            .into(),
    );
    assert_eq!(chunked, "413");
    let small = status_of("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into());
    assert_eq!(small, "200");
}

/// H1 with the real program: Debian's `earlyoom` (if installed) run in a
/// container's pid namespace, even from the allow-listed cgroup, kills its
/// victim for real, and that kill is not reported as a `userspace_kill`.
/// (earlyoom in the host's pid namespace would pick among every process of
/// this shared machine, so the accepted case is left to the stand-in above.)
#[test]
fn a_real_earlyoom_in_a_container_pid_namespace_is_no_userspace_killer() {
    if !root_or_skip("a_real_earlyoom_in_a_container_pid_namespace_is_no_userspace_killer") {
        return;
    }
    let Some(earlyoom) = oom_probe_test_support::earlyoom_or_skip(
        "a_real_earlyoom_in_a_container_pid_namespace_is_no_userspace_killer",
    ) else {
        return;
    };
    let _earlyoom = earlyoom_named();
    let unit = MemoryCgroup::create(64 * MIB).unwrap();
    let victims = MemoryCgroup::create(64 * MIB).unwrap();
    let mut watcher =
        Watcher::start(&["--userspace-killers", &killer_in("earlyoom", &unit)]).unwrap();
    // Thresholds at 99 % (its maximum): earlyoom kills at once; in its own pid namespace
    // (and /proc) the hog is the only process it can see besides itself.
    let script = format!(
        "echo 0 > {unit}/cgroup.procs && {{ {hog} --cgroup {victims} --comm eo-victim --mb 8 & }} \
         && exec {earlyoom} -m 99,99 -s 100,100 -r 0 --prefer '^eo-victim$'",
        unit = unit.path().display(),
        hog = hog().get_program().to_string_lossy(),
        victims = victims.path().display(),
    );
    let mut child = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "sh",
            "-c",
            &script,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = watcher
        .wait_for_stderr("userspace kill impostors total", Duration::from_secs(15))
        .unwrap();
    assert!(impostors_in(&line) >= 1, "{line}");
    let faked = watcher.events_within(SETTLE, userspace_kill_by("earlyoom"));
    let _ = child.kill();
    drop(unit);
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains("sending SIGKILL to process 2 "),
        "earlyoom did not kill the hog: {said}"
    );
    assert!(faked.is_empty(), "{faked:#?}");
}
