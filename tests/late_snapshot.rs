//! Late snapshots: the agent falls behind (here it is paused with SIGSTOP,
//! the kernel's record waiting in the ring buffer) while the killed
//! container restarts and refills its memory cgroup. What the agent reads
//! then (`memory.stat`, the cgroup's processes) describes the restarted
//! container, not the kill, and must not pass for it.

use std::{
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use oom_probe_test_support::{hog, hold, root_or_skip, MemoryCgroup, Tmpfs, Watcher};

const MIB: u64 = 1 << 20;
const SETTLE: Duration = Duration::from_millis(1500);

/// Sends `signal` to `pid` and waits until its state in /proc is `state`
/// (`T` stopped) or is no longer `T` (`None`: running again).
fn signal_and_wait(pid: u32, signal: i32, state: Option<char>) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let now = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
        if state.map_or(now != 'T', |want| now == want) {
            return;
        }
        assert!(Instant::now() < deadline, "pid {pid} stays in state {now}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The case, end to end: a 64 MiB cgroup whose process is killed
/// for its anonymous memory; the agent paused at the kill; the container
/// "restarts" (a new process in the same cgroup) and writes 40 MiB to
/// tmpfs and holds 14 MiB; 1.5 s after the kill the agent resumes. Read
/// then, `memory.stat` holds 55 MiB, above three quarters of the usage at
/// the kill (the old check alone passed it, and the explanation then blamed
/// tmpfs). It is marked
/// `after_kill_late`, the explanation uses the kill's own figures, and the
/// restarted process is not among the kill's tasks.
#[test]
fn a_snapshot_of_a_restarted_container_is_marked_late() {
    if !root_or_skip("a_snapshot_of_a_restarted_container_is_marked_late") {
        return;
    }
    let limit = 64 * MIB;
    let cgroup = MemoryCgroup::create(limit).unwrap();
    let tmpfs = Tmpfs::mount("late-refill").unwrap();
    let mut watcher = Watcher::start(&[]).unwrap();
    let agent = watcher.pid();
    signal_and_wait(agent, libc::SIGSTOP, Some('T'));
    // The kill, while the agent sleeps.
    let status = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args(["--mb", "256", "--comm", "late-victim"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the victim was not OOM-killed"
    );
    let killed = Instant::now(); // the kill was before its exit
                                 // The restart: 40 MiB of tmpfs (dd exits, the file stays charged) and
                                 // a process that holds 14 MiB.
    tmpfs.fill_charged_to(&cgroup, "refill", 40).unwrap();
    let mut restarted = hold(&cgroup, "late-restarted", 14);
    // Behind by more than a late read (1 s after the kill), then resumed.
    thread::sleep(Duration::from_millis(1500).saturating_sub(killed.elapsed()));
    signal_and_wait(agent, libc::SIGCONT, None);
    let events = watcher.events_for(cgroup.relative_path(), 1, SETTLE);
    let _ = restarted.kill();
    let _ = restarted.wait();
    let event = events.unwrap().remove(0);

    assert_eq!(event["victim"]["comm"], "late-victim", "{event:#}");
    let stat = &event["memcg_stat"];
    let get = |k: &str| stat[k].as_u64().unwrap_or_else(|| panic!("{k}: {event:#}"));
    assert!(get("shmem") >= 39 * MIB, "the refill was read: {event:#}");
    let total = get("anon") + get("file") + get("kernel") + get("sock");
    let usage = event["oom_memcg"]["usage_bytes"].as_u64().unwrap();
    assert!(
        total * 4 >= usage * 3,
        "the old check alone would have passed it: {event:#}"
    );
    assert_eq!(event["memcg_stat_source"], "after_kill_late", "{event:#}");
    let explanation = event["explanation"].as_str().unwrap();
    // (The victim's own RSS may name a little shmem: 284 KiB on 6.12.)
    assert!(
        explanation.starts_with("the memory cgroup was at") && !explanation.contains("shmem/tmpfs"),
        "a late snapshot explained the kill: {explanation}"
    );
    assert!(explanation.contains("(anon "), "{explanation}");

    let pids: Vec<u64> = event["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks: {event:#}"))
        .iter()
        .map(|t| t["pid"].as_u64().unwrap())
        .collect();
    assert!(
        pids.contains(&event["victim"]["pid"].as_u64().unwrap()),
        "{event:#}"
    );
    assert!(
        !pids.contains(&u64::from(restarted.id())),
        "a process born after the kill is listed: {event:#}"
    );
    assert_eq!(event["tasks_source"], "procfs_later_left_out", "{event:#}");
    assert_eq!(event["tasks_total"], 1, "{event:#}");
}
