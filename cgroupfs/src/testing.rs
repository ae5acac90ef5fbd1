//! Memory cgroups made for one test (or one benchmark run) and removed
//! after it: created with a limit and no swap, emptied (SIGKILL) and removed
//! on drop. Nothing here touches a cgroup it did not create.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{
    counters::{self, Scope},
    Hierarchies,
};

/// How long removal keeps killing what runs in a cgroup before giving up.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A memory cgroup that exists for one test: created with a limit, emptied
/// and removed on drop.
#[derive(Debug)]
pub struct MemoryCgroup {
    path: PathBuf,
    relative: String,
    v2: bool,
}

static NEXT_CGROUP: AtomicU32 = AtomicU32::new(0);

impl MemoryCgroup {
    /// Creates `oom-probe-test-<pid>-<n>` under the memory controller's
    /// hierarchy (v1 memory mount, or the v2 root with `memory` delegated),
    /// limited to `limit_bytes` with no swap.
    pub fn create(limit_bytes: u64) -> io::Result<Self> {
        let (root, v2) = memory_root()?;
        Self::create_in(root, String::new(), v2, Some(limit_bytes))
    }

    /// Creates a child cgroup, with its own limit or none (the parent's
    /// then applies). Drop the child before the parent.
    pub fn create_child(&self, limit_bytes: Option<u64>) -> io::Result<Self> {
        self.delegate_memory()?;
        Self::create_in(
            self.path.clone(),
            self.relative.clone(),
            self.v2,
            limit_bytes,
        )
    }

    /// Creates a child with a given name, for layouts such as
    /// `kubepods/burstable/pod<uid>/<container id>`.
    pub fn create_child_named(&self, name: &str, limit_bytes: Option<u64>) -> io::Result<Self> {
        self.delegate_memory()?;
        Self::create_named(
            self.path.clone(),
            self.relative.clone(),
            self.v2,
            name,
            limit_bytes,
        )
    }

    /// A v2 child needs the controller enabled in its parent.
    fn delegate_memory(&self) -> io::Result<()> {
        if self.v2 {
            self.write("cgroup.subtree_control", "+memory")?;
        }
        Ok(())
    }

    fn create_in(
        parent: PathBuf,
        parent_relative: String,
        v2: bool,
        limit: Option<u64>,
    ) -> io::Result<Self> {
        let name = format!(
            "oom-probe-test-{}-{}",
            std::process::id(),
            NEXT_CGROUP.fetch_add(1, Ordering::Relaxed)
        );
        Self::create_named(parent, parent_relative, v2, &name, limit)
    }

    fn create_named(
        parent: PathBuf,
        parent_relative: String,
        v2: bool,
        name: &str,
        limit: Option<u64>,
    ) -> io::Result<Self> {
        let path = parent.join(name);
        fs::create_dir(&path).map_err(|e| with_path(e, "mkdir", &path))?;
        let cgroup = Self {
            path,
            relative: format!("{parent_relative}/{name}"),
            v2,
        };
        if let Some(limit_bytes) = limit {
            let (file, swap_file, swap_limit) = if v2 {
                ("memory.max", "memory.swap.max", String::from("0"))
            } else {
                (
                    "memory.limit_in_bytes",
                    "memory.memsw.limit_in_bytes",
                    limit_bytes.to_string(),
                )
            };
            cgroup.write(file, &limit_bytes.to_string())?;
            // No swap, so the limit is reached at once (the file exists only with swap accounting).
            let _ = cgroup.write(swap_file, &swap_limit);
        }
        Ok(cgroup)
    }

    /// True on cgroup v2, where `memory.oom.group` exists.
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// Absolute path in cgroupfs, for `oom-hog --cgroup`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as oom-probe reports it (relative to the hierarchy root).
    pub fn relative_path(&self) -> &str {
        &self.relative
    }

    /// Writes a cgroup control file.
    pub fn write(&self, file: &str, value: &str) -> io::Result<()> {
        let target = self.path.join(file);
        fs::write(&target, value).map_err(|e| with_path(e, &format!("write {value} to"), &target))
    }

    /// The kernel's own count of OOM kills in this cgroup and below it.
    pub fn kernel_oom_kills(&self) -> io::Result<u64> {
        counters::oom_kills(&self.path, Scope::Subtree)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

/// Removes the cgroup at `dir`, SIGKILLing what still runs in it until it
/// is empty (for up to 10 s; then a warning on stderr). The cgroups below it
/// must be gone already; see [`remove_tree`].
pub fn remove(dir: &Path) {
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    while Instant::now() < deadline {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() && fs::remove_dir(dir).is_ok() {
            return;
        }
        for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("warning: could not remove test cgroup {}", dir.display());
}

/// Removes a cgroup and every cgroup below it, deepest first, as [`remove`].
pub fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    remove(dir);
}

/// Where to create test cgroups, and whether it is cgroup v2: the v1 memory
/// mount, else the v2 root when it delegates `memory` to its children.
pub fn memory_root() -> io::Result<(PathBuf, bool)> {
    let hierarchies = Hierarchies::discover()?;
    if let Some(v1) = hierarchies.memory_v1 {
        return Ok((v1, false));
    }
    let root = hierarchies.v2.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no memory cgroup hierarchy is mounted",
        )
    })?;
    let controllers = fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "cgroup v2 at {} does not delegate the memory controller",
                root.display()
            ),
        ));
    }
    Ok((root, true))
}

fn with_path(err: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{what} {}: {err}", path.display()))
}
