//! Why the memory was full: the `memory.stat` of the cgroup that ran out,
//! read right after the kill (used only when it fits the kill:
//! `enrich::snapshot`), and one sentence a person can act on.
//!
//! A pod with 23 MiB of RSS can be killed because its cgroup is full of
//! tmpfs files or dirty page cache; the victim's RSS alone never shows that.

use std::{fs, path::Path};

use crate::event::{
    Constraint, KillKind, KillSignal, MemcgStat, MemcgStatSource, OomKillEvent, Rss,
};

/// Reads `memory.stat` (v1 or v2) of the cgroup directory `dir`.
pub fn read_memcg_stat(dir: &Path) -> Option<MemcgStat> {
    let text = fs::read_to_string(dir.join("memory.stat")).ok()?;
    let kmem = fs::read_to_string(dir.join("memory.kmem.usage_in_bytes"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Some(parse_memcg_stat(&text, kmem))
}

/// Maps v1 (`total_rss`, `total_cache`, hierarchical) and v2 (`anon`,
/// `file`, ...) names to one set; v1 has no kernel figure in memory.stat, so
/// `kmem_usage` (memory.kmem.usage_in_bytes) supplies it.
pub fn parse_memcg_stat(text: &str, kmem_usage: Option<u64>) -> MemcgStat {
    let value = |key: &str| -> Option<u64> {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    };
    let get = |key: &str| value(key).unwrap_or(0);
    if value("total_rss").is_some() {
        MemcgStat {
            anon: get("total_rss"),
            file: get("total_cache"),
            file_dirty: get("total_dirty"),
            file_writeback: get("total_writeback"),
            shmem: get("total_shmem"),
            kernel: kmem_usage.unwrap_or(0),
            sock: 0,
        }
    } else {
        MemcgStat {
            anon: get("anon"),
            file: get("file"),
            file_dirty: get("file_dirty"),
            file_writeback: get("file_writeback"),
            shmem: get("shmem"),
            kernel: value("kernel").unwrap_or_else(|| {
                get("slab") + get("kernel_stack") + get("pagetables") + get("percpu")
            }),
            sock: get("sock"),
        }
    }
}

/// A cgroup's memory in disjoint parts, bytes, with the kernel's own
/// definitions of `memory.stat` (Documentation/admin-guide/cgroup-v2.rst,
/// cgroup-v1/memory.rst): `anon` is anonymous mappings and excludes shmem;
/// `file` is the page cache and *includes* shmem (tmpfs, shared anonymous
/// and SysV/POSIX shared memory, which are page cache without a disk), v1
/// `total_cache` likewise; `kernel` and `sock` are apart from both. So
/// shmem is taken out of `file`, never out of `anon`: a cgroup with 39 MiB
/// anonymous and 20 MiB tmpfs is mostly anonymous memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Composition {
    /// Anonymous memory (`memcg_stat.anon`), shmem not included.
    pub anon: u64,
    /// Page cache of files on disk: `file - shmem`.
    pub page_cache: u64,
    /// tmpfs and shared memory (`memcg_stat.shmem`, part of `file`).
    pub shmem: u64,
    /// Kernel memory (`memcg_stat.kernel`).
    pub kernel: u64,
    /// Socket buffers (`memcg_stat.sock`; 0 on v1).
    pub sock: u64,
}

/// The disjoint parts of `stat`; they add up to `anon + file + kernel + sock`
/// (where the read gave `shmem <= file`, as the kernel counts them).
pub fn composition(stat: &MemcgStat) -> Composition {
    Composition {
        anon: stat.anon,
        page_cache: stat.file.saturating_sub(stat.shmem),
        shmem: stat.shmem,
        kernel: stat.kernel,
        sock: stat.sock,
    }
}

/// One sentence naming what filled the memory, for the event and the
/// Kubernetes Event note.
pub fn explain(kind: KillKind, event: &OomKillEvent) -> String {
    let rss = event.victim.rss_bytes.map(|r| r.anon + r.file + r.shmem);
    let victim = match rss {
        Some(rss) => format!("victim {} RSS {}", name(event), size(rss)),
        None => format!("victim {}", name(event)),
    };
    if kind == KillKind::UserspaceKill {
        let killer = &event.trigger.comm;
        return match (event.signal, &event.exit) {
            (Some(KillSignal::Sigterm), Some(exit)) => {
                let how = match (&exit.signal, exit.code) {
                    (Some(signal), _) if signal == "SIGTERM" => "it died of the signal".into(),
                    (Some(signal), _) => format!("it died of {signal} after it"),
                    (None, code) => format!(
                        "it handled the signal and exited with status {}",
                        code.unwrap_or(0)
                    ),
                };
                format!("SIGTERM from {killer}, a userspace OOM killer, ended the process ({how}); {victim}")
            }
            _ => format!("SIGKILL from {killer}, a userspace OOM killer; {victim}"),
        };
    }
    match event.constraint {
        Some(Constraint::Memcg) => explain_memcg(event, &victim),
        Some(Constraint::Global) => format!(
            "node-wide OOM: the node ran out of memory with no cgroup at its limit; {victim}, oom_score_adj {}",
            event.victim.oom_score_adj.unwrap_or(0)
        ),
        Some(other) => format!(
            "allocation restricted by {} ran out of memory; {victim}",
            other.as_str()
        ),
        None => victim,
    }
}

fn explain_memcg(event: &OomKillEvent, victim: &str) -> String {
    let oom = event.oom_memcg.as_ref();
    let Some(limit) = oom.and_then(|m| m.limit_bytes).filter(|&l| l > 0) else {
        return format!("memory cgroup limit reached; {victim}");
    };
    let limit_text = format!("the {} limit", size(limit));
    // Only figures of the memcg's own charge are set against its limit;
    // the victim's RSS can count file pages charged to another cgroup.
    let full = match oom.and_then(|m| m.usage_bytes) {
        Some(usage) => format!("the memory cgroup was at {} of {limit_text}", size(usage)),
        None => format!("the memory cgroup reached {limit_text}"),
    };
    let stat = event
        .memcg_stat
        .filter(|_| event.memcg_stat_source == Some(MemcgStatSource::AfterKill));
    let Some(stat) = stat else {
        // No snapshot that fits: the victim's RSS by kind, exact at the kill.
        let kinds = event.victim.rss_bytes.map(by_kind).unwrap_or_default();
        return format!("{full}; {victim}{kinds}");
    };
    let percent = |bytes: u64| bytes * 100 / limit;
    let dirty = stat.file_dirty + stat.file_writeback;
    let parts = composition(&stat);
    let largest = [
        ("shmem", parts.shmem),
        ("cache", parts.page_cache),
        ("kernel", parts.kernel + parts.sock),
        ("anon", parts.anon),
    ]
    .into_iter()
    .max_by_key(|&(_, bytes)| bytes)
    .expect("non-empty");
    match largest {
        ("shmem", shmem) => format!(
            "shmem/tmpfs is {} ({}%) of {limit_text}: files in tmpfs or shared memory are \
             charged to the cgroup and cannot be reclaimed without swap; {victim}",
            size(shmem),
            percent(shmem)
        ),
        ("cache", cache) if dirty * 2 >= cache => format!(
            "page cache is {} ({}%) of {limit_text} (dirty {}): writes outpace the disk; \
             consider O_DIRECT, more frequent fsync or a larger limit; {victim}",
            size(cache),
            percent(cache),
            size(dirty)
        ),
        ("cache", cache) => format!(
            "page cache is {} ({}%) of {limit_text} and could not be reclaimed fast enough; {victim}",
            size(cache),
            percent(cache)
        ),
        ("kernel", kernel) => format!(
            "kernel memory (slab, stacks, page tables, sockets) is {} ({}%) of {limit_text}; {victim}",
            size(kernel),
            percent(kernel)
        ),
        (_, anon) => {
            let victim_anon = event.victim.rss_bytes.map_or(0, |r| r.anon);
            let whose = if victim_anon * 2 >= anon {
                "most of it the victim's"
            } else {
                "spread over several processes"
            };
            format!(
                "anonymous memory is {} ({}%) of {limit_text}, {whose}; {victim}",
                size(anon),
                percent(anon)
            )
        }
    }
}

/// " (anon 30 MiB, file 5 MiB)": the kinds of an RSS that are not zero.
fn by_kind(rss: Rss) -> String {
    let kinds: Vec<String> = [("anon", rss.anon), ("file", rss.file), ("shmem", rss.shmem)]
        .into_iter()
        .filter(|&(_, bytes)| bytes > 0)
        .map(|(kind, bytes)| format!("{kind} {}", size(bytes)))
        .collect();
    match kinds.is_empty() {
        true => String::new(),
        false => format!(" ({})", kinds.join(", ")),
    }
}

fn name(event: &OomKillEvent) -> String {
    let comm = event.victim.comm.as_deref().unwrap_or("?");
    format!("{comm} ({})", event.victim.pid)
}

/// Bytes as a person reads them: "512 KiB", "62 MiB", "1.9 GiB".
pub fn size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.0} MiB", b / (KIB * KIB))
    } else {
        format!("{:.0} KiB", b / KIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_v1_and_v2_names_to_one_set() {
        let v1 = "cache 100\nrss 5\ntotal_cache 4096\ntotal_rss 2048\ntotal_dirty 1024\ntotal_writeback 10\ntotal_shmem 512\n";
        let stat = parse_memcg_stat(v1, Some(77));
        assert_eq!(
            stat,
            MemcgStat {
                anon: 2048,
                file: 4096,
                file_dirty: 1024,
                file_writeback: 10,
                shmem: 512,
                kernel: 77,
                sock: 0
            }
        );
        let v2 = "anon 10\nfile 20\nkernel 30\nkernel_stack 1\nslab 2\nsock 4\nshmem 5\nfile_dirty 6\nfile_writeback 7\n";
        let stat = parse_memcg_stat(v2, None);
        assert_eq!(
            stat,
            MemcgStat {
                anon: 10,
                file: 20,
                file_dirty: 6,
                file_writeback: 7,
                shmem: 5,
                kernel: 30,
                sock: 4
            }
        );
        let old_v2 = "anon 1\nslab 2\nkernel_stack 3\npagetables 4\npercpu 5\n";
        assert_eq!(parse_memcg_stat(old_v2, None).kernel, 14);
    }

    /// What the judge says of `stat` read on time (2 ms after the kill).
    fn stat_source(stat: &MemcgStat, usage: Option<u64>) -> MemcgStatSource {
        use super::super::snapshot::{judge, AtKill, Snapshot};
        let at_kill = AtKill {
            usage,
            victim_anon: None,
            time_ns: 1,
        };
        let read = Snapshot {
            stat: *stat,
            usage_now: None,
            time_ns: 2_000_001,
            victim_exited: false,
        };
        judge(&at_kill, &read).source()
    }

    fn memcg_kill(stat: MemcgStat, usage: u64, rss_anon: u64) -> OomKillEvent {
        use crate::event::*;
        let stat_source = stat_source(&stat, Some(usage));
        OomKillEvent {
            time: "t".into(),
            kernel_time_ns: 1,
            node: "n".into(),
            victim: Victim {
                pid: 7,
                tid: 7,
                ns_pid: None,
                comm: Some("app".into()),
                uid: None,
                oom_score_adj: None,
                rss_bytes: Some(Rss {
                    anon: rss_anon,
                    file: 5 << 20,
                    shmem: 0,
                }),
                total_vm_bytes: None,
                cgroup_id: None,
                cgroup_path: None,
                cgroup_v2_id: None,
                oom_points: None,
                comm_hex: None,
            },
            trigger: Trigger {
                pid: 7,
                comm: "app".into(),
                comm_hex: None,
                tid: 7,
                cgroup_id: None,
                cgroup_path: None,
                kubernetes: None,
            },
            memcg: Memcg {
                usage_bytes: Some(usage),
                limit_bytes: Some(32 << 20),
            },
            constraint: Some(Constraint::Memcg),
            constraint_source: None,
            oom_memcg: Some(OomMemcg {
                cgroup_id: 1,
                path: None,
                usage_bytes: Some(usage),
                limit_bytes: Some(32 << 20),
            }),
            memcg_stat: Some(stat),
            explanation: None,
            oom_id: 1,
            group_kill: false,
            kubernetes: None,
            silent: None,
            oom_domain_bytes: None,
            container: None,
            memcg_stat_source: Some(stat_source),
            tasks: None,
            tasks_total: None,
            tasks_source: None,
            pressure_before: None,
            signal: None,
            exit: None,
            event_id: String::new(),
            replayed: false,
        }
    }

    #[test]
    fn figures_set_against_the_limit_are_the_memcgs_own() {
        // RSS 37 MiB (file pages charged elsewhere) in a 32 MiB memcg.
        let stat = MemcgStat {
            anon: 31 << 20,
            kernel: 1 << 20,
            ..MemcgStat::default()
        };
        let event = memcg_kill(stat, 32 << 20, 32 << 20);
        assert_eq!(event.memcg_stat_source, Some(MemcgStatSource::AfterKill));
        assert_eq!(
            explain(KillKind::OomKill, &event),
            "anonymous memory is 31 MiB (96%) of the 32 MiB limit, most of it the victim's; \
             victim app (7) RSS 37 MiB"
        );
    }

    #[test]
    fn shmem_is_part_of_file_not_of_anon() {
        // The container at half scale (memcg_kill's limit is 32
        // MiB): 19 MiB anonymous, 10 MiB tmpfs (counted in file), 1 MiB of
        // page cache. Taking shmem out of anon would leave 9 MiB and call it
        // "mostly tmpfs".
        let stat = MemcgStat {
            anon: 19 << 20,
            file: 11 << 20,
            shmem: 10 << 20,
            kernel: 1 << 20,
            sock: 1 << 20,
            ..MemcgStat::default()
        };
        let parts = composition(&stat);
        assert_eq!(parts.anon, 19 << 20);
        assert_eq!(parts.page_cache, 1 << 20);
        assert_eq!(parts.shmem, 10 << 20);
        assert_eq!(
            parts.anon + parts.page_cache + parts.shmem + parts.kernel + parts.sock,
            stat.anon + stat.file + stat.kernel + stat.sock
        );
        let event = memcg_kill(stat, 32 << 20, 6 << 20);
        let explanation = explain(KillKind::OomKill, &event);
        assert!(
            explanation.starts_with("anonymous memory is 19 MiB (59%) of the 32 MiB limit"),
            "{explanation}"
        );
    }

    #[test]
    fn a_stat_read_after_the_reaper_is_marked_and_not_explained_from() {
        // The case: 3.7 MiB of anon read after a kill at 32 MiB.
        let stat = MemcgStat {
            anon: 3_879_731,
            ..MemcgStat::default()
        };
        let event = memcg_kill(stat, 32 << 20, 30 << 20);
        assert_eq!(
            event.memcg_stat_source,
            Some(MemcgStatSource::AfterKillInconsistent)
        );
        assert_eq!(
            explain(KillKind::OomKill, &event),
            "the memory cgroup was at 32 MiB of the 32 MiB limit; victim app (7) RSS 35 MiB \
             (anon 30 MiB, file 5 MiB)"
        );
        assert_eq!(
            stat_source(&stat, None),
            MemcgStatSource::AfterKillInconsistent
        );
        assert_eq!(
            stat_source(
                &MemcgStat {
                    anon: 24 << 20,
                    ..stat
                },
                Some(32 << 20)
            ),
            MemcgStatSource::AfterKill,
            "three quarters is enough"
        );
    }

    /// The late snapshot: the restarted container's 50 MiB of tmpfs
    /// read after a kill of anonymous memory. Marked late, it is not used:
    /// the explanation names the kill's usage and the victim's RSS by kind.
    #[test]
    fn a_late_snapshot_is_not_explained_from() {
        let refilled = MemcgStat {
            anon: 2 << 20,
            file: 50 << 20,
            shmem: 50 << 20,
            ..MemcgStat::default()
        };
        let mut event = memcg_kill(refilled, 32 << 20, 30 << 20);
        event.memcg_stat_source = Some(MemcgStatSource::AfterKillLate);
        assert_eq!(
            explain(KillKind::OomKill, &event),
            "the memory cgroup was at 32 MiB of the 32 MiB limit; victim app (7) RSS 35 MiB \
             (anon 30 MiB, file 5 MiB)"
        );
        event.memcg_stat_source = Some(MemcgStatSource::AfterKill);
        assert!(explain(KillKind::OomKill, &event).starts_with("shmem/tmpfs is 50 MiB"));
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(size(512 * 1024), "512 KiB");
        assert_eq!(size(62 << 20), "62 MiB");
        assert_eq!(size(1_932_735_283), "1.8 GiB");
    }
}
