//! Why the memory was full: the `memory.stat` of the cgroup that ran out,
//! read right after the kill, and one sentence a person can act on.
//!
//! A pod with 23 MiB of RSS can be killed because its cgroup is full of
//! tmpfs files or dirty page cache; the victim's RSS alone never shows that.

use std::{fs, path::Path};

use crate::event::{Constraint, KillKind, MemcgStat, OomKillEvent};

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

/// One sentence naming what filled the memory, for the event and the
/// Kubernetes Event note.
pub fn explain(kind: KillKind, event: &OomKillEvent) -> String {
    let rss = event.victim.rss_bytes.map(|r| r.anon + r.file + r.shmem);
    let victim = match rss {
        Some(rss) => format!("victim {} RSS {}", name(event), size(rss)),
        None => format!("victim {}", name(event)),
    };
    if kind == KillKind::UserspaceKill {
        return format!(
            "SIGKILL from {}, a userspace OOM killer; {victim}",
            event.trigger.comm
        );
    }
    match event.constraint {
        Some(Constraint::Memcg) => explain_memcg(event, rss.unwrap_or(0), &victim),
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

fn explain_memcg(event: &OomKillEvent, rss: u64, victim: &str) -> String {
    let oom = event.oom_memcg.as_ref();
    let Some(limit) = oom.and_then(|m| m.limit_bytes).filter(|&l| l > 0) else {
        return format!("memory cgroup limit reached; {victim}");
    };
    let limit_text = format!("the {} limit", size(limit));
    let Some(stat) = event.memcg_stat else {
        return format!("{victim} of {limit_text}");
    };
    let percent = |bytes: u64| bytes * 100 / limit;
    let dirty = stat.file_dirty + stat.file_writeback;
    let cache = stat.file.saturating_sub(stat.shmem);
    let anon = stat.anon.max(event.victim.rss_bytes.map_or(0, |r| r.anon));
    let largest = [
        ("shmem", stat.shmem),
        ("cache", cache),
        ("kernel", stat.kernel + stat.sock),
        ("anon", anon),
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
            "page cache is {}% of {limit_text} (dirty {}): writes outpace the disk; \
             consider O_DIRECT, more frequent fsync or a larger limit; {victim}",
            percent(cache),
            size(dirty)
        ),
        ("cache", cache) => format!(
            "page cache is {}% of {limit_text} and could not be reclaimed fast enough; {victim}",
            percent(cache)
        ),
        ("kernel", kernel) => format!(
            "kernel memory (slab, stacks, page tables, sockets) is {} ({}%) of {limit_text}; {victim}",
            size(kernel),
            percent(kernel)
        ),
        _ if rss * 2 >= limit => format!("{victim} of {limit_text}"),
        _ => format!(
            "anonymous memory of the cgroup is {} of {limit_text}, spread over several processes; {victim}",
            size(anon)
        ),
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

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(size(512 * 1024), "512 KiB");
        assert_eq!(size(62 << 20), "62 MiB");
        assert_eq!(size(1_932_735_283), "1.8 GiB");
    }
}
