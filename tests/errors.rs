//! Bad input gets a clear message: not root, no BTF, no tracefs; and
//! `oom-probe check` tells what the node offers, as text and JSON.

use std::{
    os::unix::process::CommandExt,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use oom_probe::exit_code;
use oom_probe_test_support::{
    host_only, oom_probe_bin, root_or_skip, run_hog_with_child, MemoryCgroup, Watcher,
    START_TIMEOUT,
};
use serde_json::Value;

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs oom-probe as the unprivileged user `nobody`.
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(oom_probe_bin())
        .args(args)
        .output()
        .unwrap()
}

/// Runs oom-probe in a private mount namespace after a shell `setup`.
fn in_private_mounts(setup: &str, args: &str) -> Output {
    let script = format!("{setup} && exec {} {args}", oom_probe_bin().display());
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap()
}

#[test]
fn without_root_it_says_what_privilege_it_needs() {
    if !root_or_skip("without_root_it_says_what_privilege_it_needs")
        || !host_only(
            "without_root_it_says_what_privilege_it_needs",
            "needs util-linux setpriv",
        )
    {
        return;
    }
    let watch = as_nobody(&["watch", "--output", "json"]);
    assert_eq!(
        watch.status.code(),
        Some(exit_code::FAILURE),
        "{}",
        text(&watch)
    );
    assert!(
        text(&watch).contains("must run as root, or with CAP_BPF, CAP_PERFMON"),
        "{}",
        text(&watch)
    );
    let check = as_nobody(&["check"]);
    assert_eq!(
        check.status.code(),
        Some(exit_code::NODE_UNSUPPORTED),
        "{}",
        text(&check)
    );
    assert!(
        text(&check).contains("not running as root"),
        "{}",
        text(&check)
    );
}

#[test]
fn without_btf_it_says_the_kernel_lacks_it() {
    if !root_or_skip("without_btf_it_says_the_kernel_lacks_it") {
        return;
    }
    let hide_btf = "mount -t tmpfs none /sys/kernel/btf";
    let check = in_private_mounts(hide_btf, "check");
    assert_eq!(
        check.status.code(),
        Some(exit_code::NODE_UNSUPPORTED),
        "{}",
        text(&check)
    );
    assert!(
        text(&check).contains("built without CONFIG_DEBUG_INFO_BTF"),
        "{}",
        text(&check)
    );
    let watch = in_private_mounts(hide_btf, "watch --output json");
    assert_eq!(
        watch.status.code(),
        Some(exit_code::FAILURE),
        "{}",
        text(&watch)
    );
    assert!(
        text(&watch).contains("/sys/kernel/btf/vmlinux is missing"),
        "{}",
        text(&watch)
    );
}

#[test]
fn without_tracefs_check_says_how_to_mount_it_and_still_works() {
    if !root_or_skip("without_tracefs_check_says_how_to_mount_it_and_still_works") {
        return;
    }
    let hide =
        "(umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; true)";
    let check = in_private_mounts(hide, "check");
    assert!(
        text(&check).contains("mount -t tracefs nodev /sys/kernel/tracing"),
        "{}",
        text(&check)
    );
    assert_eq!(
        check.status.code(),
        Some(0),
        "tracefs is optional: {}",
        text(&check)
    );
}

#[test]
fn check_reports_hooks_and_cgroups_as_json() {
    if !root_or_skip("check_reports_hooks_and_cgroups_as_json") {
        return;
    }
    let output = Command::new(oom_probe_bin())
        .args(["check", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let hooks = report["hooks"].as_array().unwrap();
    let names: Vec<&str> = hooks.iter().map(|h| h["hook"].as_str().unwrap()).collect();
    for hook in [
        "tp_btf mark_victim",
        "raw_tracepoint mark_victim",
        "fentry oom_kill_process",
        "kprobe oom_kill_process",
    ] {
        assert!(names.contains(&hook), "{hook} not probed: {names:?}");
    }
    let victim_ok = hooks
        .iter()
        .any(|h| h["hook"].as_str().unwrap().ends_with("mark_victim") && h["ok"] == true);
    assert!(victim_ok, "{report:#}");
    for failed in hooks.iter().filter(|h| h["ok"] == false) {
        assert!(
            failed["error"].as_str().is_some_and(|e| !e.is_empty()),
            "a failure says why: {failed}"
        );
    }
    assert!(
        ["v1", "v2", "hybrid"].contains(&report["cgroup_mode"].as_str().unwrap()),
        "{report:#}"
    );
    assert!(report["memory_controller"].as_str().is_some(), "{report:#}");
    assert_eq!(report["blockers"], serde_json::json!([]));
}

/// `check` lists every event field as exact, inferred or unavailable here,
/// in text and JSON, and the decision fields follow the hooks it found.
#[test]
fn check_says_which_fields_are_exact_inferred_or_unavailable() {
    if !root_or_skip("check_says_which_fields_are_exact_inferred_or_unavailable") {
        return;
    }
    let json = Command::new(oom_probe_bin())
        .args(["check", "--json"])
        .output()
        .unwrap();
    assert!(json.status.success(), "{}", text(&json));
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    let fields = report["fields"].as_array().unwrap();
    let quality = |prefix: &str| {
        fields
            .iter()
            .find(|f| f["field"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no field {prefix}: {report:#}"))["quality"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let decision_hook = report["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["ok"] == true && h["hook"].as_str().unwrap().ends_with("oom_kill_process"));
    let (decided, scored) = if decision_hook {
        ("exact", "exact")
    } else {
        ("inferred", "unavailable")
    };
    assert_eq!(quality("oom_id"), decided, "{report:#}");
    assert_eq!(quality("oom_memcg"), decided, "{report:#}");
    assert_eq!(quality("victim.oom_points"), scored, "{report:#}");
    assert_eq!(quality("memcg_stat"), "inferred", "{report:#}");
    for f in fields {
        assert!(
            ["exact", "inferred", "unavailable"].contains(&f["quality"].as_str().unwrap())
                && !f["why"].as_str().unwrap().is_empty(),
            "{f:#}"
        );
    }
    let check = Command::new(oom_probe_bin()).arg("check").output().unwrap();
    let out = text(&check);
    assert!(out.contains("event fields on this node:"), "{out}");
    assert!(out.contains(&format!("{decided:<12} oom_id")), "{out}");
    if !decision_hook {
        assert!(
            out.contains("inferred or unavailable, listed above"),
            "{out}"
        );
    }
}

/// What a container's hostname looks like (Docker: the short container id).
const CONTAINER_HOSTNAME: &str = "c0ffee123456";

/// Makes the command run in a UTS namespace of its own with
/// [`CONTAINER_HOSTNAME`], as in a container, and without `NODE_NAME`.
fn as_in_a_container(command: &mut Command) {
    command.env_remove("NODE_NAME");
    // SAFETY: unshare and sethostname are async-signal-safe syscalls on
    // memory this closure owns.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUTS) != 0
                || libc::sethostname(CONTAINER_HOSTNAME.as_ptr().cast(), CONTAINER_HOSTNAME.len())
                    != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

#[test]
fn in_a_uts_namespace_of_its_own_the_node_is_the_hosts_never_the_containers() {
    if !root_or_skip("in_a_uts_namespace_of_its_own_the_node_is_the_hosts_never_the_containers") {
        return;
    }
    // No NODE_NAME, no host hostname file: it refuses, naming the fixes.
    let mut command = Command::new(oom_probe_bin());
    as_in_a_container(&mut command);
    let mut child = command
        .args(["watch", "--output", "json"])
        .args(["--node-name-file", "/nonexistent/etc/hostname"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a build that takes the container's hostname starts watching.
    let deadline = Instant::now() + START_TIMEOUT;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let refused = child.wait_with_output().unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    for needle in [
        CONTAINER_HOSTNAME,
        "NODE_NAME",
        "--uts=host",
        "/host/etc/hostname",
    ] {
        assert!(
            text(&refused).contains(needle),
            "{needle:?}: {}",
            text(&refused)
        );
    }

    // The host's /etc/hostname mounted in: every event carries that name.
    let file = std::env::temp_dir().join(format!("oom-probe-hostname-{}", std::process::id()));
    std::fs::write(&file, "node-from-host-file\n").unwrap();
    let mut watcher = Watcher::start_with(
        "watch",
        &["--node-name-file", file.to_str().unwrap()],
        as_in_a_container,
    )
    .unwrap();
    let cgroup = MemoryCgroup::create(32 << 20).unwrap();
    run_hog_with_child(&cgroup, "--fork", "uts-victim", 128).unwrap();
    let events = watcher
        .events_for(cgroup.relative_path(), 1, Duration::from_millis(500))
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(events[0]["node"], "node-from-host-file", "{:#}", events[0]);
}

/// The reader of oom-probe's log can go away (`2>&1 | head`, a log shipper
/// restarted): kills still come out on stdout, and oom-probe ends cleanly on
/// SIGTERM, though its last log line has nowhere to go. (tracing's default
/// reported the failed write on the same stderr, panicked, and exited 101.)
#[test]
fn a_closed_log_pipe_neither_stops_the_events_nor_fails_the_exit() {
    use std::{
        io::{BufRead, BufReader},
        sync::mpsc,
    };
    if !root_or_skip("a_closed_log_pipe_neither_stops_the_events_nor_fails_the_exit") {
        return;
    }
    let cgroup = MemoryCgroup::create(64 << 20).unwrap();
    let mut child = Command::new(oom_probe_bin())
        .args(["watch", "--output", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains(oom_probe_test_support::READY_LINE) {
        line.clear();
        assert!(
            log.read_line(&mut line).unwrap() > 0,
            "oom-probe ended before it was ready: {:?}",
            child.wait()
        );
    }
    drop(log); // the reader goes away: every later log line meets EPIPE
    let (tx, lines) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (pid, report) = run_hog_with_child(&cgroup, "--fork", "closedlog", 512).unwrap();
    assert!(report.contains("killed by signal 9"), "{report}");
    let deadline = Instant::now() + oom_probe_test_support::EVENT_TIMEOUT;
    let event = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no event for the kill after the log pipe closed");
        let event: Value = serde_json::from_str(&line).unwrap();
        if event["victim"]["cgroup_path"] == cgroup.relative_path() {
            break event;
        }
    };
    assert_eq!(event["victim"]["pid"], pid, "{event:#}");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "oom-probe ended with {status}");
}
