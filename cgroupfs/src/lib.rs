//! Finds the node's cgroup hierarchies and turns the cgroup ids the kernel
//! reports into paths.
//!
//! A cgroup's id is the inode number of its directory in cgroupfs (the
//! kernfs node id), on v1 and v2 alike, so a walk of the hierarchy maps ids
//! to paths. Walks are cached and repeated only when an unknown id shows up.

use std::{
    collections::HashMap,
    fmt, fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

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
    pub fn discover() -> Result<Self> {
        let text = fs::read_to_string("/proc/self/mountinfo")
            .context("cannot read /proc/self/mountinfo: is /proc mounted?")?;
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

struct MountLine<'a> {
    root: &'a str,
    mount_point: PathBuf,
    fs_type: &'a str,
    super_options: &'a str,
}

impl<'a> MountLine<'a> {
    /// `id parent major:minor root mount_point options [optional...] - fstype source super_options`
    fn parse(line: &'a str) -> Option<Self> {
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

    fn has_option(&self, option: &str) -> bool {
        self.super_options.split(',').any(|o| o == option)
    }
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

/// Maps cgroup ids of one hierarchy to paths relative to its root, in the
/// form `/proc/<pid>/cgroup` uses (`/` for the root, `/a/b` below it).
#[derive(Debug)]
pub struct CgroupResolver {
    root: PathBuf,
    paths: HashMap<u64, String>,
}

impl CgroupResolver {
    /// A resolver over the hierarchy mounted at `root`; nothing is read yet.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            paths: HashMap::new(),
        }
    }

    /// The mount point this resolver walks.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of cgroup `id`, or `None` when it was removed before it was
    /// ever seen. Kernel cgroup ids are never reused, so a cached path stays
    /// right after its cgroup is gone, until the next walk forgets it.
    pub fn path_of(&mut self, id: u64) -> Option<String> {
        if !self.paths.contains_key(&id) {
            self.refresh();
        }
        self.paths.get(&id).cloned()
    }

    /// Every cgroup id and path as of the last walk.
    pub fn known(&self) -> impl Iterator<Item = (u64, &str)> {
        self.paths.iter().map(|(id, path)| (*id, path.as_str()))
    }

    /// Walks the hierarchy again, forgetting cgroups that are gone.
    pub fn refresh(&mut self) {
        self.paths.clear();
        let mut pending = vec![(self.root.clone(), String::from("/"))];
        while let Some((dir, relative)) = pending.pop() {
            let Ok(meta) = fs::symlink_metadata(&dir) else {
                continue;
            };
            self.paths.insert(meta.ino(), relative.clone());
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = match relative.as_str() {
                    "/" => format!("/{name}"),
                    parent => format!("{parent}/{name}"),
                };
                pending.push((entry.path(), child));
            }
        }
    }
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
    fn unescapes_mount_points() {
        assert_eq!(unescape_octal(r"/mnt/a\040b\134c"), r"/mnt/a b\c");
        assert_eq!(unescape_octal(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn resolves_directory_inodes_to_paths_and_keeps_names_of_removed_ones() {
        let root = std::env::temp_dir().join(format!("oom-probe-cgroups-{}", std::process::id()));
        let leaf = root.join("kubepods/burstable/pod1");
        fs::create_dir_all(&leaf).unwrap();
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        let mut resolver = CgroupResolver::new(&root);
        assert_eq!(resolver.path_of(ino(&root)).as_deref(), Some("/"));
        let leaf_ino = ino(&leaf);
        assert_eq!(
            resolver.path_of(leaf_ino).as_deref(),
            Some("/kubepods/burstable/pod1")
        );
        let later = root.join("late");
        fs::create_dir(&later).unwrap();
        assert_eq!(resolver.path_of(ino(&later)).as_deref(), Some("/late"));
        fs::remove_dir_all(&leaf).unwrap();
        // Seen before it vanished: still named (kernel cgroup ids are never reused).
        assert_eq!(
            resolver.path_of(leaf_ino).as_deref(),
            Some("/kubepods/burstable/pod1")
        );
        // Never seen: no path, and no panic.
        assert_eq!(CgroupResolver::new(&root).path_of(leaf_ino), None);
        fs::remove_dir_all(&root).unwrap();
    }
}
