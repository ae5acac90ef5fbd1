//! The scene at the kill: the biggest processes of the memory cgroup that ran
//! out (or of the node, for a node-wide OOM), as the kernel's own OOM report
//! lists them. Read from userspace right after the event: the pids from
//! `cgroup.procs` of the cgroup and every cgroup below it, the figures from
//! `/proc/<pid>/status` and `/proc/<pid>/oom_score_adj`. A process that
//! started after the kill (a restarted container's) was not at the scene:
//! it is left out, and counted.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::snapshot::KillClock;
use crate::event::{Rss, Task};

/// How many tasks an event lists, the biggest by RSS first.
pub const TOP_TASKS: usize = 10;

/// Processes whose `/proc` files one scene reads at most, the victim
/// included: a cgroup (or a node) with more, which an unprivileged pod can
/// make (`pids.max` is unlimited by default), would cost two file reads per
/// process at every kill. Past it, [`Scene::total`] is the number of pids
/// listed (so above this), and the top is the biggest of those read.
pub const MAX_SCANNED: usize = 4096;

/// Processes and their figures, as read now.
#[derive(Debug, Default, PartialEq)]
pub struct Scene {
    /// The [`TOP_TASKS`] biggest by resident memory (anon + file + shmem).
    pub top: Vec<Task>,
    /// How many processes there were in all: those read, or, when more
    /// than [`MAX_SCANNED`] were listed, those listed (the top then comes
    /// from the first [`MAX_SCANNED`]). Those left out as started after
    /// the kill are not counted.
    pub total: u64,
    /// Processes read that started after the kill, left out of `top` and
    /// `total`.
    pub later_left_out: u64,
}

/// Reads the processes of the memory cgroup at `cgroup_dir` (absolute, on
/// the cgroupfs) and its descendants, with `/proc` at `procfs`.
/// `victim` is added, with its figures at the kill, when it is gone already;
/// processes that started after `kill` are left out.
pub fn of_cgroup(
    cgroup_dir: &Path,
    procfs: &Path,
    victim: Task,
    kill: &KillClock,
) -> Option<Scene> {
    let mut pids = Vec::new();
    collect_pids(cgroup_dir, &mut pids, 0).ok()?;
    pids.sort_unstable();
    pids.dedup();
    Some(scene(pids.into_iter(), procfs, victim, kill))
}

/// The `n` biggest processes by RSS of the memory cgroup at `cgroup_dir`
/// and below it, with no victim to add (a `memory_pressure` event).
pub fn top_of_cgroup(cgroup_dir: &Path, procfs: &Path, n: usize) -> Option<Scene> {
    let mut pids = Vec::new();
    collect_pids(cgroup_dir, &mut pids, 0).ok()?;
    pids.sort_unstable();
    pids.dedup();
    Some(top(pids.into_iter(), procfs, n))
}

/// The `n` biggest user processes of the node by RSS.
pub fn top_of_node(procfs: &Path, n: usize) -> Option<Scene> {
    let pids = fs::read_dir(procfs)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok());
    Some(top(pids, procfs, n))
}

fn top(pids: impl Iterator<Item = u32>, procfs: &Path, n: usize) -> Scene {
    let pids: Vec<u32> = pids.collect();
    let mut tasks: Vec<Task> = pids
        .iter()
        .take(MAX_SCANNED)
        .filter_map(|&pid| read_task(procfs, pid))
        .collect();
    let total = match pids.len() > MAX_SCANNED {
        true => pids.len() as u64,
        false => tasks.len() as u64,
    };
    tasks.sort_by_key(|t| std::cmp::Reverse(rss_total(t)));
    tasks.truncate(n);
    Scene {
        top: tasks,
        total,
        later_left_out: 0,
    }
}

/// Why a cgroup's tasks cannot be listed from `procfs`, or `None` when they
/// can: `cgroup.procs` gives pids of this process' pid namespace, so they
/// name the right `/proc/<pid>` only when `procfs` belongs to the same one
/// (its `self` link is this process' pid). A DaemonSet without
/// `hostPID: true` reading the host's /proc sees none of another pod's
/// processes: its events list the victim alone.
pub fn pid_namespace_mismatch(procfs: &Path) -> Option<String> {
    let seen = fs::read_link(procfs.join("self")).ok()?;
    let own = std::process::id();
    let seen: u32 = seen.to_str()?.parse().ok()?;
    (seen != own).then(|| {
        format!(
            "this process is pid {own} in its pid namespace but pid {seen} in {}: a cgroup's \
             tasks (from cgroup.procs, in this namespace) cannot be found there, so events list \
             the victim alone; run in the node's pid namespace (hostPID: true)",
            procfs.display()
        )
    })
}

/// Reads every user process of the node (kernel threads, which have no
/// memory of their own, and processes started after `kill` are left out).
pub fn of_node(procfs: &Path, victim: Task, kill: &KillClock) -> Option<Scene> {
    let pids = fs::read_dir(procfs)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok());
    Some(scene(pids, procfs, victim, kill))
}

fn collect_pids(dir: &Path, pids: &mut Vec<u32>, depth: usize) -> std::io::Result<()> {
    let procs = fs::read_to_string(dir.join("cgroup.procs"))?;
    pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    if depth > 32 {
        return Ok(());
    }
    for entry in fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            // A child that vanished meanwhile is skipped.
            let _ = collect_pids(&entry.path(), pids, depth + 1);
        }
    }
    Ok(())
}

fn scene(pids: impl Iterator<Item = u32>, procfs: &Path, victim: Task, kill: &KillClock) -> Scene {
    scene_capped(pids, procfs, victim, kill, MAX_SCANNED)
}

/// True when `/proc/<pid>/stat` shows the process started after `kill`;
/// false when it did not or cannot be read (it is then read or skipped as
/// any other).
fn started_after(procfs: &Path, pid: u32, kill: &KillClock) -> bool {
    matches!(super::snapshot::read_stat(procfs, pid), Ok(Some((_, start))) if kill.started_after(start))
}

/// [`scene`] reading at most `cap` processes, the victim included.
fn scene_capped(
    pids: impl Iterator<Item = u32>,
    procfs: &Path,
    victim: Task,
    kill: &KillClock,
    cap: usize,
) -> Scene {
    let mut victim_listed = false;
    let others: Vec<u32> = pids
        .filter(|&pid| {
            let is_victim = pid == victim.pid;
            victim_listed |= is_victim;
            !is_victim
        })
        .collect();
    let others_cap = cap.saturating_sub(1);
    let mut later_left_out = 0;
    let mut tasks: Vec<Task> = others
        .iter()
        .take(others_cap)
        .filter(|&&pid| {
            let later = started_after(procfs, pid, kill);
            later_left_out += u64::from(later);
            !later
        })
        .filter_map(|&pid| read_task(procfs, pid))
        .collect();
    // The victim's /proc is not read when the kernel gave its figures: they
    // are the ones that count (its memory may be half reaped), and reading
    // its `status` can cost the reader the victim's exit: the read holds the
    // last reference to its mm and frees its memory in our system call
    // (1.8 ms at the 90th percentile for a 16 MiB hog, OOM_PROBE_KILL_TRACE).
    let victim = match victim.rss_bytes.is_none() && victim_listed {
        true => read_task(procfs, victim.pid).unwrap_or(victim),
        false => victim,
    };
    tasks.push(victim);
    let total = match others.len() > others_cap {
        true => others.len() as u64 + 1 - later_left_out,
        false => tasks.len() as u64,
    };
    tasks.sort_by_key(|t| std::cmp::Reverse(rss_total(t)));
    tasks.truncate(TOP_TASKS);
    Scene {
        top: tasks,
        total,
        later_left_out,
    }
}

/// Total resident bytes of a task, for ranking.
pub fn rss_total(task: &Task) -> u64 {
    task.rss_bytes
        .map_or(0, |r| r.anon.saturating_add(r.file).saturating_add(r.shmem))
}

/// One process from `/proc/<pid>/status`; `None` for a process gone
/// meanwhile or a kernel thread (no `RssAnon`).
pub fn read_task(procfs: &Path, pid: u32) -> Option<Task> {
    let dir: PathBuf = procfs.join(pid.to_string());
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let mut task = parse_status(pid, &status)?;
    task.oom_score_adj = fs::read_to_string(dir.join("oom_score_adj"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Some(task)
}

/// The fields of `/proc/<pid>/status` a task needs (`Name`, `NSpid`,
/// `RssAnon`, `RssFile`, `RssShmem`, in kB).
pub fn parse_status(pid: u32, status: &str) -> Option<Task> {
    let mut comm = None;
    let mut ns_pid = None;
    let (mut anon, mut file, mut shmem) = (None, None, None);
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let kib = || {
            value
                .strip_suffix("kB")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .and_then(|v| v.checked_mul(1024))
        };
        match key {
            "Name" => comm = Some(value.to_string()),
            "NSpid" => ns_pid = value.split_whitespace().last().and_then(|v| v.parse().ok()),
            "RssAnon" => anon = kib(),
            "RssFile" => file = kib(),
            "RssShmem" => shmem = kib(),
            _ => {}
        }
    }
    Some(Task {
        pid,
        ns_pid,
        comm,
        rss_bytes: Some(Rss {
            anon: anon?,
            file: file.unwrap_or(0),
            shmem: shmem.unwrap_or(0),
        }),
        oom_score_adj: None,
        cgroup_path: None,
        kubernetes: None,
    })
}

/// The path of a process' cgroup on the memory controller's hierarchy, from
/// `/proc/<pid>/cgroup` (the `memory` line on v1, the `0::` line on v2).
pub fn memory_cgroup_of(procfs: &Path, pid: u32) -> Option<String> {
    let text = fs::read_to_string(procfs.join(pid.to_string()).join("cgroup")).ok()?;
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_string());
        }
        if controllers.is_empty() {
            unified = Some(path.to_string());
        }
    }
    unified
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kill now: every process of these tests started before it.
    fn now() -> KillClock {
        KillClock::of(crate::clock::monotonic_now_ns())
    }

    /// Our own /proc agrees with our pid; a procfs whose `self` is another
    /// pid (the host's, seen from a container's own pid namespace) does not.
    #[test]
    fn a_procfs_of_another_pid_namespace_is_named() {
        assert_eq!(pid_namespace_mismatch(Path::new("/proc")), None);
        let dir = std::env::temp_dir().join(format!("oom-probe-pidns-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let other = std::process::id().wrapping_add(1).to_string();
        let _ = fs::remove_file(dir.join("self"));
        std::os::unix::fs::symlink(&other, dir.join("self")).unwrap();
        let why = pid_namespace_mismatch(&dir);
        fs::remove_dir_all(&dir).unwrap();
        assert!(why.unwrap().contains("hostPID: true"));
    }

    /// Found by the memcg_files fuzz target: a size in kB beyond what fits
    /// in bytes overflowed (a panic with overflow checks, a wrong figure
    /// without); it is now unreadable, and sums saturate.
    #[test]
    fn sizes_too_big_for_bytes_are_not_read() {
        // 2^54 kB is 2^64 bytes: one more than a u64 holds.
        let status = "Name:\tx\nRssAnon:\t18014398509481984 kB\n";
        assert!(parse_status(1, status).is_none(), "no readable RssAnon");
        let status = "Name:\tx\nRssAnon:\t18014398509481983 kB\nRssFile:\t18014398509481983 kB\nRssShmem:\t1 kB\n";
        let task = parse_status(1, status).unwrap();
        assert_eq!(task.rss_bytes.unwrap().anon, u64::MAX - 1023);
        assert_eq!(rss_total(&task), u64::MAX);
    }

    const STATUS: &str = "Name:\tgunicorn\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
        NSpid:\t4242\t12\nVmRSS:\t  3000 kB\nRssAnon:\t    2048 kB\nRssFile:\t     512 kB\n\
        RssShmem:\t       8 kB\n";

    #[test]
    fn status_gives_name_ns_pid_and_rss_in_bytes() {
        let task = parse_status(4242, STATUS).unwrap();
        assert_eq!(task.comm.as_deref(), Some("gunicorn"));
        assert_eq!(task.ns_pid, Some(12), "the innermost namespace's pid");
        assert_eq!(
            task.rss_bytes,
            Some(Rss {
                anon: 2048 * 1024,
                file: 512 * 1024,
                shmem: 8 * 1024
            })
        );
    }

    /// The victim's /proc is not read when the record has its figures (the
    /// read can free the victim's memory in our system call): it is listed
    /// once, as the kernel saw it; another task of the cgroup is read.
    #[test]
    fn a_victim_with_kernel_figures_is_not_read_from_proc() {
        let procfs = std::env::temp_dir().join(format!("oom-probe-tasks-{}", std::process::id()));
        for pid in [4242, 4243] {
            fs::create_dir_all(procfs.join(pid.to_string())).unwrap();
            fs::write(procfs.join(format!("{pid}/status")), STATUS).unwrap();
            fs::write(procfs.join(format!("{pid}/oom_score_adj")), "0\n").unwrap();
        }
        let victim = Task {
            pid: 4242,
            ns_pid: Some(7),
            comm: Some("as-the-kernel-saw".into()),
            rss_bytes: Some(Rss {
                anon: 1 << 30,
                file: 0,
                shmem: 0,
            }),
            oom_score_adj: Some(1000),
            cgroup_path: None,
            kubernetes: None,
        };
        let scene = scene([4242, 4243].into_iter(), &procfs, victim.clone(), &now());
        fs::remove_dir_all(&procfs).unwrap();
        assert_eq!(scene.total, 2);
        assert_eq!(scene.top[0], victim, "the record's figures, not /proc's");
        assert_eq!(scene.top[1].pid, 4243);
        assert_eq!(
            scene.top[1].comm.as_deref(),
            Some("gunicorn"),
            "read from /proc"
        );
    }

    /// A cgroup with more processes than the cap: only the first `cap`
    /// (the victim among them) are read, and the total says how many were
    /// listed, above the cap, so the event shows the list was cut.
    #[test]
    fn past_the_cap_only_the_first_pids_are_read_and_the_total_says_so() {
        let procfs =
            std::env::temp_dir().join(format!("oom-probe-tasks-cap-{}", std::process::id()));
        // pids 1..=10, each one's RSS growing with its pid.
        for pid in 1..=10u32 {
            fs::create_dir_all(procfs.join(pid.to_string())).unwrap();
            let status = format!("Name:\tp{pid}\nRssAnon:\t{} kB\n", pid * 100);
            fs::write(procfs.join(format!("{pid}/status")), status).unwrap();
        }
        let victim = Task {
            pid: 5,
            ns_pid: None,
            comm: Some("victim".into()),
            rss_bytes: Some(Rss {
                anon: 1,
                file: 0,
                shmem: 0,
            }),
            oom_score_adj: None,
            cgroup_path: None,
            kubernetes: None,
        };
        let cut = scene_capped(1..=10, &procfs, victim.clone(), &now(), 4);
        let uncut = scene_capped(1..=10, &procfs, victim.clone(), &now(), 11);
        let at_cap = scene_capped(1..=10, &procfs, victim, &now(), 10);
        fs::remove_dir_all(&procfs).unwrap();
        let pids = |s: &Scene| s.top.iter().map(|t| t.pid).collect::<Vec<_>>();
        // 3 others read (1, 2, 3) and the victim; 10 listed.
        assert_eq!(pids(&cut), [3, 2, 1, 5]);
        assert_eq!(cut.total, 10, "the pids listed, above the cap of 4");
        assert_eq!(pids(&uncut), [10, 9, 8, 7, 6, 4, 3, 2, 1, 5]);
        assert_eq!(uncut.total, 10, "all read");
        assert_eq!(at_cap.total, 10, "exactly at the cap: all read");
        assert_eq!(pids(&at_cap), pids(&uncut));
    }

    /// A restarted container's process (started after the kill) is not of
    /// the kill's scene: left out of the top and the total, and counted.
    #[test]
    fn processes_started_after_the_kill_are_left_out_and_counted() {
        let procfs =
            std::env::temp_dir().join(format!("oom-probe-tasks-later-{}", std::process::id()));
        // pid 20 started at tick 900, 21 at tick 1200; the kill at 10.5 s.
        for (pid, start) in [(20u32, 900u64), (21, 1200)] {
            fs::create_dir_all(procfs.join(pid.to_string())).unwrap();
            let status = format!("Name:\tp{pid}\nRssAnon:\t{} kB\n", pid * 100);
            fs::write(procfs.join(format!("{pid}/status")), status).unwrap();
            let stat =
                format!("{pid} (p{pid}) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0\n");
            fs::write(procfs.join(format!("{pid}/stat")), stat).unwrap();
        }
        let kill = KillClock {
            boot_ns: 10_500_000_000,
            tick_ns: 10_000_000,
        };
        let victim = Task {
            pid: 7,
            ns_pid: None,
            comm: Some("victim".into()),
            rss_bytes: None,
            oom_score_adj: None,
            cgroup_path: None,
            kubernetes: None,
        };
        let at_kill = scene([7, 20, 21].into_iter(), &procfs, victim.clone(), &kill);
        let all = scene([7, 20, 21].into_iter(), &procfs, victim, &now());
        fs::remove_dir_all(&procfs).unwrap();
        let pids = |s: &Scene| s.top.iter().map(|t| t.pid).collect::<Vec<_>>();
        assert_eq!(pids(&at_kill), [20, 7]);
        assert_eq!((at_kill.total, at_kill.later_left_out), (2, 1));
        assert_eq!(pids(&all), [21, 20, 7]);
        assert_eq!((all.total, all.later_left_out), (3, 0));
    }

    #[test]
    fn a_kernel_thread_has_no_rss_and_is_left_out() {
        assert_eq!(parse_status(2, "Name:\tkthreadd\nNSpid:\t2\n"), None);
    }

    #[test]
    fn this_process_is_found_in_its_own_cgroup() {
        let me = std::process::id();
        let task = read_task(Path::new("/proc"), me).unwrap();
        assert!(rss_total(&task) > 0);
        assert!(memory_cgroup_of(Path::new("/proc"), me).is_some_and(|p| p.starts_with('/')));
        let gone = Task {
            pid: u32::MAX,
            ns_pid: None,
            comm: Some("victim".into()),
            rss_bytes: Some(Rss {
                anon: u64::MAX / 2,
                file: 0,
                shmem: 0,
            }),
            oom_score_adj: Some(1000),
            cgroup_path: None,
            kubernetes: None,
        };
        let node = of_node(Path::new("/proc"), gone.clone(), &now()).unwrap();
        assert_eq!(
            node.top[0], gone,
            "a victim already gone is listed, first here"
        );
        assert!(node.total >= 1 && node.top.len() <= TOP_TASKS);
        let sizes: Vec<_> = node.top.iter().map(rss_total).collect();
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    }
}
