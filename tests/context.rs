//! Kill context: which limit ran out, what filled the memory, group kills,
//! kills oom-probe did not see, and userspace OOM killers. Each test makes
//! the kernel (or a stand-in killer) kill a real process.

use std::{fs, process::Command, time::Duration};

use oom_probe_test_support::{
    hog, hold, root_or_skip, run_hog_with_child, skipped, MemoryCgroup, Tmpfs, Watcher,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const SETTLE: Duration = Duration::from_millis(1500);

fn in_vm() -> bool {
    std::env::var_os("OOM_PROBE_IN_VM").is_some_and(|v| v == "1")
}

#[test]
fn a_full_parent_cgroup_is_named_as_the_one_that_ran_out() {
    if !root_or_skip("a_full_parent_cgroup_is_named_as_the_one_that_ran_out") {
        return;
    }
    let limit = 48 * MIB;
    let pod = MemoryCgroup::create(limit).unwrap();
    let container = pod.create_child(None).unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    let (pid, _) = run_hog_with_child(&container, "--fork", "nested-hog", 256).unwrap();
    let event = &watcher
        .events_for(container.relative_path(), 1, SETTLE)
        .unwrap()[0];
    assert_eq!(event["victim"]["pid"], pid, "{event:#}");
    assert_eq!(
        event["memcg"]["limit_bytes"],
        Value::Null,
        "the container has no limit of its own"
    );
    assert_eq!(event["constraint"], "memcg", "{event:#}");
    assert_eq!(event["oom_memcg"]["path"], pod.relative_path(), "{event:#}");
    assert_eq!(event["oom_memcg"]["limit_bytes"], limit, "{event:#}");
    let explanation = event["explanation"].as_str().unwrap();
    assert!(
        explanation.contains("nested-hog") && explanation.contains("48 MiB limit"),
        "{explanation}"
    );
    drop(container);
}

/// A worker pool in one memory cgroup: the event lists its processes, the
/// biggest first, with the victim among them, as the kernel's OOM report
/// does.
#[test]
fn a_worker_pool_is_listed_in_tasks_with_the_victim() {
    if !root_or_skip("a_worker_pool_is_listed_in_tasks_with_the_victim") {
        return;
    }
    let cgroup = MemoryCgroup::create(64 * MIB).unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    let mut workers = Vec::new();
    for i in 0..3 {
        workers.push(hold(&cgroup, &format!("pool-idle-{i}"), 8));
    }
    // The pool's parent stays (`--pause`), as a worker pool's master does.
    let mut parent = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args(["--fork", "--pause", "--comm", "pool-hog", "--mb", "256"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    // Kept open until the end: the parent reports its child's death on it.
    let mut parent_out = std::io::BufReader::new(parent.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut parent_out, &mut said).unwrap();
    let victim: u32 = said
        .strip_prefix("child ")
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no child pid: {said}"));
    let event = &watcher
        .events_for(cgroup.relative_path(), 1, SETTLE)
        .unwrap()[0];
    workers.push(parent);
    for worker in workers.iter_mut() {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    drop(parent_out);
    assert_eq!(event["victim"]["pid"], victim, "{event:#}");
    assert_eq!(event["tasks_source"], "procfs", "{event:#}");
    // Three idle workers, the hog's parent and the victim.
    assert_eq!(event["tasks_total"], 5, "{event:#}");
    let tasks = event["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 5, "{event:#}");
    let rss = |t: &Value| {
        ["anon", "file", "shmem"]
            .iter()
            .map(|k| t["rss_bytes"][k].as_u64().unwrap())
            .sum::<u64>()
    };
    assert!(
        tasks.windows(2).all(|w| rss(&w[0]) >= rss(&w[1])),
        "{event:#}"
    );
    assert_eq!(
        tasks[0]["pid"], victim,
        "the victim is the biggest: {event:#}"
    );
    assert_eq!(tasks[0]["comm"], "pool-hog");
    assert!(rss(&tasks[0]) > 32 * MIB, "{event:#}");
    for worker in &workers[..3] {
        let task = tasks
            .iter()
            .find(|t| t["pid"] == worker.id())
            .unwrap_or_else(|| panic!("worker {} missing: {event:#}", worker.id()));
        assert!(task["comm"].as_str().unwrap().starts_with("pool-idle-"));
        // Each worker touched 8 MiB of anon memory. Before 6.2 the kernel's
        // per-task RSS counters are cached per thread and synced every 64
        // page faults, so /proc can show a few pages less (5.10: 9 pages).
        assert!(
            task["rss_bytes"]["anon"].as_u64().unwrap() >= 7 * MIB,
            "{task:#}"
        );
        assert_eq!(task["oom_score_adj"], 0);
        assert_eq!(task["ns_pid"], worker.id());
    }
}

/// The task whose allocation set the OOM killer off is not always the
/// victim: here a small allocator in one child cgroup fills the parent's
/// limit and the kernel kills a bigger idle process in a sibling. Both are
/// named, each by its own cgroup.
#[test]
fn a_trigger_in_another_cgroup_is_named_apart_from_the_victim() {
    if !root_or_skip("a_trigger_in_another_cgroup_is_named_apart_from_the_victim") {
        return;
    }
    let pod = MemoryCgroup::create(64 * MIB).unwrap();
    let idle = pod.create_child_named("idle", None).unwrap();
    let busy = pod.create_child_named("busy", None).unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    // 40 MiB allocated, then asleep: the biggest task under the limit.
    let mut sleeper = hold(&idle, "big-sleeper", 40);
    let (allocator, _) = run_hog_with_child(&busy, "--fork", "allocator", 256).unwrap();
    let event = &watcher.events_for(idle.relative_path(), 1, SETTLE).unwrap()[0];
    let _ = sleeper.wait();
    assert_eq!(event["victim"]["pid"], sleeper.id(), "{event:#}");
    assert_eq!(event["victim"]["comm"], "big-sleeper", "{event:#}");
    let trigger = &event["trigger"];
    assert_eq!(trigger["pid"], allocator, "{event:#}");
    assert_eq!(trigger["tid"], allocator, "{event:#}");
    assert_eq!(trigger["comm"], "allocator", "{event:#}");
    assert_eq!(trigger["cgroup_path"], busy.relative_path(), "{event:#}");
    assert!(
        trigger["cgroup_id"].as_u64().is_some()
            && trigger["cgroup_id"] != event["victim"]["cgroup_id"],
        "{event:#}"
    );
    assert_eq!(trigger["kubernetes"], Value::Null, "not a pod's cgroup");
    assert_eq!(event["oom_memcg"]["path"], pod.relative_path(), "{event:#}");
}

/// Nested memory cgroups, removed deepest first.
struct Nested(Vec<MemoryCgroup>);

impl Drop for Nested {
    fn drop(&mut self) {
        while let Some(cgroup) = self.0.pop() {
            drop(cgroup);
        }
    }
}

/// The limit that runs out is 11 levels above the victim's memory cgroup
/// (a pod's limit above kind-in-Docker nesting): more than the 8 levels a
/// record carries. The event must name that cgroup (`constraint` memcg),
/// never call it a node-wide OOM.
#[test]
fn a_limit_more_than_8_levels_above_the_victim_ran_out() {
    if !root_or_skip("a_limit_more_than_8_levels_above_the_victim_ran_out") {
        return;
    }
    let limit = 64 * MIB;
    let top = MemoryCgroup::create(limit).unwrap();
    let mut nested = Nested(Vec::new());
    for depth in 1..=11 {
        let child = nested
            .0
            .last()
            .unwrap_or(&top)
            .create_child_named(&format!("l{depth}"), None)
            .unwrap();
        nested.0.push(child);
    }
    let deepest = nested.0.last().unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    let (victim, report) = run_hog_with_child(deepest, "--fork", "deep-hog", 256).unwrap();
    assert!(report.contains("killed by signal 9"), "{report}");
    let event = &watcher
        .events_for(deepest.relative_path(), 1, SETTLE)
        .unwrap()[0];
    assert_eq!(event["victim"]["pid"], victim, "{event:#}");
    assert_eq!(event["constraint"], "memcg", "{event:#}");
    assert_eq!(event["oom_memcg"]["path"], top.relative_path(), "{event:#}");
    assert_eq!(event["oom_memcg"]["limit_bytes"], limit, "{event:#}");
    assert!(
        !event["explanation"].as_str().unwrap().contains("node-wide"),
        "{event:#}"
    );
    drop(nested);
}

#[test]
fn a_memcg_full_of_tmpfs_is_explained_as_shmem() {
    if !root_or_skip("a_memcg_full_of_tmpfs_is_explained_as_shmem") {
        return;
    }
    let limit = 64 * MIB;
    let cgroup = MemoryCgroup::create(limit).unwrap();
    let tmpfs = Tmpfs::mount("tmpfs-fill").unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    // dd itself stays tiny; the file it writes in tmpfs fills the cgroup.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec dd if=/dev/zero of={}/fill bs=1M count=256",
        cgroup.path().display(),
        tmpfs.0.display()
    );
    let status = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "dd was not OOM-killed"
    );
    let event = &watcher
        .events_for(cgroup.relative_path(), 1, SETTLE)
        .unwrap()[0];
    assert_eq!(event["victim"]["comm"], "dd", "{event:#}");
    assert!(
        event["victim"]["rss_bytes"]["anon"].as_u64().unwrap() < 8 * MIB,
        "{event:#}"
    );
    let shmem = event["memcg_stat"]["shmem"].as_u64().unwrap();
    assert!(
        shmem > limit * 3 / 4,
        "shmem {shmem} should fill the {limit} limit: {event:#}"
    );
    let explanation = event["explanation"].as_str().unwrap();
    assert!(explanation.starts_with("shmem/tmpfs is"), "{explanation}");
    assert!(explanation.contains("64 MiB limit"), "{explanation}");
}

/// The container: anonymous memory and tmpfs mixed, more anonymous.
/// memory.stat counts tmpfs in `file` and `shmem`, never in `anon`, so the
/// kill is explained as anonymous memory, not "mostly tmpfs/shmem".
#[test]
fn anon_and_tmpfs_mixed_is_explained_by_the_larger() {
    if !root_or_skip("anon_and_tmpfs_mixed_is_explained_by_the_larger") {
        return;
    }
    let limit = 64 * MIB;
    let cgroup = MemoryCgroup::create(limit).unwrap();
    let tmpfs = Tmpfs::mount("tmpfs-mixed").unwrap();
    // 20 MiB of tmpfs charged to the cgroup (dd exits; the file stays).
    tmpfs.fill_charged_to(&cgroup, "fill", 20).unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    // 3 x 13 MiB of anonymous memory held; the hog below grows until the
    // kernel kills one of the holders (the biggest tasks), and keeps its own
    // anonymous memory charged while memory.stat is read after the kill.
    let mut holders: Vec<_> = (0..3)
        .map(|i| hold(&cgroup, &format!("mixed-anon-{i}"), 13))
        .collect();
    let mut grower = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args(["--comm", "mixed-grower", "--mb", "256"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let event = watcher
        .events_for(cgroup.relative_path(), 1, Duration::ZERO)
        .unwrap()
        .remove(0);
    let _ = grower.kill();
    let _ = grower.wait();
    for holder in &mut holders {
        let _ = holder.kill();
        let _ = holder.wait();
    }
    let stat = &event["memcg_stat"];
    let get = |k: &str| stat[k].as_u64().unwrap_or_else(|| panic!("{k}: {event:#}"));
    assert_eq!(event["memcg_stat_source"], "after_kill", "{event:#}");
    assert!(get("shmem") >= 19 * MIB, "the tmpfs file: {event:#}");
    assert!(
        get("file") >= get("shmem"),
        "file includes shmem: {event:#}"
    );
    assert!(get("anon") > get("shmem"), "{event:#}");
    let explanation = event["explanation"].as_str().unwrap();
    assert!(
        explanation.starts_with("anonymous memory is"),
        "{explanation}"
    );
}

#[test]
fn a_userspace_oom_killer_is_reported_with_its_name() {
    if !root_or_skip("a_userspace_oom_killer_is_reported_with_its_name") {
        return;
    }
    let cgroup = MemoryCgroup::create(256 * MIB).unwrap();
    // A killer counts only in its own cgroup (its systemd unit's on a node).
    let killer_unit = MemoryCgroup::create(64 * MIB).unwrap();
    let killer = format!("fake-oomd@{}", killer_unit.relative_path());
    let mut watcher = Watcher::start(&["--userspace-killers", &killer]).unwrap();
    let mut victim = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args(["--comm", "oomd-victim", "--mb", "8"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // A SIGKILL from a process not on the list is not a memory kill.
    let pid = victim.id().to_string();
    let status = hog()
        .arg("--cgroup")
        .arg(killer_unit.path())
        .args(["--comm", "fake-oomd", "--kill", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    victim.wait().unwrap();
    let events = watcher
        .events_matching(1, SETTLE, |e| {
            e["type"] == "userspace_kill" && e["victim"]["pid"] == victim.id()
        })
        .unwrap();
    let event = &events[0];
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(event["trigger"]["comm"], "fake-oomd", "{event:#}");
    assert_eq!(event["victim"]["comm"], "oomd-victim", "{event:#}");
    assert_eq!(
        event["victim"]["cgroup_path"],
        cgroup.relative_path(),
        "{event:#}"
    );
    assert!(event["explanation"]
        .as_str()
        .unwrap()
        .starts_with("SIGKILL from fake-oomd"));
}

#[test]
fn kills_made_while_stopped_are_reported_once_across_restarts() {
    if !root_or_skip("kills_made_while_stopped_are_reported_once_across_restarts") {
        return;
    }
    let state = std::env::temp_dir().join(format!("oom-probe-state-{}.json", std::process::id()));
    let _ = fs::remove_file(&state);
    let args = [
        "--state-file",
        state.to_str().unwrap(),
        "--reconcile-interval",
        "0.3",
    ];
    let cgroup = MemoryCgroup::create(32 * MIB).unwrap();
    let missed = |e: &Value| {
        e["type"] == "oom_kill_unobserved" && e["cgroup_path"] == cgroup.relative_path()
    };

    // First run: a baseline and one kill it sees itself.
    let mut watcher = Watcher::start(&args).unwrap();
    run_hog_with_child(&cgroup, "--fork", "seen-kill", 128).unwrap();
    watcher
        .events_for(cgroup.relative_path(), 1, SETTLE)
        .unwrap();
    drop(watcher);

    // Two kills while oom-probe is down.
    run_hog_with_child(&cgroup, "--fork", "missed-1", 128).unwrap();
    run_hog_with_child(&cgroup, "--fork", "missed-2", 128).unwrap();
    assert_eq!(cgroup.kernel_oom_kills().unwrap(), 3);

    let mut watcher = Watcher::start(&args).unwrap();
    let reports = watcher.events_matching(1, SETTLE, missed).unwrap();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert_eq!(reports[0]["count"], 2, "{:#}", reports[0]);
    drop(watcher);

    let mut watcher = Watcher::start(&args).unwrap();
    // Several reconcile intervals: nothing more to report.
    let again = watcher.events_within(Duration::from_secs(3), missed);
    assert!(again.is_empty(), "reported twice: {again:#?}");
    drop(watcher);
    let _ = fs::remove_file(&state);
}

#[test]
fn a_group_kill_reports_every_member_with_one_oom_id() {
    if !root_or_skip("a_group_kill_reports_every_member_with_one_oom_id") {
        return;
    }
    let cgroup = MemoryCgroup::create(64 * MIB).unwrap();
    if !cgroup.is_v2() {
        skipped(
            "a_group_kill_reports_every_member_with_one_oom_id",
            "memory.oom.group needs cgroup v2 memory (runs in the VM matrix)",
        );
        assert!(
            !in_vm(),
            "the VM has cgroup v2 memory; this test must run there"
        );
        return;
    }
    cgroup.write("memory.oom.group", "1").unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    let sleepers: Vec<_> = (0..2)
        .map(|i| {
            hog()
                .arg("--cgroup")
                .arg(cgroup.path())
                .args(["--comm", &format!("member-{i}"), "--mb", "4"])
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let status = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args(["--comm", "group-hog", "--mb", "256"])
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let events = watcher
        .events_for(cgroup.relative_path(), 3, SETTLE)
        .unwrap();
    assert_eq!(events.len(), 3, "every member reported: {events:#?}");
    let oom_id = &events[0]["oom_id"];
    for event in &events {
        assert_eq!(&event["oom_id"], oom_id, "{events:#?}");
        assert_eq!(event["group_kill"], true, "{event:#}");
    }
    for mut sleeper in sleepers {
        sleeper.wait().unwrap();
    }
}

#[test]
fn a_node_wide_oom_is_global() {
    if !root_or_skip("a_node_wide_oom_is_global") {
        return;
    }
    if !in_vm() {
        skipped(
            "a_node_wide_oom_is_global",
            "exhausting a node's memory is only safe in the VM matrix (cargo xtask vm-test)",
        );
        return;
    }
    let cgroup = MemoryCgroup::create(u64::MAX / 2).unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    let total = fs::read_to_string("/proc/meminfo").unwrap();
    let total_mib: u64 = total
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024;
    let (pid, _) =
        run_hog_with_child(&cgroup, "--fork", "node-hog", (total_mib * 2) as u32).unwrap();
    let event = &watcher
        .events_for(cgroup.relative_path(), 1, SETTLE)
        .unwrap()[0];
    assert_eq!(event["victim"]["pid"], pid, "{event:#}");
    assert_eq!(event["constraint"], "global", "{event:#}");
    assert_eq!(event["oom_memcg"], Value::Null, "{event:#}");
    assert!(
        event["explanation"]
            .as_str()
            .unwrap()
            .starts_with("node-wide OOM"),
        "{event:#}"
    );
}

/// In a node-wide OOM the kernel kills the biggest process of the node,
/// often not the one whose allocation set it off: a big idle process in one
/// cgroup is killed for an allocator in another; both are named.
#[test]
fn a_node_wide_oom_names_the_trigger_apart_from_the_victim() {
    let test = "a_node_wide_oom_names_the_trigger_apart_from_the_victim";
    if !root_or_skip(test) {
        return;
    }
    if !in_vm() {
        skipped(
            test,
            "exhausting a node's memory is only safe in the VM matrix (cargo xtask vm-test)",
        );
        return;
    }
    let idle = MemoryCgroup::create(u64::MAX / 2).unwrap();
    let busy = MemoryCgroup::create(u64::MAX / 2).unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    let available_mib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap()
        / 1024;
    // Most of the free memory, then asleep: the node's biggest process.
    let big = available_mib * 6 / 10;
    let mut sleeper = hold(&idle, "node-sleeper", big);
    let (allocator, _) =
        run_hog_with_child(&busy, "--fork", "node-alloc", (available_mib * 2) as u32).unwrap();
    let event = &watcher.events_for(idle.relative_path(), 1, SETTLE).unwrap()[0];
    let _ = sleeper.wait();
    assert_eq!(event["constraint"], "global", "{event:#}");
    assert_eq!(event["victim"]["pid"], sleeper.id(), "{event:#}");
    assert_eq!(event["victim"]["comm"], "node-sleeper", "{event:#}");
    let trigger = &event["trigger"];
    assert_eq!(trigger["pid"], allocator, "{event:#}");
    assert_eq!(trigger["comm"], "node-alloc", "{event:#}");
    assert_eq!(trigger["cgroup_path"], busy.relative_path(), "{event:#}");
    assert_eq!(event["victim"]["cgroup_path"], idle.relative_path());
    // The node's biggest processes, each with its cgroup: the victim first.
    assert_eq!(event["tasks_source"], "procfs", "{event:#}");
    let tasks = event["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["pid"], sleeper.id(), "{event:#}");
    assert_eq!(tasks[0]["cgroup_path"], idle.relative_path(), "{event:#}");
    let alloc = tasks
        .iter()
        .find(|t| t["pid"] == allocator)
        .unwrap_or_else(|| panic!("the allocator is among the biggest: {event:#}"));
    assert_eq!(alloc["cgroup_path"], busy.relative_path(), "{event:#}");
    assert!(event["tasks_total"].as_u64().unwrap() >= tasks.len() as u64);
}

/// A tmpfs mounted for one test and unmounted on drop.
/// 100 kills, each in a cgroup removed the moment its only process is dead
/// (as a runtime removes a container's scope): `memory.stat` is read after
/// the kill and may already show the memory freed. No snapshot that
/// disagrees with the kill-time usage may pass as a picture of the kill.
#[test]
fn stat_snapshots_that_lost_the_race_are_marked() {
    if !root_or_skip("stat_snapshots_that_lost_the_race_are_marked") {
        return;
    }
    const KILLS: usize = 100;
    let limit = 32 * MIB;
    let mut watcher = Watcher::start(&[]).unwrap();
    let mut pids = Vec::new();
    for i in 0..KILLS {
        let cgroup = MemoryCgroup::create(limit).unwrap();
        let status = hog()
            .arg("--cgroup")
            .arg(cgroup.path())
            .args(["--mb", "256", "--comm", &format!("scope-{i}")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(|mut child| {
                pids.push(child.id());
                child.wait().unwrap()
            })
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        drop(cgroup); // removed at once
    }
    let events = watcher
        .events_matching(KILLS, SETTLE, |e| {
            e["victim"]["pid"]
                .as_u64()
                .is_some_and(|pid| pids.contains(&(pid as u32)))
        })
        .unwrap();
    assert_eq!(events.len(), KILLS);
    let (mut consistent, mut marked, mut absent) = (0, 0, 0);
    for event in &events {
        let Some(stat) = event["memcg_stat"].as_object() else {
            assert!(event["memcg_stat_source"].is_null(), "{event:#}");
            absent += 1;
            continue;
        };
        let total: u64 = ["anon", "file", "kernel", "sock"]
            .iter()
            .map(|k| stat[*k].as_u64().unwrap())
            .sum();
        let usage = event["oom_memcg"]["usage_bytes"].as_u64().unwrap();
        let explanation = event["explanation"].as_str().unwrap();
        if total * 4 >= usage * 3 {
            assert_eq!(event["memcg_stat_source"], "after_kill", "{event:#}");
            consistent += 1;
        } else {
            assert_eq!(
                event["memcg_stat_source"], "after_kill_inconsistent",
                "{event:#}"
            );
            assert!(
                explanation.starts_with("the memory cgroup was at"),
                "a late snapshot explained the kill: {event:#}"
            );
            marked += 1;
        }
    }
    eprintln!(
        "{KILLS} kills in removed cgroups: {consistent} snapshots consistent, \
         {marked} marked inconsistent, {absent} not read"
    );
}
