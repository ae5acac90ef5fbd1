//! The kernel OOM-kills real processes in memory cgroups these tests create;
//! `oom-probe watch` must report each kill once, with the right figures.

use std::{process::Command, time::Duration};

use oom_probe_test_support::{
    hog, root_or_skip, run_hog_with_child, run_hog_with_child_args, MemoryCgroup, Watcher,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const SETTLE: Duration = Duration::from_millis(1500);

/// Checks the fields every kill must carry; `limit` is the cgroup's limit.
fn assert_kill(event: &Value, pid: u32, comm: &str, cgroup: &MemoryCgroup, limit: u64) {
    let victim = &event["victim"];
    assert_eq!(event["type"], "oom_kill", "{event:#}");
    assert_eq!(victim["pid"], pid, "{event:#}");
    assert_eq!(victim["tid"], pid, "{event:#}");
    assert_eq!(victim["comm"], comm, "{event:#}");
    assert_eq!(victim["cgroup_path"], cgroup.relative_path(), "{event:#}");
    assert!(
        victim["cgroup_id"].as_u64().is_some_and(|id| id > 1),
        "{event:#}"
    );
    assert_eq!(event["memcg"]["limit_bytes"], limit, "{event:#}");
    let usage = event["memcg"]["usage_bytes"].as_u64().unwrap();
    assert!(
        usage > limit * 9 / 10 && usage <= limit,
        "usage {usage} not at limit {limit}"
    );
    let anon = victim["rss_bytes"]["anon"].as_u64().unwrap();
    assert!(
        anon > limit / 2 && anon <= limit,
        "anon RSS {anon} not near limit {limit}"
    );
    assert!(
        victim["total_vm_bytes"].as_u64().unwrap() >= anon,
        "{event:#}"
    );
    assert_eq!(victim["uid"], 0, "{event:#}");
    assert!(
        event["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{event:#}"
    );
    assert!(
        event["kernel_time_ns"].as_u64().is_some_and(|t| t > 0),
        "{event:#}"
    ); // The test cgroup's own limit ran out.
    assert_eq!(event["constraint"], "memcg", "{event:#}");
    assert_eq!(
        event["constraint_source"],
        oom_probe_test_support::expected_constraint_source(),
        "{event:#}"
    );
    assert_eq!(
        event["oom_memcg"]["path"],
        cgroup.relative_path(),
        "{event:#}"
    );
    assert_eq!(event["oom_memcg"]["limit_bytes"], limit, "{event:#}");
    // The decision hook's figures: the victim's badness and the OOM
    // domain (the cgroup's limit, no swap), else null.
    if oom_probe_test_support::expected_constraint_source() == "oom_kill_process" {
        assert!(
            victim["oom_points"].as_i64().is_some_and(|p| p > 0),
            "{event:#}"
        );
        assert_eq!(event["oom_domain_bytes"], limit, "{event:#}");
    } else {
        assert!(victim["oom_points"].is_null(), "{event:#}");
        assert!(event["oom_domain_bytes"].is_null(), "{event:#}");
    }
    // Its cgroup on the unified hierarchy: the memory cgroup itself on v2;
    // on v1 memory, the v2 cgroup it inherited from this test.
    assert_eq!(victim["cgroup_v2_id"], expected_v2_id(cgroup), "{event:#}");
}

/// The id a victim in `cgroup` has on the unified hierarchy (null without one).
fn expected_v2_id(cgroup: &MemoryCgroup) -> Value {
    use std::os::unix::fs::MetadataExt;
    let Some(v2) = oom_probe_cgroupfs::Hierarchies::discover().unwrap().v2 else {
        return Value::Null;
    };
    let dir = if cgroup.is_v2() {
        cgroup.path().to_path_buf()
    } else {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        v2.join(path.trim_start_matches('/'))
    };
    std::fs::metadata(dir).unwrap().ino().into()
}

fn child_killed_while_parent_lives(hook_args: &[&str], comm: &str) {
    let limit = 64 * MIB;
    let cgroup = MemoryCgroup::create(limit).unwrap();
    let mut watcher = Watcher::start(hook_args).unwrap();
    let (pid, report) = run_hog_with_child(&cgroup, "--fork", comm, 512).unwrap();
    assert!(
        report.contains("killed by signal 9"),
        "child not OOM-killed: {report}"
    );
    let events = watcher
        .events_for(cgroup.relative_path(), 1, SETTLE)
        .unwrap();
    assert_eq!(events.len(), 1, "one kill, one event: {events:#?}");
    let event = &events[0];
    assert_kill(event, pid, comm, &cgroup, limit);
    // The parent survived (it printed the report): the kill was silent.
    assert_eq!(event["silent"], true, "{event:#}");
    assert_eq!(
        event["victim"]["ns_pid"], pid,
        "host pid namespace: ns_pid is the pid"
    );
    assert_eq!(cgroup.kernel_oom_kills().unwrap(), 1);
}

#[test]
fn child_killed_while_parent_lives_is_silent() {
    if root_or_skip("child_killed_while_parent_lives_is_silent") {
        child_killed_while_parent_lives(&[], "hog-worker");
    }
}

#[test]
fn raw_tracepoint_hook_reports_the_same_kill() {
    if root_or_skip("raw_tracepoint_hook_reports_the_same_kill") {
        child_killed_while_parent_lives(&["--hook", "raw-tracepoint"], "hog-rawtp");
    }
}

#[test]
fn tp_btf_hook_reports_the_same_kill() {
    if root_or_skip("tp_btf_hook_reports_the_same_kill") {
        child_killed_while_parent_lives(&["--hook", "tp-btf"], "hog-tpbtf");
    }
}

/// A second start on the same boot takes the kernel's offsets from the
/// layout cache the first one wrote (no BTF parse), and its events are as
/// complete as a cold start's.
#[test]
fn warm_start_takes_the_layout_from_the_cache() {
    if !root_or_skip("warm_start_takes_the_layout_from_the_cache") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("oom-probe-layout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = dir.join("kernel-layout.json");
    let cache_arg = cache.to_str().unwrap();
    let debug = |command: &mut std::process::Command| {
        command.env("RUST_LOG", "oom_probe=debug");
    };
    // Ready means attached, and the layout is stored before the load.
    drop(Watcher::start_with("watch", &["--layout-cache", cache_arg], debug).unwrap());
    assert!(
        cache.exists(),
        "the cold start wrote no {}",
        cache.display()
    );
    let limit = 64 * MIB;
    let cgroup = MemoryCgroup::create(limit).unwrap();
    let mut warm = Watcher::start_with("watch", &["--layout-cache", cache_arg], debug).unwrap();
    warm.wait_for_stderr("kernel layout from", SETTLE)
        .expect("the warm start did not take the cached layout");
    let (pid, report) = run_hog_with_child(&cgroup, "--fork", "hog-warm", 512).unwrap();
    assert!(
        report.contains("killed by signal 9"),
        "child not OOM-killed: {report}"
    );
    let events = warm.events_for(cgroup.relative_path(), 1, SETTLE).unwrap();
    assert_eq!(events.len(), 1, "one kill, one event: {events:#?}");
    assert_kill(&events[0], pid, "hog-warm", &cgroup, limit);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every field read from the victim's task, with values that cannot be
/// defaults (uid 65534, oom_score_adj 321): on kernels whose `mark_victim`
/// passes only the pid (5.10 in the VM matrix) they come through the task
/// the OOM killer's SIGKILL named, and must be exactly what the 6.9+
/// tracepoint gives.
#[test]
fn victim_fields_come_from_its_task() {
    if !root_or_skip("victim_fields_come_from_its_task") {
        return;
    }
    let limit = 48 * MIB;
    let cgroup = MemoryCgroup::create(limit).unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    let extra = ["--uid", "65534", "--oom-score-adj", "321"];
    let (pid, report) =
        run_hog_with_child_args(&cgroup, "--fork", "hog-fields", 512, &extra).unwrap();
    assert!(
        report.contains("killed by signal 9"),
        "child not OOM-killed: {report}"
    );
    let events = watcher
        .events_for(cgroup.relative_path(), 1, SETTLE)
        .unwrap();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    let victim = &event["victim"];
    assert_eq!(victim["pid"], pid, "{event:#}");
    assert_eq!(victim["tid"], pid, "{event:#}");
    assert_eq!(victim["comm"], "hog-fields", "{event:#}");
    assert_eq!(victim["uid"], 65534, "{event:#}");
    assert_eq!(victim["oom_score_adj"], 321, "{event:#}");
    assert_eq!(victim["ns_pid"], pid, "{event:#}");
    assert_eq!(event["silent"], true, "{event:#}");
    let rss = &victim["rss_bytes"];
    let anon = rss["anon"].as_u64().expect("rss_bytes.anon");
    assert!(anon > limit / 2 && anon <= limit, "anon {anon}: {event:#}");
    // Its binary's mapped pages are file RSS, or shmem RSS where the root
    // filesystem is tmpfs (the VM's initramfs).
    let file = rss["file"].as_u64().expect("rss_bytes.file");
    let shmem = rss["shmem"].as_u64().expect("rss_bytes.shmem");
    assert!(file + shmem > 0, "{event:#}");
    assert!(
        victim["total_vm_bytes"].as_u64().is_some_and(|v| v >= anon),
        "{event:#}"
    );
    assert_eq!(victim["cgroup_path"], cgroup.relative_path(), "{event:#}");
    assert_eq!(victim["cgroup_v2_id"], expected_v2_id(&cgroup), "{event:#}");
    // The child ran out of memory in its own allocation: it is the trigger.
    assert_eq!(event["trigger"]["pid"], pid, "{event:#}");
    assert_eq!(event["trigger"]["comm"], "hog-fields", "{event:#}");
    assert_eq!(event["constraint"], "memcg", "{event:#}");
    assert_eq!(event["memcg"]["limit_bytes"], limit, "{event:#}");
}

#[test]
fn pid_namespace_init_killed_is_not_silent() {
    if !root_or_skip("pid_namespace_init_killed_is_not_silent") {
        return;
    }
    let limit = 48 * MIB;
    let cgroup = MemoryCgroup::create(limit).unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    let (pid, report) = run_hog_with_child(&cgroup, "--pidns", "hog-init", 512).unwrap();
    assert!(
        report.contains("killed by signal 9"),
        "init not OOM-killed: {report}"
    );
    let events = watcher
        .events_for(cgroup.relative_path(), 1, SETTLE)
        .unwrap();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_kill(event, pid, "hog-init", &cgroup, limit);
    assert_eq!(event["victim"]["ns_pid"], 1, "{event:#}");
    assert_eq!(event["silent"], false, "{event:#}");
}

#[test]
fn several_kills_in_quick_succession_are_each_reported_once() {
    if !root_or_skip("several_kills_in_quick_succession_are_each_reported_once") {
        return;
    }
    const KILLS: usize = 6;
    let limit = 32 * MIB;
    let mut watcher = Watcher::start(&[]).unwrap();
    let cgroups: Vec<MemoryCgroup> = (0..KILLS)
        .map(|_| MemoryCgroup::create(limit).unwrap())
        .collect();
    let mut hogs: Vec<_> = cgroups
        .iter()
        .enumerate()
        .map(|(i, cgroup)| {
            let child = hog()
                .arg("--cgroup")
                .arg(cgroup.path())
                .args(["--comm", &format!("burst-{i}"), "--mb", "256"])
                .spawn()
                .unwrap();
            (child.id(), child)
        })
        .collect();
    for (_, child) in &mut hogs {
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{status}"
        );
    }
    let paths: Vec<&str> = cgroups.iter().map(MemoryCgroup::relative_path).collect();
    let events = watcher
        .events_matching(KILLS, SETTLE, |e| {
            e["victim"]["cgroup_path"]
                .as_str()
                .is_some_and(|p| paths.contains(&p))
        })
        .unwrap();
    assert_eq!(events.len(), KILLS, "each kill exactly once: {events:#?}");
    for (i, (pid, _)) in hogs.iter().enumerate() {
        let matching: Vec<_> = events
            .iter()
            .filter(|e| e["victim"]["pid"] == *pid)
            .collect();
        assert_eq!(matching.len(), 1, "kill of pid {pid}: {events:#?}");
        assert_kill(matching[0], *pid, &format!("burst-{i}"), &cgroups[i], limit);
        assert_eq!(matching[0]["silent"], true);
        assert_eq!(cgroups[i].kernel_oom_kills().unwrap(), 1);
    }
}

#[test]
fn table_output_names_the_victim() {
    use std::io::BufRead;
    if !root_or_skip("table_output_names_the_victim") {
        return;
    }
    let cgroup = MemoryCgroup::create(32 * MIB).unwrap();
    let mut watch = Command::new(oom_probe_test_support::oom_probe_bin())
        .args(["watch", "--output", "table"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines_of = |pipe: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let stderr = lines_of(Box::new(watch.stderr.take().unwrap()));
    let stdout = lines_of(Box::new(watch.stdout.take().unwrap()));
    while !stderr
        .recv_timeout(oom_probe_test_support::START_TIMEOUT)
        .unwrap()
        .contains(oom_probe_test_support::READY_LINE)
    {}
    let (pid, _) = run_hog_with_child(&cgroup, "--fork", "hog-table", 256).unwrap();
    let header = stdout
        .recv_timeout(oom_probe_test_support::EVENT_TIMEOUT)
        .unwrap();
    assert!(header.starts_with("TIME"), "{header}");
    // Rows of kills made by other tests running at the same time are skipped.
    let row = loop {
        let line = stdout
            .recv_timeout(oom_probe_test_support::EVENT_TIMEOUT)
            .expect("no row for our kill");
        if line.split_whitespace().nth(1) == Some(pid.to_string().as_str()) {
            break line;
        }
    };
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        row.contains("hog-table") && row.contains(&pid.to_string()),
        "{row}"
    );
    assert!(row.contains("32.0") && row.contains("yes"), "{row}");
}

/// The kprobe path (the VM kernels have kprobes; this host's kernel does
/// not): the kernel's own OOM decision names the memcg that ran out.
#[test]
fn kprobe_decision_hook_names_the_memcg_that_ran_out() {
    if !root_or_skip("kprobe_decision_hook_names_the_memcg_that_ran_out") {
        return;
    }
    if !oom_probe_test_support::working_hooks()
        .iter()
        .any(|h| h == "kprobe oom_kill_process")
    {
        oom_probe_test_support::skipped(
            "kprobe_decision_hook_names_the_memcg_that_ran_out",
            "this kernel has no kprobes (runs in the VM matrix)",
        );
        assert!(
            !oom_probe_test_support::in_vm(),
            "the VM kernels have kprobes"
        );
        return;
    }
    let limit = 48 * MIB;
    let cgroup = MemoryCgroup::create(limit).unwrap();
    let mut watcher = Watcher::start(&["--decision-hook", "kprobe"]).unwrap();
    let (pid, _) = run_hog_with_child(&cgroup, "--fork", "hog-kprobe", 256).unwrap();
    let event = &watcher
        .events_for(cgroup.relative_path(), 1, SETTLE)
        .unwrap()[0];
    assert_eq!(event["victim"]["pid"], pid, "{event:#}");
    assert_eq!(event["constraint_source"], "oom_kill_process", "{event:#}");
    assert_eq!(event["constraint"], "memcg", "{event:#}");
    assert_eq!(
        event["oom_memcg"]["path"],
        cgroup.relative_path(),
        "{event:#}"
    );
    assert_eq!(event["oom_memcg"]["limit_bytes"], limit, "{event:#}");
}

/// A process can name itself with any bytes but NUL, and a cgroup can be
/// named with control characters: JSON carries the printable form (as the
/// kernel log writes it) and the exact bytes in hex.
#[test]
fn names_that_are_not_text_are_escaped_and_kept_exactly() {
    use std::os::unix::ffi::OsStrExt;
    if !root_or_skip("names_that_are_not_text_are_escaped_and_kept_exactly") {
        return;
    }
    let parent = MemoryCgroup::create(64 * MIB).unwrap();
    let cgroup = parent.create_child_named("esc\u{1b}[2Jcg", None).unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    let comm = std::ffi::OsStr::from_bytes(b"x\x01\xffy");
    let (pid, report) = run_hog_with_child(&cgroup, "--fork", comm, 512).unwrap();
    assert!(report.contains("killed by signal 9"), "{report}");
    let path = format!("{}/esc\\x1b[2Jcg", parent.relative_path());
    let events = watcher.events_for(&path, 1, SETTLE).unwrap();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["victim"]["pid"], pid, "{event:#}");
    assert_eq!(event["victim"]["comm"], "x\\x01\\xffy", "{event:#}");
    assert_eq!(event["victim"]["comm_hex"], "7801ff79", "{event:#}");
    assert_eq!(
        event["oom_memcg"]["path"],
        parent.relative_path(),
        "{event:#}"
    );
    let explanation = event["explanation"].as_str().unwrap();
    assert!(
        explanation.contains(&format!("x\\x01\\xffy ({pid})")),
        "{explanation}"
    );
}

/// The table in a real 120-column terminal (tmux): a victim named
/// `ESC[2J ESC[H fake` neither clears the screen nor draws a row of its
/// own, and no line is wider than the terminal.
#[test]
fn table_in_a_120_column_terminal_is_safe_from_hostile_names() {
    use std::os::unix::ffi::OsStrExt;
    let test = "table_in_a_120_column_terminal_is_safe_from_hostile_names";
    if !root_or_skip(test) || !oom_probe_test_support::host_only(test, "needs tmux") {
        return;
    }
    let cgroup = MemoryCgroup::create(32 * MIB).unwrap();
    // A private tmux server: nobody else's sessions are touched.
    let socket = format!("oom-probe-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .expect("tmux is missing (cargo xtask setup installs it)");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    struct Server<'a>(&'a str);
    impl Drop for Server<'_> {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-L", self.0, "kill-server"])
                .status();
        }
    }
    let log = std::env::temp_dir().join(format!("{socket}.log"));
    let command = format!(
        "exec {} watch --output table 2>{}",
        oom_probe_test_support::oom_probe_bin().display(),
        log.display()
    );
    tmux(&["new-session", "-d", "-x", "120", "-y", "40", &command]);
    let _server = Server(&socket);
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(oom_probe_test_support::READY_LINE)
    {
        assert!(
            started.elapsed() < oom_probe_test_support::START_TIMEOUT,
            "oom-probe never got ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let hostile = std::ffi::OsStr::from_bytes(b"\x1b[2J\x1b[H fake");
    let (pid, _) = run_hog_with_child(&cgroup, "--fork", hostile, 256).unwrap();
    let started = std::time::Instant::now();
    let screen = loop {
        // -J joins lines the terminal wrapped: a line wider than 120 shows.
        let screen = tmux(&["capture-pane", "-p", "-J"]);
        if screen
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&pid.to_string()))
        {
            break screen;
        }
        assert!(
            started.elapsed() < oom_probe_test_support::EVENT_TIMEOUT,
            "no row:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = std::fs::remove_file(&log);
    let lines: Vec<&str> = screen.lines().collect();
    assert!(
        lines[0].starts_with("TIME"),
        "the screen was cleared:\n{screen}"
    );
    let row = lines
        .iter()
        .find(|l| l.split_whitespace().nth(1) == Some(&pid.to_string()))
        .unwrap();
    assert!(row.contains("\\x1b[2J\\x1b[H"), "{row}");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with(" fake") || l.starts_with("fake")),
        "{screen}"
    );
    for line in &lines {
        assert!(
            line.chars().count() <= 120,
            "wider than the terminal: {line}"
        );
    }
}

/// Two OOM decisions a few milliseconds apart in one memcg, made by the
/// same allocating task: without `memory.oom.group` each kill is its own
/// decision, so the two victims get two `oom_id`s.
#[test]
fn back_to_back_decisions_in_one_memcg_get_two_oom_ids() {
    use std::io::{BufRead, BufReader};
    if !root_or_skip("back_to_back_decisions_in_one_memcg_get_two_oom_ids") {
        return;
    }
    let cgroup = MemoryCgroup::create(64 * MIB).unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    // Two idle holders, first in line for the OOM killer...
    let mut holders = Vec::new();
    for (mb, comm) in [(30, "holder-big"), (24, "holder-small")] {
        let mut child = hog()
            .arg("--cgroup")
            .arg(cgroup.path())
            .args(["--mb", &mb.to_string(), "--comm", comm])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("allocated"), "{comm}: {line}");
        std::fs::write(format!("/proc/{}/oom_score_adj", child.id()), "1000").unwrap();
        holders.push(child);
    }
    // ...then a third task needs 44 MiB: the kernel kills the bigger holder,
    // the charge still fails, and a second decision kills the other.
    let mut trigger = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args(["--mb", "44", "--comm", "oom-trigger"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let events = watcher
        .events_for(cgroup.relative_path(), 2, SETTLE)
        .unwrap();
    let _ = trigger.kill();
    let _ = trigger.wait();
    for mut holder in holders {
        let _ = holder.kill();
        let _ = holder.wait();
    }
    // Under load the holders' memory may not be uncharged yet when the
    // trigger retries (the OOM reaper and exit teardown run on other CPUs),
    // and the kernel then makes a third decision and kills the trigger
    // itself (seen once in CI). That kill is also a decision of its own.
    assert!(
        (2..=3).contains(&events.len()),
        "two or three kills: {events:#?}"
    );
    let comms: Vec<&str> = events
        .iter()
        .map(|e| e["victim"]["comm"].as_str().unwrap())
        .collect();
    assert_eq!(comms[..2], ["holder-big", "holder-small"], "{events:#?}");
    if let Some(third) = comms.get(2) {
        assert_eq!(*third, "oom-trigger", "{events:#?}");
    }
    for event in &events {
        assert_eq!(event["trigger"]["comm"], "oom-trigger", "{event:#}");
        assert_eq!(event["group_kill"], false, "{event:#}");
    }
    let ids: std::collections::HashSet<String> =
        events.iter().map(|e| e["oom_id"].to_string()).collect();
    assert_eq!(ids.len(), events.len(), "one id per decision: {events:#?}");
    assert_eq!(cgroup.kernel_oom_kills().unwrap(), events.len() as u64);
}

/// Naming a cgroup id costs the same with 5 or 5,000 cgroups: the id is
/// opened as a kernfs file handle on the hierarchy's mount. The path is the
/// one a walk of the hierarchy gives, names that are not text included, and
/// an id whose cgroup is gone (and was never seen) has none.
#[test]
fn cgroup_ids_are_named_by_file_handle_as_a_walk_names_them() {
    use oom_probe_cgroupfs::{
        resolver::{CgroupResolver, Lookup},
        testing::memory_root,
    };
    use std::os::unix::fs::MetadataExt;
    if !root_or_skip("cgroup_ids_are_named_by_file_handle_as_a_walk_names_them") {
        return;
    }
    let (root, _) = memory_root().unwrap();
    let parent = MemoryCgroup::create(16 * MIB).unwrap();
    let child = parent.create_child_named("pod\u{1b}x", None).unwrap();
    let id = std::fs::metadata(child.path()).unwrap().ino();
    let expected = format!("{}/pod\\x1bx", parent.relative_path());
    let mut by_handle = CgroupResolver::new(&root);
    assert_eq!(by_handle.path_of(id).as_deref(), Some(expected.as_str()));
    assert_eq!(by_handle.lookup(), Lookup::Handle);
    // Named without a walk: the walk's cache is still empty but for it.
    assert_eq!(by_handle.known().count(), 1);
    let mut walked = CgroupResolver::new(&root).walk_only();
    assert_eq!(walked.path_of(id).as_deref(), Some(expected.as_str()));
    assert_eq!(
        by_handle
            .path_of(std::fs::metadata(&root).unwrap().ino())
            .as_deref(),
        Some("/")
    );
    drop(child);
    // Seen before it was removed: still named; never seen: no name.
    assert_eq!(by_handle.path_of(id).as_deref(), Some(expected.as_str()));
    let mut fresh = CgroupResolver::new(&root);
    assert_eq!(fresh.path_of(id), None);
    assert_eq!(fresh.lookup(), Lookup::Handle);
}

/// A v1 freezer cgroup made for one test, thawed and removed on drop: its
/// frozen tasks stay frozen with a SIGKILL pending (v1 frozen tasks do not
/// wake for signals; the v2 freezer lets a SIGKILL through).
struct FrozenCgroup(std::path::PathBuf);

impl FrozenCgroup {
    fn create() -> Option<Self> {
        let root = std::path::Path::new("/sys/fs/cgroup/freezer");
        if !root.join("freezer.state").exists() && !root.join("tasks").exists() {
            return None;
        }
        let dir = root.join(format!("oom-probe-test-mark-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        Some(Self(dir))
    }

    fn set(&self, state: &str) {
        std::fs::write(self.0.join("freezer.state"), state).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(self.0.join("freezer.state"))
            .unwrap()
            .trim()
            != state
        {
            assert!(
                std::time::Instant::now() < deadline,
                "freezer never {state}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for FrozenCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The OOM killer picks a task that is already exiting (SIGKILL pending,
/// frozen so it cannot exit): the kernel only marks it (no SIGKILL, no
/// `oom_kill` count) and kills the next task once the mark's memory is
/// reaped. One kill, one `oom_kill` event, agreeing with memory.oom_control;
/// the mark is said on stderr and is no event.
#[test]
fn a_mark_of_an_exiting_task_is_not_reported_as_a_kill() {
    use std::io::BufRead;
    if !root_or_skip("a_mark_of_an_exiting_task_is_not_reported_as_a_kill") {
        return;
    }
    let limit = 64 * MIB;
    // Made after the memory cgroup, so dropped (thawed) before it is removed.
    let cgroup = MemoryCgroup::create(limit).unwrap();
    let Some(freezer) = FrozenCgroup::create() else {
        oom_probe_test_support::skipped(
            "a_mark_of_an_exiting_task_is_not_reported_as_a_kill",
            "no cgroup v1 freezer (the v2 freezer lets a SIGKILL through)",
        );
        return;
    };
    let mut watcher = Watcher::start(&[]).unwrap();
    // The exiting task: 40 MiB of anonymous memory, the biggest in the
    // cgroup when the hog below reaches the limit.
    let mut exiting = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && echo $$ > {}/cgroup.procs && exec python3 -c \
             \"b = b'x' * (40 << 20); print('ready', flush=True); import time; time.sleep(600)\"",
            cgroup.path().display(),
            freezer.0.display()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(exiting.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    freezer.set("FROZEN");
    exiting.kill().unwrap();
    let hog_status = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args(["--comm", "hog-after-mark", "--mb", "256"])
        .spawn()
        .unwrap();
    let hog_pid = hog_status.id();
    let status = hog_status.wait_with_output().unwrap().status;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    let line = watcher
        .wait_for_stderr("only marked it", Duration::from_secs(10))
        .unwrap();
    assert!(line.contains(&format!("pid {}", exiting.id())), "{line}");
    let events = watcher
        .events_for(cgroup.relative_path(), 1, SETTLE)
        .unwrap();
    assert_eq!(cgroup.kernel_oom_kills().unwrap(), 1, "the kernel's count");
    assert_eq!(events.len(), 1, "one kill, one event: {events:#?}");
    assert_eq!(events[0]["type"], "oom_kill", "{:#}", events[0]);
    assert_eq!(events[0]["victim"]["pid"], hog_pid, "{:#}", events[0]);
    freezer.set("THAWED");
    exiting.wait().unwrap();
}
