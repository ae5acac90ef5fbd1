//! The kernel's own count of OOM kills per memory cgroup: the ground truth
//! oom-probe reconciles with, and what the tests check a kill against.

use std::{fs, io, path::Path};

/// Which count of a cgroup's kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Kills in this cgroup only (`memory.events.local` on v2).
    Local,
    /// Kills in this cgroup and below it (`memory.events` on v2).
    Subtree,
}

/// The `oom_kill` count of the memory cgroup at `dir` (an absolute cgroupfs
/// directory): from `memory.events.local` or `memory.events` on v2 as
/// `scope` says, else `memory.oom_control` on v1 (whose count is the
/// cgroup's own). `NotFound` when the directory has neither file,
/// `InvalidData` when the file has no `oom_kill` line (kernels before 4.13).
pub fn oom_kills(dir: &Path, scope: Scope) -> io::Result<u64> {
    let v2 = match scope {
        Scope::Local => "memory.events.local",
        Scope::Subtree => "memory.events",
    };
    for file in [v2, "memory.oom_control"] {
        let text = match fs::read_to_string(dir.join(file)) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        return parse_oom_kill(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no oom_kill in {}/{file}", dir.display()),
            )
        });
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no {v2} or memory.oom_control in {}: not a memory cgroup",
            dir.display()
        ),
    ))
}

/// The `oom_kill` count in the text of `memory.events`,
/// `memory.events.local` or `memory.oom_control` (`key value` lines, any
/// order, unknown keys ignored); `None` when no line is `oom_kill <u64>`.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// The kernel's count of every OOM kill on the node since boot (`oom_kill`
/// in `/proc/vmstat`, kernels since 4.13): one small read, whatever the
/// number of cgroups. Bumped once per kill, next to the kill's cgroup
/// counter. `InvalidData` when the line is missing.
pub fn node_oom_kills() -> io::Result<u64> {
    node_oom_kills_from(&fs::read_to_string("/proc/vmstat")?)
}

/// The `oom_kill` figure of a `/proc/vmstat` text.
pub fn node_oom_kills_from(vmstat: &str) -> io::Result<u64> {
    vmstat
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no oom_kill in /proc/vmstat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v2_then_v1_counters() {
        let dir = std::env::temp_dir().join(format!("oom-probe-counters-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(
            oom_kills(&dir, Scope::Local).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        assert_eq!(oom_kills(&dir, Scope::Local).unwrap(), 3);
        fs::write(dir.join("memory.events.local"), "oom 9\noom_kill 4\n").unwrap();
        fs::write(
            dir.join("memory.events"),
            "oom 9\noom_kill 6\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(oom_kills(&dir, Scope::Local).unwrap(), 4);
        assert_eq!(oom_kills(&dir, Scope::Subtree).unwrap(), 6);
        fs::write(dir.join("memory.events"), "low 0\n").unwrap();
        assert_eq!(
            oom_kills(&dir, Scope::Subtree).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn node_count_is_read_from_vmstat() {
        let vmstat = "oom_kill_extra 9\npgfault 12\noom_kill 1447\n";
        assert_eq!(node_oom_kills_from(vmstat).unwrap(), 1447);
        assert!(node_oom_kills_from("pgfault 12\n").is_err());
        node_oom_kills().expect("this kernel has oom_kill in /proc/vmstat");
    }
}
