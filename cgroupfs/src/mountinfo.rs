//! Where the cgroup hierarchies are mounted, read from
//! `/proc/self/mountinfo` (or found under a cgroupfs mounted elsewhere).

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

/// The cgroup mounts oom-probe cares about, as this mount namespace sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// Mount point of the unified (v2) hierarchy, if mounted.
    pub v2: Option<PathBuf>,
    /// Mount point of the v1 hierarchy that holds the memory controller.
    pub memory_v1: Option<PathBuf>,
}

/// How the node runs cgroups; decides where memory limits live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    V1,
    V2,
    Hybrid,
    None,
}

impl fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::Hybrid => "hybrid",
            Self::None => "none",
        })
    }
}

impl Hierarchies {
    /// Reads this process's mount table.
    /// Fails only when `/proc/self/mountinfo` cannot be read.
    pub fn discover() -> io::Result<Self> {
        let text = fs::read_to_string("/proc/self/mountinfo").map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot read /proc/self/mountinfo ({err}): is /proc mounted?"),
            )
        })?;
        Ok(Self::from_mountinfo(&text))
    }

    /// The hierarchies under a cgroupfs tree mounted somewhere else, as a
    /// DaemonSet sees the host's `/sys/fs/cgroup` (its own is namespaced).
    pub fn under(dir: &Path) -> Self {
        let memory = dir.join("memory");
        let memory_v1 = memory
            .join("memory.limit_in_bytes")
            .exists()
            .then_some(memory);
        let v2 = [dir.join("unified"), dir.to_path_buf()]
            .into_iter()
            .find(|d| d.join("cgroup.controllers").exists());
        Self { v2, memory_v1 }
    }

    /// Parses `/proc/<pid>/mountinfo` text; malformed lines are skipped.
    pub fn from_mountinfo(text: &str) -> Self {
        let mut found = Self::default();
        for line in text.lines() {
            let Some(mount) = MountLine::parse(line) else {
                continue;
            };
            if mount.root != "/" {
                continue; // a bind mount of a sub-cgroup does not show the whole tree
            }
            match mount.fs_type {
                "cgroup2" if found.v2.is_none() => found.v2 = Some(mount.mount_point),
                "cgroup" if found.memory_v1.is_none() && mount.has_option("memory") => {
                    found.memory_v1 = Some(mount.mount_point)
                }
                _ => {}
            }
        }
        found
    }

    /// v1, v2, or both (hybrid: v1 controllers plus a unified tree).
    pub fn mode(&self) -> CgroupMode {
        match (&self.memory_v1, &self.v2) {
            (Some(_), Some(_)) => CgroupMode::Hybrid,
            (Some(_), None) => CgroupMode::V1,
            (None, Some(_)) => CgroupMode::V2,
            (None, None) => CgroupMode::None,
        }
    }

    /// Where the memory controller's tree is: the v1 memory mount, else the
    /// v2 mount when its root lists `memory` among its controllers.
    pub fn memory_root(&self) -> Option<&Path> {
        if let Some(v1) = &self.memory_v1 {
            return Some(v1);
        }
        let v2 = self.v2.as_deref()?;
        let controllers = fs::read_to_string(v2.join("cgroup.controllers")).ok()?;
        controllers
            .split_whitespace()
            .any(|c| c == "memory")
            .then_some(v2)
    }
}

/// One line of `/proc/<pid>/mountinfo`, the fields oom-probe reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountLine<'a> {
    /// The mounted directory of the filesystem (`/` for a whole cgroup tree).
    pub root: &'a str,
    /// Where it is mounted, octal escapes undone.
    pub mount_point: PathBuf,
    /// `cgroup`, `cgroup2`, `tmpfs`...
    pub fs_type: &'a str,
    /// Filesystem options; for cgroup v1, its controllers (`rw,memory`).
    pub super_options: &'a str,
}

impl<'a> MountLine<'a> {
    /// `id parent major:minor root mount_point options [optional...] - fstype source super_options`
    pub fn parse(line: &'a str) -> Option<Self> {
        let (head, tail) = line.split_once(" - ")?;
        let mut head = head.split(' ');
        let root = head.nth(3)?;
        let mount_point = PathBuf::from(unescape_octal(head.next()?));
        let mut tail = tail.split(' ');
        let fs_type = tail.next()?;
        let super_options = tail.nth(1).unwrap_or("");
        Some(Self {
            root,
            mount_point,
            fs_type,
            super_options,
        })
    }

    /// True when `option` is one of the super options.
    pub fn has_option(&self, option: &str) -> bool {
        self.super_options.split(',').any(|o| o == option)
    }
}

/// This process's mount table, or an empty one when /proc cannot be read.
pub fn read_self() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

/// Every mount of a whole cgroup tree (`cgroup` and `cgroup2`, root `/`):
/// one per v1 controller hierarchy, and the unified one.
pub fn cgroup_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(MountLine::parse)
        .filter(|m| m.root == "/" && matches!(m.fs_type, "cgroup" | "cgroup2"))
        .map(|m| m.mount_point)
        .collect()
}

/// Mount points at or below `dir`, deepest first: the order to unmount them.
pub fn mount_points_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(MountLine::parse)
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(value)) => {
                out.push(value);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
36 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
40 31 0:35 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,memory
";

    #[test]
    fn finds_hybrid_hierarchies() {
        let h = Hierarchies::from_mountinfo(HYBRID);
        assert_eq!(h.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            h.memory_v1.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(h.mode(), CgroupMode::Hybrid);
        assert_eq!(h.memory_root(), Some(Path::new("/sys/fs/cgroup/memory")));
    }

    #[test]
    fn finds_pure_v2_and_skips_sub_tree_bind_mounts_and_garbage() {
        let text = "\
garbage line
29 23 0:26 /kubepods /host/cg rw - cgroup2 cgroup2 rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        let h = Hierarchies::from_mountinfo(text);
        assert_eq!(h.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert_eq!(h.memory_v1, None);
        assert_eq!(h.mode(), CgroupMode::V2);
        assert_eq!(Hierarchies::from_mountinfo("").mode(), CgroupMode::None);
    }

    #[test]
    fn finds_hierarchies_under_a_host_mount() {
        let host = std::env::temp_dir().join(format!("oom-probe-hostcg-{}", std::process::id()));
        fs::create_dir_all(host.join("memory")).unwrap();
        fs::create_dir_all(host.join("unified")).unwrap();
        fs::write(host.join("memory/memory.limit_in_bytes"), "").unwrap();
        fs::write(host.join("unified/cgroup.controllers"), "").unwrap();
        let h = Hierarchies::under(&host);
        assert_eq!(h.memory_v1, Some(host.join("memory")));
        assert_eq!(h.v2, Some(host.join("unified")));
        fs::remove_dir_all(host.join("memory")).unwrap();
        fs::remove_dir_all(host.join("unified")).unwrap();
        fs::write(host.join("cgroup.controllers"), "memory pids").unwrap();
        let h = Hierarchies::under(&host);
        assert_eq!((h.memory_v1, h.v2.as_deref()), (None, Some(host.as_path())));
        assert_eq!(
            Hierarchies::under(&host).memory_root(),
            Some(host.as_path())
        );
        fs::remove_dir_all(&host).unwrap();
    }

    #[test]
    fn lists_cgroup_trees_and_mounts_below_a_directory() {
        assert_eq!(
            cgroup_mount_points(HYBRID),
            [
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/memory"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            mount_points_under(HYBRID, Path::new("/sys/fs")),
            [
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_octal(r"/mnt/a\040b\134c"), r"/mnt/a b\c");
        assert_eq!(unescape_octal(r"/trailing\04"), r"/trailing\04");
    }
}
