//! The read of a wake-up: what [`Tracker::wake`](super::episode::Tracker::wake)
//! asked for, from the cgroup's files (or the node's), as a [`Sample`] for
//! the state machine. Nothing is decided here.

use std::{fs, path::Path};

use super::{
    cgroupfs,
    episode::{Kind, Reads, Sample},
    node,
};
use crate::event::{Memcg, Psi};

/// Reads `reads` for a watch of `kind` at `dir` (a cgroup's directory, or
/// the node's PSI file `<procfs>/pressure/memory`). What cannot be read is
/// `None`.
pub fn sample(kind: Kind, dir: &Path, reads: Reads) -> Sample {
    let v2 = kind == Kind::CgroupV2;
    Sample {
        hits: if reads.hits && kind != Kind::Node {
            cgroupfs::limit_hits(dir, v2)
        } else {
            None
        },
        memcg: if reads.memcg { memcg(kind, dir) } else { None },
        psi: if reads.psi { psi(kind, dir) } else { None },
        node: match (reads.node, kind, procfs_of(dir)) {
            (true, Kind::Node, Some(procfs)) => Some(node::read(procfs)),
            _ => None,
        },
    }
}

/// The procfs of the node's PSI file `<procfs>/pressure/memory`.
fn procfs_of(file: &Path) -> Option<&Path> {
    file.parent()?.parent()
}

/// Usage and limit: the cgroup's (v2: the lower of `memory.max` and
/// `memory.high`), or the node's RAM from the `meminfo` beside its PSI
/// file's directory (`<procfs>/meminfo`).
fn memcg(kind: Kind, dir: &Path) -> Option<Memcg> {
    match kind {
        Kind::Node => {
            let meminfo = procfs_of(dir)?.join("meminfo");
            Some(cgroupfs::node_memory(&fs::read_to_string(meminfo).ok()?))
        }
        Kind::CgroupV1 => Some(cgroupfs::usage_and_limit(dir, false)),
        Kind::CgroupV2 => {
            // The limit its hits count against: `memory.high` throttles
            // (and counts) below `memory.max`.
            let mut memcg = cgroupfs::usage_and_limit(dir, true);
            let high = fs::read_to_string(dir.join("memory.high"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            memcg.limit_bytes = match (memcg.limit_bytes, high) {
                (Some(max), Some(high)) => Some(max.min(high)),
                (max, high) => max.or(high),
            };
            Some(memcg)
        }
    }
}

/// PSI: the node's file itself, a v2 cgroup's `memory.pressure`; none on v1.
pub fn psi(kind: Kind, dir: &Path) -> Option<Psi> {
    match kind {
        Kind::Node => cgroupfs::read_psi(dir),
        Kind::CgroupV2 => cgroupfs::read_psi(&dir.join("memory.pressure")),
        Kind::CgroupV1 => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup v2 directory and a node procfs, as files in a temporary
    /// directory.
    fn fixture(name: &str) -> std::path::PathBuf {
        let root =
            std::env::temp_dir().join(format!("oom-probe-read-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("cg")).unwrap();
        fs::create_dir_all(root.join("proc/pressure")).unwrap();
        let psi = "some avg10=12.50 avg60=1.00 avg300=0.10 total=4000\n\
                   full avg10=2.00 avg60=0.50 avg300=0.00 total=1000\n";
        fs::write(
            root.join("cg/memory.events"),
            "low 0\nhigh 3\nmax 4\noom 1\noom_kill 1\n",
        )
        .unwrap();
        fs::write(root.join("cg/memory.current"), "1048576\n").unwrap();
        fs::write(root.join("cg/memory.max"), "max\n").unwrap();
        fs::write(root.join("cg/memory.pressure"), psi).unwrap();
        fs::write(root.join("proc/pressure/memory"), psi).unwrap();
        fs::write(
            root.join("proc/meminfo"),
            "MemTotal: 1000 kB\nMemAvailable: 400 kB\n",
        )
        .unwrap();
        fs::write(
            root.join("proc/vmstat"),
            "allocstall_normal 3\nallocstall_movable 4\npgscan_direct 9\n",
        )
        .unwrap();
        root
    }

    #[test]
    fn reads_only_what_was_asked_for() {
        let root = fixture("asked");
        let all = Reads {
            hits: true,
            memcg: true,
            psi: true,
            node: true,
        };
        let cgroup = sample(Kind::CgroupV2, &root.join("cg"), all);
        assert_eq!(cgroup.node, None, "a cgroup has no node reading");
        assert_eq!(cgroup.hits, Some(7), "max + high");
        assert_eq!(
            cgroup.memcg,
            Some(Memcg {
                usage_bytes: Some(1 << 20),
                limit_bytes: None
            })
        );
        assert_eq!(cgroup.psi.map(|p| p.some_total_us), Some(4000));
        let none = sample(Kind::CgroupV2, &root.join("cg"), Reads::default());
        assert_eq!(none, Sample::default());
        let node = sample(Kind::Node, &root.join("proc/pressure/memory"), all);
        assert_eq!(node.hits, None, "the node has no limit-hit counter");
        assert_eq!(node.memcg.and_then(|m| m.usage_bytes), Some(600 * 1024));
        assert_eq!(node.psi.map(|p| p.some_avg10), Some(12.5));
        assert_eq!(
            node.node,
            Some(node::NodeMemory {
                total_bytes: Some(1000 * 1024),
                available_bytes: Some(400 * 1024),
                allocstalls: Some(7),
            })
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn a_v2_limit_is_the_lower_of_memory_max_and_memory_high() {
        let root = fixture("high");
        let reads = Reads {
            memcg: true,
            ..Reads::default()
        };
        let limit = |root: &Path| {
            sample(Kind::CgroupV2, &root.join("cg"), reads)
                .memcg
                .and_then(|m| m.limit_bytes)
        };
        fs::write(root.join("cg/memory.high"), "524288\n").unwrap();
        assert_eq!(limit(&root), Some(512 << 10), "max is \"max\"");
        fs::write(root.join("cg/memory.max"), "262144\n").unwrap();
        assert_eq!(limit(&root), Some(256 << 10));
        fs::write(root.join("cg/memory.high"), "max\n").unwrap();
        assert_eq!(limit(&root), Some(256 << 10));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn a_cgroup_gone_reads_as_nothing() {
        let root = fixture("gone");
        let all = Reads {
            hits: true,
            memcg: true,
            psi: true,
            node: true,
        };
        let gone = sample(Kind::CgroupV2, &root.join("missing"), all);
        assert_eq!(gone.hits, None);
        assert_eq!(gone.psi, None);
        assert_eq!(gone.memcg.and_then(|m| m.usage_bytes), None);
        let _ = fs::remove_dir_all(&root);
    }
}
