//! Turns the cgroup ids the kernel reports into paths.
//!
//! A cgroup's id is the inode number of its directory in cgroupfs (the
//! kernfs node id), on v1 and v2 alike, so a walk of the hierarchy maps ids
//! to paths. Walks are cached and repeated only when an unknown id shows up.

use std::{
    collections::HashMap,
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

/// Maps cgroup ids of one hierarchy to paths relative to its root, in the
/// form `/proc/<pid>/cgroup` uses (`/` for the root, `/a/b` below it),
/// each name in its printable form ([`crate::text::escape`]: control
/// characters and bytes that are not UTF-8 as `\xNN`).
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
                // Names are bytes; the path holds their printable form.
                let name = crate::text::escape(entry.file_name().as_bytes()).0;
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
