//! `memory_pressure`: the warning before the OOM killer acts. Watches the
//! memory cgroups of containers (or those under `--pressure-cgroup`) and the
//! node through the kernel's own notifications ([`cgroupfs`]), never by
//! reading every cgroup per tick, and turns them into events:
//!
//! notification -> is it at its limit (counter rising) -> episode (since,
//! peak PSI) -> at most one `memory_pressure` per interval -> one
//! `memory_pressure_end` after `clear_after` without a notification.
//!
//! All notifications land on one epoll instance, which tokio polls through
//! [`AsyncFd`]: the cost of a quiet cgroup is two file descriptors and a
//! few hundred bytes, and no work. Cgroups made and removed, and limits
//! written, are learnt from inotify watches on the hierarchy's directories
//! (cgroupfs reports `mkdir`/`rmdir` and writes like any file system), so
//! discovery costs work per change, not per cgroup per second; a walk of
//! the hierarchy runs at start-up, every 10 min as a safety net, and once
//! after an inotify queue overflow.

pub mod cgroupfs;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use rustix::{
    event::epoll,
    fs::inotify::{self, ReadFlags, WatchFlags},
};
use tokio::io::unix::AsyncFd;

use crate::{
    enrich::{cgroup_layout, container_from, explain, kubernetes_from_path, tasks},
    event::{
        PressureBefore, PressureEndEvent, PressureEvent, PressureScope, PressureSource,
        PressureTarget, Psi,
    },
};

use cgroupfs::{AtLimit, Notifier};

/// How many processes a `memory_pressure` event lists.
pub const TOP_TASKS: usize = 5;

/// How long an ended episode is still joined to a kill of its cgroup (the
/// kill itself often ends the pressure a moment before it is reported).
const KILL_JOIN: Duration = Duration::from_secs(300);

/// A cgroup's files are read at most this often, however often it notifies;
/// a v1 eventfd that notified is not polled again before this either.
const READ_EVERY: Duration = Duration::from_millis(250);

/// The epoll key of the inotify fd (`memory.events` changes, cgroups made
/// and removed, limits written).
const INOTIFY_KEY: u64 = u64::MAX;

/// How often the hierarchy is walked when a directory could not be watched
/// (inotify's `max_user_watches` reached): discovery falls back to polling.
const POLL_FALLBACK: Duration = Duration::from_secs(5);

/// How deep below the root directories are watched (and walked).
const MAX_DEPTH: usize = 16;

/// What `--pressure-*` asked for.
#[derive(Clone, Debug)]
pub struct PressureOptions {
    /// At most one `memory_pressure` per cgroup per this long.
    pub interval: Duration,
    /// The pressure ended after this long without a notification.
    pub clear_after: Duration,
    /// cgroup v1 `memory.pressure_level` level: `low`, `medium`, `critical`.
    pub v1_level: String,
    /// PSI trigger: stall time per window (v2 cgroups and the node).
    pub psi_stall: Duration,
    /// PSI trigger window (500 ms to 10 s).
    pub psi_window: Duration,
    /// Watch the leaf memory cgroups with a limit under these paths
    /// (relative to the memory hierarchy root); empty: container cgroups.
    pub cgroups: Vec<String>,
    /// Watch the node's `/proc/pressure/memory`.
    pub node: bool,
    /// The safety walk of the hierarchy: this often, in case a directory
    /// notification was missed. New and removed cgroups are learnt from
    /// inotify at once; the walk is the net under it.
    pub rescan: Duration,
}

impl Default for PressureOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            clear_after: Duration::from_secs(10),
            v1_level: "medium".into(),
            psi_stall: Duration::from_millis(100),
            psi_window: Duration::from_secs(1),
            cgroups: Vec::new(),
            node: true,
            rescan: Duration::from_secs(600),
        }
    }
}

/// One pressure episode: from the first qualifying notification to the
/// last one before `clear_after` of quiet.
#[derive(Clone, Debug)]
struct Episode {
    since: Instant,
    since_wall: SystemTime,
    last: Instant,
    last_wall: SystemTime,
    last_event: Option<Instant>,
    events: u64,
    peak_some_avg10: Option<f64>,
}

/// One watched cgroup (or the node).
struct Watched {
    scope: PressureScope,
    /// Path below the hierarchy root (`None`: the node).
    path: Option<String>,
    dir: PathBuf,
    cgroup_id: Option<u64>,
    notifier: Notifier,
    /// inotify watch on `memory.events` (v2).
    wd: Option<i32>,
    last_hits: Option<u64>,
    hits_since_event: u64,
    last_rise: Option<Instant>,
    last_notify: Option<Instant>,
    /// When its files were last read.
    last_read: Option<Instant>,
    /// The last `some` stall total read without a trigger's notification
    /// (on a `memory.events` change, or the node's on every tick), and when.
    last_stall: Option<(Instant, u64)>,
    episode: Option<Episode>,
    /// `(when, usage)`, at most one a second, the last minute.
    usage: VecDeque<(Instant, u64)>,
}

/// Watches memory pressure; owned by the event loop.
pub struct PressureWatcher {
    options: PressureOptions,
    node_name: String,
    root: PathBuf,
    v2: bool,
    procfs: PathBuf,
    epoll: AsyncFd<OwnedFd>,
    inotify: Option<OwnedFd>,
    watched: HashMap<u64, Watched>,
    by_path: HashMap<String, u64>,
    by_wd: HashMap<i32, u64>,
    active: HashSet<u64>,
    /// Ended episodes by cgroup path, for `pressure_before` on a late kill.
    ended: HashMap<String, (Instant, PressureBefore)>,
    next_key: u64,
    last_scan: Option<Instant>,
    /// Directories of the hierarchy watched by inotify (`IN_CREATE`,
    /// `IN_DELETE`, `IN_MODIFY`): watch descriptor -> path below the root.
    dirs: HashMap<i32, String>,
    dir_wds: HashMap<String, i32>,
    /// A directory could not be watched (`max_user_watches`): discovery
    /// polls every [`POLL_FALLBACK`] instead.
    dirs_incomplete: bool,
    /// Walks of the hierarchy: `[start-up, safety, queue overflow, polling
    /// fallback]`.
    walks: [u64; 4],
    v1_failed: bool,
    /// The PSI trigger written, `(stall µs, window µs)`: the options', or
    /// the nearest one an opener without `CAP_SYS_RESOURCE` may write.
    psi: (u64, u64),
    /// The node's watch, when its PSI trigger was taken.
    node_key: Option<u64>,
    /// v1 eventfds taken out of the epoll set after a notification, with
    /// when to poll them again (now + [`READ_EVERY`]). A cgroup thrashing at
    /// its limit signals its eventfd about 2,000 times a second; each was a
    /// wake-up of the agent (39,487 context switches and 830 ms of CPU in
    /// a 20 s hold, `cargo xtask bench --pressure-only`). The eventfd's
    /// counter keeps what comes in between, so nothing is missed: it wakes
    /// the agent at most every [`READ_EVERY`]. PSI triggers (v2, the node)
    /// are rate-limited by the kernel to one per window and stay armed.
    /// Pushed in time order (each `now` + the same delay), so the front is
    /// the next one due.
    disarmed: VecDeque<(Instant, u64)>,
}

/// What a wake-up produced.
pub enum Change {
    Pressure(PressureEvent),
    End(PressureEndEvent),
}

impl PressureWatcher {
    /// Watches the memory hierarchy at `root` (v1 memory mount or the v2
    /// root) and, with `options.node`, `<procfs>/pressure/memory`.
    ///
    /// Errors: epoll or inotify cannot be created (fd limits).
    pub fn new(
        options: PressureOptions,
        node_name: String,
        root: PathBuf,
        v2: bool,
        procfs: PathBuf,
    ) -> std::io::Result<Self> {
        let epfd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open
        // and unchanged for as long as it is registered.
        let epoll = unsafe { AsyncFd::register(epfd) }.map_err(|e| e.into_parts().1)?;
        let inotify = {
            let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
            epoll::add(
                epoll.get_ref(),
                &fd,
                epoll::EventData::new_u64(INOTIFY_KEY),
                epoll::EventFlags::IN,
            )?;
            Some(fd)
        };
        let mut watcher = Self {
            options,
            node_name,
            root,
            v2,
            procfs,
            epoll,
            inotify,
            watched: HashMap::new(),
            by_path: HashMap::new(),
            by_wd: HashMap::new(),
            active: HashSet::new(),
            ended: HashMap::new(),
            next_key: 1,
            last_scan: None,
            dirs: HashMap::new(),
            dir_wds: HashMap::new(),
            dirs_incomplete: false,
            walks: [0; 4],
            v1_failed: false,
            psi: (0, 0),
            node_key: None,
            disarmed: VecDeque::new(),
        };
        watcher.psi = (
            watcher.options.psi_stall.as_micros() as u64,
            watcher.options.psi_window.as_micros() as u64,
        );
        if watcher.options.node {
            watcher.watch_node();
        }
        watcher.walks[0] += 1;
        watcher.rescan();
        Ok(watcher)
    }

    /// How many cgroups (and the node) are watched.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Walks of the hierarchy so far: `[start-up, safety, inotify queue
    /// overflow, polling fallback]`. Only the first is expected; the
    /// second comes every `rescan` (10 min by default).
    pub fn walks(&self) -> [u64; 4] {
        self.walks
    }

    /// How many directories of the hierarchy inotify watches.
    pub fn watched_dirs(&self) -> usize {
        self.dirs.len()
    }

    /// True when the node's `/proc/pressure/memory` has a trigger.
    pub fn node_watched(&self) -> bool {
        self.node_key.is_some()
    }

    /// The PSI trigger in use, `(stall, window)`.
    pub fn psi_trigger(&self) -> (Duration, Duration) {
        (
            Duration::from_micros(self.psi.0),
            Duration::from_micros(self.psi.1),
        )
    }

    fn watch_node(&mut self) {
        let mut file = self.procfs.join("pressure/memory");
        let mut registered = self.trigger(&file);
        if let Some(own) = registered
            .as_ref()
            .err()
            .and_then(|err| own_proc_fallback(&file, err))
        {
            match self.trigger(&own) {
                Ok(notifier) => {
                    tracing::info!(
                        "{} is read-only (EROFS): the node's memory pressure is watched through \
                         {} instead (node PSI is one for the whole machine)",
                        file.display(),
                        own.display()
                    );
                    file = own;
                    registered = Ok(notifier);
                }
                Err(err) => tracing::warn!(
                    "no PSI trigger on {} either: {}",
                    own.display(),
                    cgroupfs::psi_trigger_error(&own, &err)
                ),
            }
        }
        match registered {
            Ok(notifier) => {
                let watched = Watched::new(PressureScope::Node, None, file, None, notifier, None);
                let key = self.add(watched);
                self.node_key = (key != 0).then_some(key);
            }
            Err(err) => tracing::warn!(
                "node memory pressure is not watched: no PSI trigger on {}",
                cgroupfs::psi_trigger_error(&file, &err)
            ),
        }
    }

    /// Writes the PSI trigger to `file` (a `memory.pressure` or the node's).
    /// When the kernel refuses its window to an opener without
    /// `CAP_SYS_RESOURCE` (`EINVAL`, Linux 6.5 and later), writes the
    /// nearest one it takes instead, says so once, and keeps it for every
    /// later trigger.
    fn trigger(&mut self, file: &Path) -> std::io::Result<Notifier> {
        let (stall, window) = self.psi;
        match cgroupfs::psi_trigger(file, stall, window) {
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                let Some((fit_stall, fit_window)) =
                    cgroupfs::unprivileged_psi_trigger(stall, window)
                else {
                    return Err(err);
                };
                let notifier =
                    cgroupfs::psi_trigger(file, fit_stall, fit_window).map_err(|_| err)?;
                tracing::warn!(
                    "PSI trigger \"some {stall} {window}\" refused (EINVAL): oom-probe lacks \
                     CAP_SYS_RESOURCE, and since Linux 6.5 an unprivileged trigger's window must \
                     be a multiple of 2 s; using \"some {fit_stall} {fit_window}\" (the same \
                     share of stalled time, notified at most every {} s); grant CAP_SYS_RESOURCE \
                     for --pressure-psi-window",
                    fit_window / 1_000_000
                );
                self.psi = (fit_stall, fit_window);
                Ok(notifier)
            }
            other => other,
        }
    }

    fn add(&mut self, watched: Watched) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        let flags = if watched.notifier.psi {
            epoll::EventFlags::PRI
        } else {
            epoll::EventFlags::IN
        };
        if let Err(err) = epoll::add(
            self.epoll.get_ref(),
            &watched.notifier.fd,
            epoll::EventData::new_u64(key),
            flags,
        ) {
            tracing::warn!("cannot poll a pressure notification ({err})");
            return 0;
        }
        if let Some(path) = &watched.path {
            self.by_path.insert(path.clone(), key);
        }
        if let Some(wd) = watched.wd {
            self.by_wd.insert(wd, key);
        }
        self.watched.insert(key, watched);
        key
    }

    /// Stops watching `key`: its fds close (the kernel drops the eventfd
    /// registration or the PSI trigger with them).
    fn remove(&mut self, key: u64) -> Option<Watched> {
        let watched = self.watched.remove(&key)?;
        let _ = epoll::delete(self.epoll.get_ref(), &watched.notifier.fd);
        if let (Some(wd), Some(inotify)) = (watched.wd, &self.inotify) {
            self.by_wd.remove(&wd);
            let _ = inotify::remove_watch(inotify, wd);
        }
        if let Some(path) = &watched.path {
            self.by_path.remove(path);
        }
        self.active.remove(&key);
        Some(watched)
    }

    /// The directory of the cgroup at `relative` (below the root).
    fn dir_of(&self, relative: &str) -> PathBuf {
        self.root.join(relative.trim_start_matches('/'))
    }

    /// Watches the directory `dir` (`relative` below the root) for cgroups
    /// made and removed in it and limits written to it. A failure other
    /// than the directory being gone (`max_user_watches` reached) turns on
    /// the polling fallback, said once.
    fn watch_dir(&mut self, relative: &str, dir: &Path) {
        if self.dir_wds.contains_key(relative) {
            return;
        }
        let Some(fd) = &self.inotify else {
            return;
        };
        let flags = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MODIFY
            | WatchFlags::ONLYDIR
            | WatchFlags::DONT_FOLLOW;
        match inotify::add_watch(fd, dir, flags) {
            Ok(wd) => {
                // The same inode watched again (a renamed path) keeps its wd.
                if let Some(old) = self.dirs.insert(wd, relative.to_string()) {
                    self.dir_wds.remove(&old);
                }
                self.dir_wds.insert(relative.to_string(), wd);
            }
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {}
            Err(err) => {
                if !self.dirs_incomplete {
                    tracing::warn!(
                        "cannot watch {} for new cgroups ({err}; fs.inotify.max_user_watches?): \
                         the hierarchy is walked every {} s instead",
                        dir.display(),
                        POLL_FALLBACK.as_secs()
                    );
                }
                self.dirs_incomplete = true;
            }
        }
    }

    /// Walks the hierarchy below `start` (`relative` below the root, `/`
    /// for all of it): watches every directory discovery needs and returns
    /// the cgroups that should be watched, by path.
    fn walk(&mut self, start: &str) -> Vec<(String, PathBuf)> {
        let mut found = Vec::new();
        let depth0 = start.split('/').filter(|s| !s.is_empty()).count();
        let mut pending = vec![(self.dir_of(start), start.to_string(), depth0)];
        while let Some((dir, relative, depth)) = pending.pop() {
            if !relevant(&self.options.cgroups, &relative) {
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
            if relative == "/" || !selects(&self.options.cgroups, &relative, children) {
                continue;
            }
            // A watched cgroup had its limit checked already (no read).
            if self.by_path.contains_key(&relative) || cgroupfs::has_limit(&dir, self.v2) {
                found.push((relative, dir));
            }
        }
        found
    }

    /// Walks the whole hierarchy: watches new cgroups and forgets removed
    /// ones; returns the end events of removed cgroups that were under
    /// pressure. Needed only at start-up and as a safety net: inotify
    /// reports the changes in between.
    pub fn rescan(&mut self) -> Vec<Change> {
        self.last_scan = Some(Instant::now());
        let wanted = self.walk("/");
        let wanted_paths: HashSet<&str> = wanted.iter().map(|(p, _)| p.as_str()).collect();
        let gone: Vec<u64> = self
            .by_path
            .iter()
            .filter(|(path, _)| !wanted_paths.contains(path.as_str()))
            .map(|(_, key)| *key)
            .collect();
        let mut changes = Vec::new();
        for key in gone {
            let removed = self.watched.get(&key).is_none_or(|w| !w.dir.exists());
            changes.extend(self.unwatch(key, removed));
        }
        for (path, dir) in wanted {
            if self.by_path.contains_key(&path) {
                continue;
            }
            self.watch_cgroup(path, dir);
        }
        // Watches of directories gone (their IN_IGNORED may still be queued).
        let stale: Vec<String> = self
            .dir_wds
            .keys()
            .filter(|path| !self.dir_of(path).is_dir())
            .cloned()
            .collect();
        for path in stale {
            if let Some(wd) = self.dir_wds.remove(&path) {
                self.dirs.remove(&wd);
            }
        }
        changes
    }

    /// The safety walk when it is due: every `rescan` (10 min), or every
    /// 5 s while a directory could not be watched.
    pub fn rescan_if_due(&mut self) -> Vec<Change> {
        let every = if self.dirs_incomplete {
            POLL_FALLBACK
        } else {
            self.options.rescan
        };
        match self.last_scan {
            Some(at) if at.elapsed() < every => Vec::new(),
            _ => {
                self.walks[if self.dirs_incomplete { 3 } else { 1 }] += 1;
                self.rescan()
            }
        }
    }

    /// Checks the cgroup at `relative` again (made, a child made or removed,
    /// its limit written): watches it when it should be and is not, stops
    /// when it is and should not be any more.
    fn evaluate(&mut self, relative: &str) -> Option<Change> {
        if relative == "/" || !relevant(&self.options.cgroups, relative) {
            return None;
        }
        let dir = self.dir_of(relative);
        let watched = self.by_path.get(relative).copied();
        if !dir.is_dir() {
            return watched.and_then(|key| self.unwatch(key, true));
        }
        // Children matter only for --pressure-cgroup (leaves).
        let children = if self.options.cgroups.is_empty() {
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
        let wanted = selects(&self.options.cgroups, relative, children)
            && cgroupfs::has_limit(&dir, self.v2);
        match (wanted, watched) {
            (true, None) => {
                self.watch_cgroup(relative.to_string(), dir);
                None
            }
            (false, Some(key)) => self.unwatch(key, false),
            _ => None,
        }
    }

    /// A directory `name` made in the watched directory `parent`: watches
    /// it and everything already below it (made before its watch was).
    fn on_dir_made(&mut self, parent: &str, name: &str) -> Vec<Change> {
        let relative = child_path(parent, name);
        let mut changes = Vec::new();
        for (path, dir) in self.walk(&relative) {
            if !self.by_path.contains_key(&path) {
                self.watch_cgroup(path, dir);
            }
        }
        if !self.options.cgroups.is_empty() {
            // The parent is no longer a leaf.
            changes.extend(self.evaluate(parent));
        }
        changes
    }

    /// The directory `name` removed from `parent`: forgets it and anything
    /// watched below it.
    fn on_dir_removed(&mut self, parent: &str, name: &str) -> Vec<Change> {
        let relative = child_path(parent, name);
        let below = format!("{relative}/");
        let inside = |path: &str| path == relative || path.starts_with(&below);
        let keys: Vec<u64> = self
            .by_path
            .iter()
            .filter(|(path, _)| inside(path))
            .map(|(_, key)| *key)
            .collect();
        let mut changes = Vec::new();
        for key in keys {
            changes.extend(self.unwatch(key, true));
        }
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
        if !self.options.cgroups.is_empty() {
            // The parent may be a leaf again.
            changes.extend(self.evaluate(parent));
        }
        changes
    }

    fn watch_cgroup(&mut self, path: String, dir: PathBuf) {
        let registered = if self.v2 {
            self.trigger(&dir.join("memory.pressure"))
        } else {
            cgroupfs::v1_pressure_level(&dir, &self.options.v1_level)
        };
        let notifier = match registered {
            Ok(n) => n,
            Err(err) => {
                if !self.v1_failed {
                    tracing::warn!(
                        "cannot watch memory pressure of {path} ({err}); cgroups where this \
                         fails are not watched"
                    );
                    self.v1_failed = true;
                }
                return;
            }
        };
        let wd = self.inotify.as_ref().and_then(|fd| {
            inotify::add_watch(fd, dir.join("memory.events"), WatchFlags::MODIFY).ok()
        });
        let cgroup_id = {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(&dir).ok().map(|m| m.ino())
        };
        let mut watched = Watched::new(
            PressureScope::Cgroup,
            Some(path),
            dir,
            cgroup_id,
            notifier,
            wd,
        );
        watched.last_hits = cgroupfs::limit_hits(&watched.dir, self.v2);
        self.add(watched);
    }

    fn unwatch(&mut self, key: u64, removed: bool) -> Option<Change> {
        let mut watched = self.remove(key)?;
        let episode = watched.episode.take()?;
        Some(Change::End(self.end_event(&watched, episode, removed)))
    }

    /// Waits until the kernel notifies, then handles every notification
    /// pending. Cancel-safe: nothing is read before the wait ends.
    pub async fn next(&mut self) -> Vec<Change> {
        loop {
            let rearm_at = self.disarmed.front().map(|&(at, _)| at);
            let readable = self.epoll.readable();
            let woke = match rearm_at {
                Some(at) => tokio::select! {
                    ready = readable => Some(ready),
                    () = tokio::time::sleep_until(at.into()) => None,
                },
                None => Some(readable.await),
            };
            match woke {
                Some(Ok(mut guard)) => guard.clear_ready(),
                Some(Err(_)) => return std::future::pending().await,
                None => {}
            }
            self.rearm_due(Instant::now());
            let changes = self.drain();
            if !changes.is_empty() {
                return changes;
            }
        }
    }

    /// Handles what epoll has ready, without waiting.
    pub fn drain(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut ready: Vec<epoll::Event> = Vec::with_capacity(256);
        loop {
            ready.clear();
            let zero = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            match epoll::wait(
                self.epoll.get_ref(),
                rustix::buffer::spare_capacity(&mut ready),
                Some(&zero),
            ) {
                Ok(0) => break,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(err) => {
                    tracing::warn!("pressure notifications cannot be read ({err})");
                    break;
                }
            }
            let now = Instant::now();
            for event in ready.iter().copied() {
                let (flags, data) = (event.flags, event.data);
                let key = data.u64();
                if key == INOTIFY_KEY {
                    let (keys, dir_changes) = self.read_inotify();
                    changes.extend(self.on_dir_changes(dir_changes));
                    for key in keys {
                        changes.extend(self.on_wake(key, now, false));
                    }
                } else {
                    let failed = flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP);
                    if let Some(w) = self.watched.get(&key) {
                        cgroupfs::consume(&w.notifier);
                        if !w.notifier.psi && !failed {
                            self.disarm(key, now);
                        }
                    }
                    if failed {
                        // A PSI trigger whose cgroup was removed.
                        changes.extend(self.unwatch(key, true));
                        continue;
                    }
                    changes.extend(self.on_wake(key, now, true));
                }
            }
            if ready.len() < ready.capacity() {
                break;
            }
        }
        changes
    }

    /// Takes `key`'s eventfd out of the epoll set until `now` +
    /// [`READ_EVERY`] (see `disarmed`). Called only on its readiness, which
    /// a disarmed fd does not report: a key is never in the queue twice.
    fn disarm(&mut self, key: u64, now: Instant) {
        let Some(watched) = self.watched.get(&key) else {
            return;
        };
        let quiet = epoll::modify(
            self.epoll.get_ref(),
            &watched.notifier.fd,
            epoll::EventData::new_u64(key),
            epoll::EventFlags::empty(),
        );
        if quiet.is_ok() {
            self.disarmed.push_back((now + READ_EVERY, key));
        }
    }

    /// Polls again the eventfds disarmed until `now` or before: one that
    /// notified in between is readable at once.
    fn rearm_due(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.disarmed.front() {
            if at > now {
                break;
            }
            self.disarmed.pop_front();
            let Some(watched) = self.watched.get(&key) else {
                continue; // unwatched meanwhile: its fd is closed
            };
            if let Err(err) = epoll::modify(
                self.epoll.get_ref(),
                &watched.notifier.fd,
                epoll::EventData::new_u64(key),
                epoll::EventFlags::IN,
            ) {
                tracing::warn!("cannot poll a pressure notification again ({err})");
            }
        }
    }

    /// Reads what inotify has: returns the watched cgroups whose
    /// `memory.events` changed, and the directory changes, in order.
    fn read_inotify(&mut self) -> (Vec<u64>, Vec<DirChange>) {
        let Some(fd) = &self.inotify else {
            return (Vec::new(), Vec::new());
        };
        let limit_file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        let mut keys = Vec::new();
        let mut dir_changes = Vec::new();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(fd.as_fd(), &mut buf);
        while let Ok(event) = reader.next() {
            let flags = event.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                dir_changes.push(DirChange::Overflow);
                continue;
            }
            if let Some(dir) = self.dirs.get(&event.wd()) {
                if flags.contains(ReadFlags::IGNORED) {
                    dir_changes.push(DirChange::Gone(event.wd()));
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
                dir_changes.push(change);
                continue;
            }
            if flags.contains(ReadFlags::IGNORED) {
                continue;
            }
            if let Some(key) = self.by_wd.get(&event.wd()) {
                if !keys.contains(key) {
                    keys.push(*key);
                }
            }
        }
        (keys, dir_changes)
    }

    /// Applies directory changes read from inotify.
    fn on_dir_changes(&mut self, dir_changes: Vec<DirChange>) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut overflow = false;
        for change in dir_changes {
            match change {
                DirChange::Made(parent, name) => changes.extend(self.on_dir_made(&parent, &name)),
                DirChange::Removed(parent, name) => {
                    changes.extend(self.on_dir_removed(&parent, &name))
                }
                DirChange::Limit(path) => changes.extend(self.evaluate(&path)),
                DirChange::Gone(wd) => {
                    if let Some(path) = self.dirs.remove(&wd) {
                        if self.dir_wds.get(&path) == Some(&wd) {
                            self.dir_wds.remove(&path);
                        }
                    }
                }
                DirChange::Overflow => overflow = true,
            }
        }
        if overflow {
            self.walks[2] += 1;
            tracing::warn!(
                "the inotify queue overflowed (fs.inotify.max_queued_events): walking the \
                 memory hierarchy once for cgroups made or removed meanwhile ({} time(s) so far)",
                self.walks[2]
            );
            changes.extend(self.rescan());
        }
        changes
    }

    /// A notification (`pressure`: the pressure notifier; else a
    /// `memory.events` change) for `key`.
    fn on_wake(&mut self, key: u64, now: Instant, pressure: bool) -> Option<Change> {
        let v2 = self.v2;
        let watched = self.watched.get_mut(&key)?;
        if watched.scope == PressureScope::Cgroup && !watched.dir.exists() {
            // The v1 eventfd is signalled when its cgroup is removed.
            return self.unwatch(key, true);
        }
        // A v1 eventfd's notification may be up to READ_EVERY old (see
        // `disarmed`): it counts, and this wake may warn, only if the
        // cgroup's counters still show it at its limit below; else a cgroup
        // whose hog just died was warned of with its memory already gone
        // (seen once in CI: usage 192 KiB of 64 MiB).
        let v1_eventfd = pressure && !v2 && watched.scope == PressureScope::Cgroup;
        let mut still_at_limit = false;
        if pressure {
            if !v1_eventfd {
                watched.last_notify = Some(now);
            }
            // Thrashing cgroups notify thousands of times a second: read
            // their files at most every 250 ms.
            if watched
                .last_read
                .is_some_and(|at| now.duration_since(at) < READ_EVERY)
            {
                return None;
            }
        }
        watched.last_read = Some(now);
        if watched.scope == PressureScope::Cgroup {
            let hits = cgroupfs::limit_hits(&watched.dir, v2);
            if let (Some(now_hits), Some(before)) = (hits, watched.last_hits) {
                if now_hits > before {
                    watched.hits_since_event += now_hits - before;
                    watched.last_rise = Some(now);
                    still_at_limit = true;
                }
            }
            if hits.is_some() {
                watched.last_hits = hits;
            }
            // The counters miss some limit hits (a v1 cgroup whose
            // memory+swap limit equals its memory limit fails its charges
            // without counting them on 6.x kernels): a notification with the
            // usage within a charge batch of the limit counts too.
            if pressure && cgroupfs::usage_and_limit(&watched.dir, v2).at_limit() {
                watched.last_rise = Some(now);
                still_at_limit = true;
            }
            if v1_eventfd && still_at_limit {
                watched.last_notify = Some(now);
            }
            // A limit hit (v2) also checks the stall share the trigger
            // watches, from memory.pressure's total: the trigger alone was
            // seen silent for seconds on a 6.12 VM while the cgroup stalled
            // half the time and its node-wide trigger fired every second.
            if !pressure && v2 && watched.stalled_since_last(now, self.psi) {
                watched.last_notify = Some(now);
            }
        } else if !pressure && watched.stalled_since_last(now, self.psi) {
            // The node's trigger was seen silent too (a whole 8 s stall on
            // a 6.12 VM, and on 5.10): `tick` checks its total every second.
            watched.last_notify = Some(now);
        }
        watched.sample_usage(now, v2);
        if v1_eventfd && !still_at_limit {
            return None;
        }
        let recent = |at: Option<Instant>| {
            at.is_some_and(|at| now.duration_since(at) < self.options.clear_after)
        };
        let at_limit = watched.scope == PressureScope::Node || recent(watched.last_rise);
        tracing::debug!(
            path = watched.path.as_deref().unwrap_or("(node)"),
            pressure,
            hits = watched.last_hits,
            at_limit,
            notified = recent(watched.last_notify),
            "pressure wake-up"
        );
        if !(recent(watched.last_notify) && at_limit) {
            return None;
        }
        let psi = watched.psi(v2);
        let episode = watched.episode.get_or_insert_with(|| Episode {
            since: now,
            since_wall: wall_time_of(now),
            last: now,
            last_wall: SystemTime::now(),
            last_event: None,
            events: 0,
            peak_some_avg10: None,
        });
        episode.last = now;
        episode.last_wall = SystemTime::now();
        if let Some(psi) = psi {
            episode.peak_some_avg10 = Some(
                episode
                    .peak_some_avg10
                    .map_or(psi.some_avg10, |p| p.max(psi.some_avg10)),
            );
        }
        self.active.insert(key);
        let due = episode
            .last_event
            .is_none_or(|at| now.duration_since(at) >= self.options.interval);
        if !due {
            return None;
        }
        episode.last_event = Some(now);
        episode.events += 1;
        let episode = episode.clone();
        let watched = self.watched.get_mut(&key)?;
        let hits = std::mem::take(&mut watched.hits_since_event);
        let watched = self.watched.get(&key)?;
        Some(Change::Pressure(
            self.pressure_event(watched, &episode, psi, hits, now),
        ))
    }

    /// Ends the episodes quiet for `clear_after`; forgets old ended ones.
    /// Also checks the node's PSI `some` total, in case its trigger missed
    /// a stall (see `stalled_since_last`).
    pub fn tick(&mut self) -> Vec<Change> {
        let now = Instant::now();
        let mut changes = Vec::new();
        if let Some(key) = self.node_key {
            changes.extend(self.on_wake(key, now, false));
        }
        let quiet: Vec<u64> = self
            .active
            .iter()
            .copied()
            .filter(|key| {
                self.watched
                    .get(key)
                    .and_then(|w| w.episode.as_ref())
                    .is_none_or(|e| now.duration_since(e.last) >= self.options.clear_after)
            })
            .collect();
        for key in quiet {
            self.active.remove(&key);
            let Some(mut watched) = self.watched.remove(&key) else {
                continue;
            };
            if let Some(episode) = watched.episode.take() {
                changes.push(Change::End(self.end_event(&watched, episode, false)));
            }
            self.watched.insert(key, watched);
        }
        self.ended
            .retain(|_, (at, _)| now.duration_since(*at) < KILL_JOIN);
        changes
    }

    /// The pressure that came before a kill at `at` in the cgroup at
    /// `path`: its current episode if that began before the kill (the
    /// kill's own reclaim often starts one a moment after it, before the
    /// kill is handled here), or one that ended within the last five
    /// minutes.
    pub fn before_kill(&self, path: &str, at: Instant) -> Option<PressureBefore> {
        if let Some(episode) = self
            .by_path
            .get(path)
            .and_then(|key| self.watched.get(key)?.episode.as_ref())
            .filter(|episode| episode.since <= at)
        {
            return Some(episode.before());
        }
        self.ended.get(path).map(|(_, before)| before.clone())
    }

    fn pressure_event(
        &self,
        watched: &Watched,
        episode: &Episode,
        psi: Option<Psi>,
        hits: u64,
        now: Instant,
    ) -> PressureEvent {
        let (memcg, memcg_stat, scene) = match watched.scope {
            PressureScope::Node => (
                cgroupfs::node_memory(
                    &fs::read_to_string(self.procfs.join("meminfo")).unwrap_or_default(),
                ),
                None,
                tasks::top_of_node(&self.procfs, TOP_TASKS),
            ),
            PressureScope::Cgroup => (
                cgroupfs::usage_and_limit(&watched.dir, self.v2),
                explain::read_memcg_stat(&watched.dir),
                tasks::top_of_cgroup(&watched.dir, &self.procfs, TOP_TASKS),
            ),
        };
        let growth = watched.growth(now);
        let duration = now.duration_since(episode.since).as_secs_f64();
        let mut event = PressureEvent {
            // The notification's time, the instant the interval is counted
            // from (not after the files were read: on a slow machine that
            // put two events closer together than the interval).
            time: rfc3339(wall_time_of(now)),
            node: self.node_name.clone(),
            scope: watched.scope,
            source: if watched.notifier.psi {
                PressureSource::Psi
            } else {
                PressureSource::PressureLevel
            },
            target: watched.target(),
            memcg,
            memcg_stat,
            psi,
            limit_hits: (watched.scope == PressureScope::Cgroup).then_some(hits),
            growth_bytes_per_minute: growth,
            since: rfc3339(episode.since_wall),
            duration_seconds: (duration * 10.0).round() / 10.0,
            tasks_total: scene.as_ref().map(|s| s.total),
            tasks: scene.map(|s| s.top),
            explanation: String::new(),
        };
        event.explanation = explain_pressure(&event);
        event
    }

    fn end_event(
        &mut self,
        watched: &Watched,
        episode: Episode,
        removed: bool,
    ) -> PressureEndEvent {
        if let Some(path) = &watched.path {
            self.ended
                .insert(path.clone(), (Instant::now(), episode.before()));
        }
        let duration = episode.last.duration_since(episode.since).as_secs_f64();
        PressureEndEvent {
            time: rfc3339(SystemTime::now()),
            node: self.node_name.clone(),
            scope: watched.scope,
            target: watched.target(),
            since: rfc3339(episode.since_wall),
            last: rfc3339(episode.last_wall),
            duration_seconds: (duration * 10.0).round() / 10.0,
            events: episode.events,
            peak_psi_some_avg10: episode.peak_some_avg10,
            cgroup_removed: removed,
        }
    }
}

impl Episode {
    /// What a kill that ends (or follows) this episode carries.
    fn before(&self) -> PressureBefore {
        PressureBefore {
            since: rfc3339(self.since_wall),
            peak_psi_some_avg10: self.peak_some_avg10,
        }
    }
}

impl Watched {
    /// Its cgroup as the events name it (all null for the node); the
    /// Kubernetes names are those the path gives, filled in later.
    fn target(&self) -> PressureTarget {
        let Some(path) = self.path.as_deref() else {
            return PressureTarget::default();
        };
        PressureTarget {
            cgroup_id: self.cgroup_id,
            cgroup_path: Some(path.to_string()),
            kubernetes: kubernetes_from_path(path),
            container: container_from(&cgroup_layout::parse(path)),
        }
    }

    fn new(
        scope: PressureScope,
        path: Option<String>,
        dir: PathBuf,
        cgroup_id: Option<u64>,
        notifier: Notifier,
        wd: Option<i32>,
    ) -> Self {
        Self {
            scope,
            path,
            dir,
            cgroup_id,
            notifier,
            wd,
            last_hits: None,
            hits_since_event: 0,
            last_rise: None,
            last_notify: None,
            last_read: None,
            last_stall: None,
            episode: None,
            usage: VecDeque::new(),
        }
    }

    /// True when the cgroup (or the node) stalled at least the trigger's
    /// share (`stall_us / window_us`) since the last call, over at least
    /// 100 ms; reads the `some total=` of `memory.pressure` (the node's
    /// `/proc/pressure/memory`), in µs.
    fn stalled_since_last(&mut self, now: Instant, (stall_us, window_us): (u64, u64)) -> bool {
        let Some(total) = self.psi(true).map(|psi| psi.some_total_us) else {
            return false;
        };
        let Some((at, before)) = self.last_stall else {
            self.last_stall = Some((now, total));
            return false;
        };
        let elapsed = now.duration_since(at).as_micros() as u64;
        if elapsed < 100_000 {
            return false;
        }
        self.last_stall = Some((now, total));
        let stalled = total.saturating_sub(before);
        stalled.saturating_mul(window_us) >= elapsed.saturating_mul(stall_us)
    }

    fn psi(&self, v2: bool) -> Option<Psi> {
        match self.scope {
            // `dir` is the node's PSI file itself.
            PressureScope::Node => cgroupfs::read_psi(&self.dir),
            PressureScope::Cgroup if v2 => cgroupfs::read_psi(&self.dir.join("memory.pressure")),
            PressureScope::Cgroup => None,
        }
    }

    fn usage_now(&self, v2: bool) -> Option<u64> {
        match self.scope {
            PressureScope::Node => {
                let meminfo = self.dir.parent()?.parent()?.join("meminfo");
                cgroupfs::node_memory(&fs::read_to_string(meminfo).ok()?).usage_bytes
            }
            PressureScope::Cgroup => cgroupfs::usage_and_limit(&self.dir, v2).usage_bytes,
        }
    }

    fn sample_usage(&mut self, now: Instant, v2: bool) {
        if self
            .usage
            .back()
            .is_some_and(|(at, _)| now.duration_since(*at) < Duration::from_secs(1))
        {
            return;
        }
        if let Some(usage) = self.usage_now(v2) {
            self.usage.push_back((now, usage));
        }
        while self
            .usage
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(61))
        {
            self.usage.pop_front();
        }
    }

    /// Usage growth over the last minute, scaled to a minute when the
    /// samples span at least 10 s; `None` before that.
    fn growth(&self, now: Instant) -> Option<i64> {
        let (first_at, first) = *self.usage.front()?;
        let (_, last) = *self.usage.back()?;
        let span = now.duration_since(first_at).as_secs_f64();
        if span < 10.0 {
            return None;
        }
        let delta = last as f64 - first as f64;
        Some((delta * 60.0 / span.min(60.0)).round() as i64)
    }
}

/// A change inotify reported on a watched directory of the hierarchy.
#[derive(Debug)]
enum DirChange {
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

/// The wall-clock time at which `Instant` `at` was (now, if in the future).
fn wall_time_of(at: Instant) -> SystemTime {
    let ago = Instant::now().saturating_duration_since(at);
    SystemTime::now()
        .checked_sub(ago)
        .unwrap_or_else(SystemTime::now)
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// One sentence: what fills the memory, how close to the limit, how fast it
/// grew, the biggest process, for how long.
pub fn explain_pressure(event: &PressureEvent) -> String {
    let what = match event.scope {
        PressureScope::Node => "node".to_string(),
        PressureScope::Cgroup => event
            .target
            .kubernetes
            .as_ref()
            .and_then(|k| {
                Some(format!(
                    "container {}/{}",
                    k.pod.as_ref()?,
                    k.container.as_ref()?
                ))
            })
            .or_else(|| event.target.cgroup_path.clone())
            .unwrap_or_else(|| "cgroup".into()),
    };
    let mut parts = Vec::new();
    match (event.memcg.usage_bytes, event.memcg.limit_bytes) {
        (Some(usage), Some(limit)) if limit > 0 => parts.push(format!(
            "{what} at {}% of its {} {} ({} used)",
            usage * 100 / limit,
            explain::size(limit),
            if event.scope == PressureScope::Node {
                "RAM"
            } else {
                "limit"
            },
            explain::size(usage)
        )),
        _ => parts.push(format!("{what} under memory pressure")),
    }
    if let Some(stat) = event.memcg_stat {
        let kinds = [
            ("anonymous memory", stat.anon.saturating_sub(stat.shmem)),
            ("page cache", stat.file.saturating_sub(stat.shmem)),
            ("tmpfs/shmem", stat.shmem),
            ("kernel memory", stat.kernel),
        ];
        if let Some((name, bytes)) = kinds.iter().max_by_key(|(_, b)| *b) {
            parts.push(format!("mostly {name} ({})", explain::size(*bytes)));
        }
    }
    if let Some(hits) = event.limit_hits.filter(|&h| h > 0) {
        parts.push(format!("limit hit {hits} times"));
    }
    if let Some(psi) = event.psi {
        parts.push(format!("stalled {:.0}% of the last 10 s", psi.some_avg10));
    }
    if let Some(growth) = event.growth_bytes_per_minute {
        if growth >= 0 {
            parts.push(format!(
                "grew {} in the last minute",
                explain::size(growth as u64)
            ));
        } else {
            parts.push(format!(
                "shrank {} in the last minute",
                explain::size(growth.unsigned_abs())
            ));
        }
    }
    if let Some(top) = event.tasks.as_ref().and_then(|t| t.first()) {
        parts.push(format!(
            "biggest process {} ({}) RSS {}",
            top.comm.as_deref().unwrap_or("?"),
            top.pid,
            explain::size(tasks::rss_total(top))
        ));
    }
    parts.push(format!("for {:.0} s so far", event.duration_seconds));
    parts.join(", ")
}

/// The memory hierarchy's root for pressure watching, and whether it is v2.
pub fn memory_hierarchy(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// What `oom-probe check` says about memory pressure watching on this node,
/// with the default `--pressure-*` flags. Every field is a sentence or
/// null; nothing here fails.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PressureCapability {
    /// How memory cgroups are watched (v1 `memory.pressure_level` eventfds,
    /// or v2 PSI triggers on `memory.pressure` and `memory.events` by
    /// inotify, with the trigger the kernel took); null when they cannot be.
    pub cgroups: Option<String>,
    /// Why memory cgroups cannot be watched; null when they can.
    pub cgroups_error: Option<String>,
    /// The node's `/proc/pressure/memory` trigger the kernel took; null
    /// when it took none.
    pub node: Option<String>,
    /// Why the node is not watched (`scope: node` events never come); null
    /// when it is.
    pub node_error: Option<String>,
    /// Which cgroups are watched and which are not.
    pub watched: String,
}

/// Writes the default PSI trigger to `file` and closes it again: the
/// trigger the kernel took (`some <stall us> <window us>` and why, when it
/// is not the default), or why none, in words and as the error the kernel
/// gave.
fn try_psi_trigger(
    file: &Path,
    options: &PressureOptions,
) -> Result<String, (String, std::io::Error)> {
    let stall = options.psi_stall.as_micros() as u64;
    let window = options.psi_window.as_micros() as u64;
    match cgroupfs::psi_trigger(file, stall, window) {
        Ok(_) => Ok(format!("\"some {stall} {window}\"")),
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            match cgroupfs::unprivileged_psi_trigger(stall, window) {
                Some((fit_stall, fit_window))
                    if cgroupfs::psi_trigger(file, fit_stall, fit_window).is_ok() =>
                {
                    Ok(format!(
                        "\"some {fit_stall} {fit_window}\" (the {} ms window is refused: no \
                         CAP_SYS_RESOURCE, and Linux 6.5+ gives unprivileged triggers 2 s \
                         windows only)",
                        window / 1000
                    ))
                }
                _ => Err((cgroupfs::psi_trigger_error(file, &err), err)),
            }
        }
        Err(err) => Err((cgroupfs::psi_trigger_error(file, &err), err)),
    }
}

/// The node PSI file to use when `file` (`<procfs>/pressure/memory`) gave
/// `err`: the agent's own `/proc/pressure/memory` when `err` is `EROFS`
/// (the host's /proc mounted read-only, as the DaemonSet mounts it) and
/// `file` is not that one already. System-wide PSI is one set of numbers
/// for the whole machine, whatever procfs or pid namespace shows it, and a
/// pod's own /proc is writable (`/proc/pressure` is not among the paths
/// container runtimes mask). `None` otherwise.
fn own_proc_fallback(file: &Path, err: &std::io::Error) -> Option<PathBuf> {
    let own = Path::new("/proc/pressure/memory");
    (err.raw_os_error() == Some(libc::EROFS) && file != own).then(|| own.to_path_buf())
}

/// Probes memory pressure watching: the memory hierarchy at `memory_root`
/// (v1 mount or v2 root; `None`: no memory controller) and
/// `<procfs>/pressure/memory`. Registers a notification on each and drops
/// it again.
pub fn capability(memory_root: Option<&Path>, procfs: &Path) -> PressureCapability {
    let options = PressureOptions::default();
    let (cgroups, cgroups_error) = match memory_root {
        None => (
            None,
            Some("no memory cgroup controller is mounted".to_string()),
        ),
        Some(root) if memory_hierarchy(root) => {
            match try_psi_trigger(&root.join("memory.pressure"), &options) {
                Ok(trigger) => (
                    Some(format!(
                        "cgroup v2: PSI trigger {trigger} on each cgroup's memory.pressure, \
                         memory.events max/high by inotify"
                    )),
                    None,
                ),
                Err((why, _)) => (None, Some(why)),
            }
        }
        Some(root) => match cgroupfs::v1_pressure_level(root, &options.v1_level) {
            Ok(_) => (
                Some(format!(
                    "cgroup v1: memory.pressure_level \"{}\" eventfds (cgroup.event_control), \
                     memory.failcnt rising; no PSI per cgroup on v1, so psi fields are null",
                    options.v1_level
                )),
                None,
            ),
            Err(err) => (
                None,
                Some(format!(
                    "{}: cannot register a memory.pressure_level eventfd ({err})",
                    root.display()
                )),
            ),
        },
    };
    let node_file = procfs.join("pressure/memory");
    let (node, node_error) = match try_psi_trigger(&node_file, &options) {
        Ok(trigger) => (
            Some(format!("PSI trigger {trigger} on {}", node_file.display())),
            None,
        ),
        // The same fallback as the watcher's: the host /proc mounted
        // read-only, the agent's own /proc (node PSI is global).
        Err((why, err)) => match own_proc_fallback(&node_file, &err) {
            Some(own) => match try_psi_trigger(&own, &options) {
                Ok(trigger) => (
                    Some(format!(
                        "PSI trigger {trigger} on {} ({} is read-only; node PSI is global, \
                         the same through any procfs)",
                        own.display(),
                        node_file.display()
                    )),
                    None,
                ),
                Err((own_why, _)) => (None, Some(format!("{why}; {own_why}"))),
            },
            None => (None, Some(why)),
        },
    };
    PressureCapability {
        cgroups,
        cgroups_error,
        node,
        node_error,
        watched: "the memory cgroups of containers (paths naming a container id) that have a \
                  limit of their own, or with --pressure-cgroup the leaf cgroups with a limit \
                  under those paths, found at once (inotify on the hierarchy's directories, a \
                  safety walk every 10 min); not watched: cgroups without a limit, \
                  pod and slice parents, anything else"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
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

    fn count_dirs(watcher: &mut PressureWatcher, want: usize) -> usize {
        // inotify events are queued synchronously with mkdir/rmdir.
        for _ in 0..50 {
            let _ = watcher.drain();
            if watcher.watched_dirs() == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        watcher.watched_dirs()
    }

    /// Discovery on an ordinary file system (no cgroups: nothing to watch
    /// for pressure, but the directory watches follow mkdir and rmdir,
    /// nested ones made at once included, without a walk).
    #[test]
    fn directories_made_and_removed_are_followed_without_a_walk() {
        let root = std::env::temp_dir().join(format!("oom-probe-dirs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("keep")).unwrap();
        fs::create_dir_all(root.join("elsewhere")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _inside = runtime.enter();
        let options = PressureOptions {
            node: false,
            cgroups: prefixes(&["/keep"]),
            ..PressureOptions::default()
        };
        let mut watcher =
            PressureWatcher::new(options, "n".into(), root.clone(), false, "/proc".into()).unwrap();
        // The root and /keep; not /elsewhere.
        assert_eq!(watcher.watched_dirs(), 2);
        fs::create_dir_all(root.join("keep/a/b/c")).unwrap();
        fs::create_dir_all(root.join("elsewhere/x")).unwrap();
        assert_eq!(count_dirs(&mut watcher, 5), 5, "after mkdir -p keep/a/b/c");
        fs::remove_dir(root.join("keep/a/b/c")).unwrap();
        fs::remove_dir(root.join("keep/a/b")).unwrap();
        assert_eq!(count_dirs(&mut watcher, 3), 3, "after removing b and c");
        assert_eq!(watcher.walks(), [1, 0, 0, 0], "only the start-up walk");
        let _ = fs::remove_dir_all(&root);
    }
}
