//! Which cgroups to watch, learnt as they change: inotify watches on the
//! hierarchy's directories report cgroups made and removed and limits
//! written (cgroupfs reports `mkdir`/`rmdir` and writes like any file
//! system), so discovery costs work per change, not per cgroup per second.
//! A walk of the hierarchy runs at start-up, every 10 min as a safety net,
//! once after an inotify queue overflow, and every 5 s while a directory
//! could not be watched.
//!
//! The same inotify instance watches each v2 cgroup's `memory.events`; its
//! changes are handed back as watch descriptors. Discovery decides; the
//! watcher applies what it [`Found`].

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rustix::fs::inotify::{self, ReadFlags, WatchFlags};

use super::cgroupfs;
use crate::enrich::cgroup_layout;

/// How often the hierarchy is walked when a directory could not be watched
/// (inotify's `max_user_watches` reached): discovery falls back to polling.
pub const POLL_FALLBACK: Duration = Duration::from_secs(5);

/// How deep below the root directories are watched (and walked).
const MAX_DEPTH: usize = 16;

/// Which walk: the index in [`Discovery::walks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// The first walk, when the watcher starts.
    StartUp = 0,
    /// The safety net, every `PressureOptions::rescan` (10 min).
    Safety = 1,
    /// After the inotify queue overflowed (events were lost).
    Overflow = 2,
    /// Every [`POLL_FALLBACK`] while a directory could not be watched.
    Polling = 3,
}

/// The cgroups watched now, as discovery asks about them.
pub trait WatchedPaths {
    /// True when the cgroup at `path` (below the root) is watched.
    fn is_watched(&self, path: &str) -> bool;
    /// Every watched cgroup's path.
    fn watched_paths(&self) -> Vec<String>;
}

/// A change to apply to the watches.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Watch a cgroup.
    Watch {
        /// Below the hierarchy root.
        path: String,
        /// Its directory.
        dir: PathBuf,
    },
    /// Stop watching a cgroup.
    Unwatch {
        /// Below the hierarchy root.
        path: String,
        /// Its directory is gone (`cgroup_removed` on its end event).
        removed: bool,
    },
}

/// A change inotify reported on a watched directory of the hierarchy.
#[derive(Debug, PartialEq, Eq)]
pub enum DirChange {
    /// `(parent, name)`: a cgroup made.
    Made(String, String),
    /// `(parent, name)`: a cgroup removed.
    Removed(String, String),
    /// The cgroup's limit file was written.
    Limit(String),
    /// The watch went away (its directory removed).
    Gone(i32),
    /// Events were lost: walk once.
    Overflow,
}

/// What one read of inotify gave, in order.
#[derive(Debug, Default)]
pub struct Inotified {
    /// Watch descriptors of files (`memory.events`) that changed, each once.
    pub files: Vec<i32>,
    /// Directory changes.
    pub dirs: Vec<DirChange>,
}

/// The inotify instance, the directories it watches and the walks.
pub struct Discovery {
    inotify: OwnedFd,
    root: PathBuf,
    v2: bool,
    /// `--pressure-cgroup` paths; empty: container cgroups.
    prefixes: Vec<String>,
    /// The safety walk's period.
    rescan_every: Duration,
    /// Directories watched: watch descriptor -> path below the root, and
    /// back.
    dirs: HashMap<i32, String>,
    dir_wds: HashMap<String, i32>,
    /// A directory could not be watched (`max_user_watches`): discovery
    /// polls every [`POLL_FALLBACK`] instead.
    incomplete: bool,
    walks: [u64; 4],
    last_scan: Option<Instant>,
}

impl Discovery {
    /// Discovery of the hierarchy at `root` (v1 memory mount or v2 root),
    /// of the cgroups under `prefixes` (empty: containers'), walked every
    /// `rescan_every`. Watches nothing yet: [`Discovery::rescan`] does.
    ///
    /// Errors: inotify cannot be created (fd or instance limits).
    pub fn new(
        root: PathBuf,
        v2: bool,
        prefixes: Vec<String>,
        rescan_every: Duration,
    ) -> std::io::Result<Self> {
        let inotify =
            inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        Ok(Self {
            inotify,
            root,
            v2,
            prefixes,
            rescan_every,
            dirs: HashMap::new(),
            dir_wds: HashMap::new(),
            incomplete: false,
            walks: [0; 4],
            last_scan: None,
        })
    }

    /// The inotify fd, to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Walks so far: `[start-up, safety, queue overflow, polling fallback]`.
    pub fn walks(&self) -> [u64; 4] {
        self.walks
    }

    /// How many directories inotify watches.
    pub fn watched_dirs(&self) -> usize {
        self.dirs.len()
    }

    /// The directory of the cgroup at `relative` (below the root).
    pub fn dir_of(&self, relative: &str) -> PathBuf {
        self.root.join(relative.trim_start_matches('/'))
    }

    /// Watches `file` (a cgroup's `memory.events`) for changes; `None` when
    /// it cannot be (v1 has none).
    pub fn watch_file(&self, file: &Path) -> Option<i32> {
        inotify::add_watch(&self.inotify, file, WatchFlags::MODIFY).ok()
    }

    /// Stops watching the file watched as `wd`.
    pub fn forget_file(&self, wd: i32) {
        let _ = inotify::remove_watch(&self.inotify, wd);
    }

    /// Watches the directory `dir` (`relative` below the root) for cgroups
    /// made and removed in it and limits written to it. A failure other
    /// than the directory being gone (`max_user_watches` reached) turns on
    /// the polling fallback, said once.
    fn watch_dir(&mut self, relative: &str, dir: &Path) {
        if self.dir_wds.contains_key(relative) {
            return;
        }
        let flags = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MODIFY
            | WatchFlags::ONLYDIR
            | WatchFlags::DONT_FOLLOW;
        match inotify::add_watch(&self.inotify, dir, flags) {
            Ok(wd) => {
                // The same inode watched again (a renamed path) keeps its wd.
                if let Some(old) = self.dirs.insert(wd, relative.to_string()) {
                    self.dir_wds.remove(&old);
                }
                self.dir_wds.insert(relative.to_string(), wd);
            }
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {}
            Err(err) => {
                if !self.incomplete {
                    tracing::warn!(
                        "cannot watch {} for new cgroups ({err}; fs.inotify.max_user_watches?): \
                         the hierarchy is walked every {} s instead",
                        dir.display(),
                        POLL_FALLBACK.as_secs()
                    );
                }
                self.incomplete = true;
            }
        }
    }

    /// Forgets the directory watches at and below `relative` when `inside`
    /// says so.
    fn forget_dirs(&mut self, inside: impl Fn(&str) -> bool) {
        let dirs: Vec<String> = self
            .dir_wds
            .keys()
            .filter(|path| inside(path))
            .cloned()
            .collect();
        for path in dirs {
            if let Some(wd) = self.dir_wds.remove(&path) {
                self.dirs.remove(&wd);
            }
        }
    }

    /// Walks the hierarchy below `start` (`relative` below the root, `/`
    /// for all of it): watches every directory discovery needs and returns
    /// the cgroups that should be watched, by path.
    fn walk(&mut self, start: &str, watched: &dyn WatchedPaths) -> Vec<(String, PathBuf)> {
        let mut found = Vec::new();
        let depth0 = start.split('/').filter(|s| !s.is_empty()).count();
        let mut pending = vec![(self.dir_of(start), start.to_string(), depth0)];
        while let Some((dir, relative, depth)) = pending.pop() {
            if !relevant(&self.prefixes, &relative) {
                continue;
            }
            self.watch_dir(&relative, &dir);
            let mut children = 0;
            if depth < MAX_DEPTH {
                if let Ok(entries) = fs::read_dir(&dir) {
                    for entry in entries.flatten() {
                        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                            continue;
                        }
                        children += 1;
                        let name = entry.file_name().to_string_lossy().into_owned();
                        pending.push((entry.path(), child_path(&relative, &name), depth + 1));
                    }
                }
            }
            if relative == "/" || !selects(&self.prefixes, &relative, children) {
                continue;
            }
            // A watched cgroup had its limit checked already (no read).
            if watched.is_watched(&relative) || cgroupfs::has_limit(&dir, self.v2) {
                found.push((relative, dir));
            }
        }
        found
    }

    /// Walks the whole hierarchy (counted as `walk`): new cgroups to watch,
    /// and watched ones that are no longer wanted, to stop.
    pub fn rescan(&mut self, walk: Walk, watched: &dyn WatchedPaths) -> Vec<Found> {
        self.walks[walk as usize] += 1;
        self.last_scan = Some(Instant::now());
        let wanted = self.walk("/", watched);
        let wanted_paths: HashSet<&str> = wanted.iter().map(|(p, _)| p.as_str()).collect();
        let mut found: Vec<Found> = watched
            .watched_paths()
            .into_iter()
            .filter(|path| !wanted_paths.contains(path.as_str()))
            .map(|path| {
                let removed = !self.dir_of(&path).exists();
                Found::Unwatch { path, removed }
            })
            .collect();
        for (path, dir) in wanted {
            if !watched.is_watched(&path) {
                found.push(Found::Watch { path, dir });
            }
        }
        // Watches of directories gone (their IN_IGNORED may still be queued).
        let stale: HashSet<String> = self
            .dir_wds
            .keys()
            .filter(|path| !self.dir_of(path).is_dir())
            .cloned()
            .collect();
        self.forget_dirs(|path| stale.contains(path));
        found
    }

    /// The safety walk when it is due: every `rescan_every` (10 min), or
    /// every [`POLL_FALLBACK`] while a directory could not be watched.
    pub fn rescan_if_due(&mut self, watched: &dyn WatchedPaths) -> Vec<Found> {
        let (every, walk) = if self.incomplete {
            (POLL_FALLBACK, Walk::Polling)
        } else {
            (self.rescan_every, Walk::Safety)
        };
        match self.last_scan {
            Some(at) if at.elapsed() < every => Vec::new(),
            _ => self.rescan(walk, watched),
        }
    }

    /// Reads what inotify has: the watched files that changed, and the
    /// directory changes, in order.
    pub fn read(&mut self) -> Inotified {
        let limit_file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        let mut read = Inotified::default();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(self.inotify.as_fd(), &mut buf);
        while let Ok(event) = reader.next() {
            let flags = event.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                read.dirs.push(DirChange::Overflow);
                continue;
            }
            if let Some(dir) = self.dirs.get(&event.wd()) {
                if flags.contains(ReadFlags::IGNORED) {
                    read.dirs.push(DirChange::Gone(event.wd()));
                    continue;
                }
                let Some(name) = event.file_name().and_then(|n| n.to_str().ok()) else {
                    continue;
                };
                let change = if flags.contains(ReadFlags::ISDIR | ReadFlags::CREATE) {
                    DirChange::Made(dir.clone(), name.to_string())
                } else if flags.contains(ReadFlags::ISDIR | ReadFlags::DELETE) {
                    DirChange::Removed(dir.clone(), name.to_string())
                } else if flags.contains(ReadFlags::MODIFY) && name == limit_file {
                    DirChange::Limit(dir.clone())
                } else {
                    continue;
                };
                read.dirs.push(change);
                continue;
            }
            if flags.contains(ReadFlags::IGNORED) {
                continue;
            }
            if !read.files.contains(&event.wd()) {
                read.files.push(event.wd());
            }
        }
        read
    }

    /// What one directory change means for the watches. An overflow is
    /// counted and said here; the caller walks once after the whole read
    /// ([`Discovery::rescan`] with [`Walk::Overflow`]).
    pub fn on_change(&mut self, change: DirChange, watched: &dyn WatchedPaths) -> Vec<Found> {
        match change {
            DirChange::Made(parent, name) => self.on_dir_made(&parent, &name, watched),
            DirChange::Removed(parent, name) => self.on_dir_removed(&parent, &name, watched),
            DirChange::Limit(path) => self.evaluate(&path, watched).into_iter().collect(),
            DirChange::Gone(wd) => {
                if let Some(path) = self.dirs.remove(&wd) {
                    if self.dir_wds.get(&path) == Some(&wd) {
                        self.dir_wds.remove(&path);
                    }
                }
                Vec::new()
            }
            DirChange::Overflow => Vec::new(),
        }
    }

    /// Says that the inotify queue overflowed, before the walk that follows.
    pub fn overflowed(&self) {
        tracing::warn!(
            "the inotify queue overflowed (fs.inotify.max_queued_events): walking the \
             memory hierarchy once for cgroups made or removed meanwhile ({} time(s) so far)",
            self.walks[Walk::Overflow as usize] + 1
        );
    }

    /// Checks the cgroup at `relative` again (made, a child made or removed,
    /// its limit written): watch it when it should be and is not, stop when
    /// it is and should not be any more.
    fn evaluate(&mut self, relative: &str, watched: &dyn WatchedPaths) -> Option<Found> {
        if relative == "/" || !relevant(&self.prefixes, relative) {
            return None;
        }
        let dir = self.dir_of(relative);
        let is_watched = watched.is_watched(relative);
        if !dir.is_dir() {
            return is_watched.then(|| Found::Unwatch {
                path: relative.to_string(),
                removed: true,
            });
        }
        // Children matter only for --pressure-cgroup (leaves).
        let children = if self.prefixes.is_empty() {
            0
        } else {
            fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .count()
                })
                .unwrap_or(0)
        };
        let wanted =
            selects(&self.prefixes, relative, children) && cgroupfs::has_limit(&dir, self.v2);
        match (wanted, is_watched) {
            (true, false) => Some(Found::Watch {
                path: relative.to_string(),
                dir,
            }),
            (false, true) => Some(Found::Unwatch {
                path: relative.to_string(),
                removed: false,
            }),
            _ => None,
        }
    }

    /// A directory `name` made in the watched directory `parent`: watches
    /// it and everything already below it (made before its watch was).
    fn on_dir_made(&mut self, parent: &str, name: &str, watched: &dyn WatchedPaths) -> Vec<Found> {
        let relative = child_path(parent, name);
        let mut found: Vec<Found> = self
            .walk(&relative, watched)
            .into_iter()
            .filter(|(path, _)| !watched.is_watched(path))
            .map(|(path, dir)| Found::Watch { path, dir })
            .collect();
        if !self.prefixes.is_empty() {
            // The parent is no longer a leaf.
            found.extend(self.evaluate(parent, watched));
        }
        found
    }

    /// The directory `name` removed from `parent`: forgets it and anything
    /// watched below it.
    fn on_dir_removed(
        &mut self,
        parent: &str,
        name: &str,
        watched: &dyn WatchedPaths,
    ) -> Vec<Found> {
        let relative = child_path(parent, name);
        let below = format!("{relative}/");
        let inside = |path: &str| path == relative || path.starts_with(&below);
        let mut found: Vec<Found> = watched
            .watched_paths()
            .into_iter()
            .filter(|path| inside(path))
            .map(|path| Found::Unwatch {
                path,
                removed: true,
            })
            .collect();
        self.forget_dirs(inside);
        if !self.prefixes.is_empty() {
            // The parent may be a leaf again.
            found.extend(self.evaluate(parent, watched));
        }
        found
    }
}

/// The path below the root of the child `name` of `parent`.
fn child_path(parent: &str, name: &str) -> String {
    match parent {
        "/" => format!("/{name}"),
        parent => format!("{parent}/{name}"),
    }
}

/// True when `relative` is at or below `prefix`, or `prefix` is empty.
fn under(relative: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || relative == prefix
        || relative
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// True when discovery needs the directory at `relative`: with no
/// `--pressure-cgroup` every directory (a container's cgroup may be made
/// anywhere); else the prefixes' subtrees and the directories above them
/// (a prefix made later is found).
fn relevant(cgroups: &[String], relative: &str) -> bool {
    cgroups.is_empty()
        || relative == "/"
        || cgroups
            .iter()
            .any(|prefix| under(relative, prefix) || under(prefix, relative))
}

/// True when the cgroup at `relative`, with `children` child cgroups, is
/// one to watch (if it has a limit): a container's own cgroup, as kills
/// name it; with `--pressure-cgroup` a leaf at or under one of them.
fn selects(cgroups: &[String], relative: &str, children: usize) -> bool {
    if cgroups.is_empty() {
        cgroup_layout::parse(relative).container_id.is_some()
    } else {
        children == 0 && cgroups.iter().any(|prefix| under(relative, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    impl WatchedPaths for HashSet<String> {
        fn is_watched(&self, path: &str) -> bool {
            self.contains(path)
        }

        fn watched_paths(&self) -> Vec<String> {
            self.iter().cloned().collect()
        }
    }

    fn watch(root: &Path, path: &str) -> Found {
        Found::Watch {
            path: path.to_string(),
            dir: root.join(path.trim_start_matches('/')),
        }
    }

    fn unwatch(path: &str, removed: bool) -> Found {
        Found::Unwatch {
            path: path.to_string(),
            removed,
        }
    }

    /// A v1-like hierarchy in a temporary directory (limits are
    /// `memory.limit_in_bytes` files), changed by hand and told to
    /// discovery as inotify would: what to watch and stop follows, without
    /// a registry.
    #[test]
    fn leaves_with_a_limit_under_the_prefix_are_found_and_followed_through_changes() {
        let root = std::env::temp_dir().join(format!("oom-probe-discovery-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let limit = |path: &str, bytes: u64| {
            fs::write(
                root.join(path).join("memory.limit_in_bytes"),
                bytes.to_string(),
            )
            .unwrap()
        };
        for dir in ["p/a", "p/b", "q/c"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        limit("p/a", 64 << 20);
        limit("p/b", 9_223_372_036_854_771_712); // PAGE_COUNTER_MAX pages: none
        limit("q/c", 64 << 20);
        let mut discovery = Discovery::new(
            root.clone(),
            false,
            prefixes(&["/p"]),
            Duration::from_secs(600),
        )
        .unwrap();
        let mut watched = HashSet::new();
        assert_eq!(
            discovery.rescan(Walk::StartUp, &watched),
            vec![watch(&root, "/p/a")]
        );
        assert_eq!(discovery.walks(), [1, 0, 0, 0]);
        assert_eq!(discovery.watched_dirs(), 4, "/, /p, /p/a, /p/b; not /q");
        watched.insert("/p/a".to_string());

        // A child made: /p/a is no longer a leaf.
        fs::create_dir(root.join("p/a/x")).unwrap();
        let made = DirChange::Made("/p/a".into(), "x".into());
        assert_eq!(
            discovery.on_change(made, &watched),
            vec![unwatch("/p/a", false)]
        );
        assert_eq!(discovery.watched_dirs(), 5);
        watched.remove("/p/a");
        // And removed: a leaf again.
        fs::remove_dir(root.join("p/a/x")).unwrap();
        let removed = DirChange::Removed("/p/a".into(), "x".into());
        assert_eq!(
            discovery.on_change(removed, &watched),
            vec![watch(&root, "/p/a")]
        );
        assert_eq!(discovery.watched_dirs(), 4);
        watched.insert("/p/a".to_string());

        // A limit written.
        limit("p/b", 32 << 20);
        let written = DirChange::Limit("/p/b".into());
        assert_eq!(
            discovery.on_change(written, &watched),
            vec![watch(&root, "/p/b")]
        );
        watched.insert("/p/b".to_string());

        // A watched cgroup removed, and one the safety walk finds gone.
        fs::remove_dir_all(root.join("p/a")).unwrap();
        let removed = DirChange::Removed("/p".into(), "a".into());
        assert_eq!(
            discovery.on_change(removed, &watched),
            vec![unwatch("/p/a", true)]
        );
        watched.remove("/p/a");
        watched.insert("/p/gone".to_string());
        assert_eq!(
            discovery.rescan(Walk::Safety, &watched),
            vec![unwatch("/p/gone", true)]
        );
        assert_eq!(discovery.walks(), [1, 1, 0, 0]);
        assert_eq!(discovery.rescan_if_due(&watched), Vec::new(), "not due");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn child_paths_join_below_the_root_and_below_a_cgroup() {
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(child_path("/a", "b"), "/a/b");
    }

    #[test]
    fn under_matches_whole_path_components_only() {
        assert!(under("/a/b", "/a"));
        assert!(under("/a", "/a"));
        assert!(under("/a", "/a/"));
        assert!(under("/anything", "/"));
        assert!(!under("/ab", "/a"));
        assert!(!under("/a", "/a/b"));
    }

    #[test]
    fn with_prefixes_only_their_subtrees_and_the_directories_above_are_watched() {
        let cgroups = prefixes(&["/oom-probe/test"]);
        assert!(relevant(&cgroups, "/"));
        assert!(relevant(&cgroups, "/oom-probe"));
        assert!(relevant(&cgroups, "/oom-probe/test"));
        assert!(relevant(&cgroups, "/oom-probe/test/x/y"));
        assert!(!relevant(&cgroups, "/system.slice"));
        assert!(!relevant(&cgroups, "/oom-probe/other"));
        assert!(!relevant(&cgroups, "/oom-probe/testing"));
        // No prefixes: containers may be made anywhere.
        assert!(relevant(&[], "/system.slice/anything"));
    }

    #[test]
    fn prefixes_select_leaves_and_no_prefix_selects_containers() {
        let cgroups = prefixes(&["/p"]);
        assert!(selects(&cgroups, "/p/a", 0));
        assert!(!selects(&cgroups, "/p/a", 1), "not a leaf");
        assert!(!selects(&cgroups, "/q/a", 0), "not under the prefix");
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert!(selects(&[], &format!("/system.slice/docker-{id}.scope"), 3));
        assert!(!selects(&[], "/system.slice/cron.service", 0));
    }
}
