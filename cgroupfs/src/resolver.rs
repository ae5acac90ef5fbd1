//! Turns the cgroup ids the kernel reports into paths.
//!
//! A cgroup's id is the kernfs node id of its directory in cgroupfs, which
//! is also the directory's inode number, on v1 and v2 alike. An id is named
//! in O(1), whatever the number of cgroups: `open_by_handle_at(2)` on the
//! hierarchy's mount with the id as a kernfs file handle (`FILEID_KERNFS`,
//! every kernel since 5.5), then the opened directory's path from
//! `/proc/self/fd`. Where that is refused (no `CAP_DAC_READ_SEARCH`, a
//! kernel or mount without export support, a cgroup outside the mounted
//! subtree), the resolver walks the hierarchy instead, as it always did.
//! Paths are cached, at most [`CACHE_LIMIT`] of them.

use std::{
    collections::HashMap,
    ffi::CString,
    fs, io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{
            ffi::{OsStrExt, OsStringExt},
            fs::MetadataExt,
        },
    },
    path::{Path, PathBuf},
};

/// Paths kept at most; past it the cache starts again empty (ids are never
/// reused, and a cgroup that still exists is named again in O(1)).
pub const CACHE_LIMIT: usize = 4096;

/// `FILEID_KERNFS` (include/linux/exportfs.h): a kernfs node id as handle.
const FILEID_KERNFS: i32 = 0xfe;

/// `struct file_handle` with room for the 8-byte kernfs id.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: [u8; 8],
}

/// How ids are named, decided by the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Not tried yet.
    Untried,
    /// `open_by_handle_at` works here: O(1) per id.
    Handle,
    /// Refused here: a walk of the hierarchy per unknown id.
    Walk,
}

/// Maps cgroup ids of one hierarchy to paths relative to its root, in the
/// form `/proc/<pid>/cgroup` uses (`/` for the root, `/a/b` below it),
/// each name in its printable form ([`crate::text::escape`]: control
/// characters and bytes that are not UTF-8 as `\xNN`).
#[derive(Debug)]
pub struct CgroupResolver {
    root: PathBuf,
    paths: HashMap<u64, String>,
    /// The root directory, opened once, for `open_by_handle_at` (which
    /// refuses an `O_PATH` descriptor: `EBADF`).
    mount: Option<OwnedFd>,
    /// The root as `/proc/self/fd` shows it, without a trailing `/`.
    root_link: Vec<u8>,
    lookup: Lookup,
}

impl CgroupResolver {
    /// A resolver over the hierarchy mounted at `root`; nothing is read yet.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            paths: HashMap::new(),
            mount: None,
            root_link: Vec::new(),
            lookup: Lookup::Untried,
        }
    }

    /// The mount point this resolver walks.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How ids are named here (`Untried` until the first unknown id).
    pub fn lookup(&self) -> Lookup {
        self.lookup
    }

    /// Names ids only by walking (tests, and the benchmark's comparison).
    pub fn walk_only(mut self) -> Self {
        self.lookup = Lookup::Walk;
        self
    }

    /// The path of cgroup `id`, or `None` when it was removed before it was
    /// ever seen. Kernel cgroup ids are never reused, so a cached path stays
    /// right after its cgroup is gone, until the cache is emptied.
    pub fn path_of(&mut self, id: u64) -> Option<String> {
        if let Some(path) = self.paths.get(&id) {
            return Some(path.clone());
        }
        self.decide_lookup();
        if self.lookup == Lookup::Handle {
            // Not found by handle: removed (`ESTALE`), or outside the
            // mounted subtree, where a walk finds nothing either.
            let path = self.by_handle(id).ok()??;
            self.remember(id, path.clone());
            return Some(path);
        }
        self.refresh();
        self.paths.get(&id).cloned()
    }

    /// Whether cgroup `id` exists now (not from the cache): by handle where
    /// that works, else by a walk. When the kernel refuses to say (a handle
    /// error other than "no such cgroup"), true: the caller keeps waiting.
    pub fn exists(&mut self, id: u64) -> bool {
        self.decide_lookup();
        if self.lookup == Lookup::Handle {
            return !matches!(self.by_handle(id), Ok(None));
        }
        self.walk().iter().any(|(found, _)| *found == id)
    }

    /// Decides, once, whether ids are looked up by handle or by a walk.
    fn decide_lookup(&mut self) {
        if self.lookup == Lookup::Untried {
            self.lookup = if self.handles_work() {
                Lookup::Handle
            } else {
                Lookup::Walk
            };
        }
    }

    /// True when the root's own id opens by handle and names the root:
    /// a plain `ESTALE` cannot tell "no such cgroup" from "not kernfs".
    fn handles_work(&mut self) -> bool {
        let Ok(meta) = fs::metadata(&self.root) else {
            return false;
        };
        matches!(self.by_handle(meta.ino()), Ok(Some(path)) if path == "/")
    }

    fn remember(&mut self, id: u64, path: String) {
        if self.paths.len() >= CACHE_LIMIT {
            self.paths.clear();
        }
        self.paths.insert(id, path);
    }

    /// Names `id` through a kernfs file handle: `Ok(None)` when no such
    /// cgroup exists (`ESTALE`: removed, or never was), `Err` when this
    /// kernel or mount refuses handles, or the cgroup lies outside the
    /// mounted subtree.
    fn by_handle(&mut self, id: u64) -> io::Result<Option<String>> {
        if self.mount.is_none() {
            let root = CString::new(self.root.as_os_str().as_bytes())?;
            // SAFETY: a valid C string; the fd returned is owned below.
            let fd = unsafe {
                libc::open(
                    root.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh fd nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut link = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?
                .into_os_string()
                .into_vec();
            if link.last() == Some(&b'/') {
                link.pop();
            }
            self.root_link = link;
            self.mount = Some(fd);
        }
        let mount = self.mount.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id: id.to_ne_bytes(),
        };
        // SAFETY: `handle` is a file_handle header followed by its 8 bytes;
        // the fd returned is owned below.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount,
                (&raw mut handle).cast::<libc::file_handle>(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ESTALE) | Some(libc::ENOENT) => Ok(None),
                _ => Err(err),
            };
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let link = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?
            .into_os_string()
            .into_vec();
        let link = link.strip_suffix(b" (deleted)").unwrap_or(&link);
        let Some(relative) = link.strip_prefix(self.root_link.as_slice()) else {
            return Err(io::Error::other("cgroup outside the mounted hierarchy"));
        };
        if !(relative.is_empty() || relative.starts_with(b"/")) {
            return Err(io::Error::other("cgroup outside the mounted hierarchy"));
        }
        Ok(Some(match relative {
            b"" => String::from("/"),
            // Names are bytes; the path holds their printable form ('/'
            // is printable, so escaping the whole is escaping each name).
            relative => crate::text::escape(relative).0,
        }))
    }

    /// Every cgroup id and path as of the last walk.
    pub fn known(&self) -> impl Iterator<Item = (u64, &str)> {
        self.paths.iter().map(|(id, path)| (*id, path.as_str()))
    }

    /// Walks the hierarchy again, forgetting cgroups that are gone.
    pub fn refresh(&mut self) {
        self.paths = self.walk().into_iter().collect();
    }

    /// Every cgroup of the hierarchy now, by id: one directory read per
    /// cgroup (what a reconciliation with the kernel's counters needs).
    pub fn walk(&self) -> Vec<(u64, String)> {
        let mut found = Vec::new();
        let mut pending = vec![(self.root.clone(), String::from("/"))];
        while let Some((dir, relative)) = pending.pop() {
            let Ok(meta) = fs::symlink_metadata(&dir) else {
                continue;
            };
            let Ok(entries) = fs::read_dir(&dir) else {
                found.push((meta.ino(), relative));
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
            found.push((meta.ino(), relative));
        }
        found
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
        // Gone now, whatever the cache says.
        assert!(!resolver.exists(leaf_ino));
        assert!(resolver.exists(ino(&later)));
        fs::remove_dir_all(&root).unwrap();
    }
}
