//! Hostile inputs (docs/security.md): a process that takes a userspace OOM
//! killer's name, a cgroup path that looks like a pod's, command lines and
//! pipes that used to end oom-probe with a panic, and HTTP clients that
//! never finish their request.

use std::{process::Command, time::Duration};

use oom_probe_tests::{hog, oom_probe_bin, root_or_skip, MemoryCgroup, Watcher};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const SETTLE: Duration = Duration::from_millis(1500);

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

    oom_probe_tests::run_hog_with_child(&look_alike, "--fork", "look-alike", 128).unwrap();
    let event = &watcher
        .events_for(look_alike.relative_path(), 1, SETTLE)
        .unwrap()[0];
    assert_eq!(event["type"], "oom_kill", "{event:#}");
    assert_eq!(event["kubernetes"], Value::Null, "{event:#}");

    oom_probe_tests::run_hog_with_child(&real, "--fork", "real-pod", 128).unwrap();
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
        ("--reconcile-interval", "-1", "negative"),
        ("--metrics-series-ttl", "NaN", "not a duration"),
        ("--metrics-series-ttl", "-inf", "negative"),
        ("--retain-deleted-pods", "1e300", "not a duration"),
        ("--retain-deleted-pods", "soon", "not a number of seconds"),
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
    oom_probe_tests::run_hog_with_child(&cgroup, "--fork", "since-hog", 128).unwrap();
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
