//! `memory_pressure`: the warning before the OOM killer acts. Watches the
//! memory cgroups of containers (or those under `--pressure-cgroup`) and the
//! node through the kernel's own notifications, never by reading every
//! cgroup per tick, and turns them into events. In data-flow order:
//!
//! 1. [`discovery`] learns which cgroups to watch from inotify on the
//!    hierarchy's directories (a walk at start-up and as a safety net).
//! 2. [`register`] registers each one's notification (v1
//!    `memory.pressure_level` eventfd, v2 and node PSI trigger) through
//!    [`cgroupfs`], which knows the kernel's files; [`registry`] keeps the
//!    watches and polls their notifications on one epoll instance (v1
//!    eventfds rest 250 ms after each one).
//! 3. A wake-up is read ([`read`]) and judged by the watch's pure state
//!    machine ([`episode`]): at its limit (counter rising; the node: short
//!    of memory, [`node`]), notified (the PSI checks honour the trigger's
//!    window, [`stall`]), which episode, is a warning due, did it end.
//! 4. [`events`] builds `memory_pressure` (at most one per interval),
//!    `memory_pressure_end` (after `clear_after` without a notification)
//!    and a kill's `pressure_before`; [`explanation`] is its sentence; a
//!    node's names the cgroups that stall ([`stalling`]).
//!
//! [`options`] are the `--pressure-*` flags; [`capability`] is what
//! `oom-probe check` says. This module is the thin shell that joins them:
//! [`PressureWatcher`], owned by the event loop.

pub mod capability;
pub mod cgroupfs;
pub mod discovery;
pub mod episode;
pub mod events;
pub mod explanation;
pub mod node;
pub mod options;
pub mod read;
pub mod register;
pub mod registry;
pub mod stall;
pub mod stalling;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::event::{
    PressureBefore, PressureEndEvent, PressureEvent, PressureScope, StallingCgroup,
};

pub use capability::{capability, PressureCapability};
pub use cgroupfs::memory_hierarchy;
pub use events::TOP_TASKS;
pub use explanation::explain_pressure;
pub use options::{PressureOptions, V1Level};

use discovery::{Discovery, Found, Walk, WatchedPaths};
use episode::{Kind, Observation, Rules, Tracker, Wake};
use events::{wall_time_of, EventBuilder};
use register::Registrar;
use registry::{Registry, Watched, INOTIFY_KEY};

/// What a wake-up produced.
pub enum Change {
    /// A `memory_pressure` warning.
    Pressure(Box<PressureEvent>),
    /// A `memory_pressure_end`.
    End(Box<PressureEndEvent>),
}

/// Watches memory pressure; owned by the event loop.
pub struct PressureWatcher {
    options: PressureOptions,
    v2: bool,
    procfs: PathBuf,
    /// The walks naming the cgroups that stall with the node (v2).
    stalling: Option<stalling::StallingWalk>,
    registry: Registry,
    discovery: Discovery,
    events: EventBuilder,
    registrar: Registrar,
    /// The node's watch, when its PSI trigger was taken.
    node_key: Option<u64>,
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
        let registry = Registry::new()?;
        let discovery = Discovery::new(root.clone(), v2, options.cgroups.clone(), options.rescan)?;
        registry.add_inotify(discovery.fd())?;
        let mut watcher = Self {
            registrar: Registrar::new(&options, v2),
            stalling: v2.then(|| stalling::StallingWalk::new(root.clone())),
            options,
            v2,
            events: EventBuilder::new(node_name, procfs.clone(), v2),
            procfs,
            registry,
            discovery,
            node_key: None,
        };
        if watcher.options.node {
            watcher.watch_node();
        }
        watcher.rescan(Walk::StartUp);
        Ok(watcher)
    }

    /// How many cgroups (and the node) are watched.
    pub fn watched(&self) -> usize {
        self.registry.len()
    }

    /// Walks of the hierarchy so far: `[start-up, safety, inotify queue
    /// overflow, polling fallback]`. Only the first is expected; the
    /// second comes every `rescan` (10 min by default).
    pub fn walks(&self) -> [u64; 4] {
        self.discovery.walks()
    }

    /// How many directories of the hierarchy inotify watches.
    pub fn watched_dirs(&self) -> usize {
        self.discovery.watched_dirs()
    }

    /// True when the node's `/proc/pressure/memory` has a trigger.
    pub fn node_watched(&self) -> bool {
        self.node_key.is_some()
    }

    /// The PSI trigger in use, `(stall, window)`.
    pub fn psi_trigger(&self) -> (Duration, Duration) {
        let (stall, window) = self.registrar.psi();
        (Duration::from_micros(stall), Duration::from_micros(window))
    }

    fn watch_node(&mut self) {
        let Some((notifier, file)) = self.registrar.node(&self.procfs) else {
            return;
        };
        self.node_key = self.registry.add(Watched {
            path: None,
            dir: file,
            cgroup_id: None,
            notifier,
            wd: None,
            tracker: Tracker::new(Kind::Node, None),
        });
    }

    fn watch_cgroup(&mut self, path: String, dir: PathBuf) {
        let Some(notifier) = self.registrar.cgroup(&path, &dir) else {
            return;
        };
        let wd = self.discovery.watch_file(&dir.join("memory.events"));
        let cgroup_id = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&dir).ok().map(|m| m.ino())
        };
        let kind = if self.v2 {
            Kind::CgroupV2
        } else {
            Kind::CgroupV1
        };
        let hits = cgroupfs::limit_hits(&dir, self.v2);
        self.registry.add(Watched {
            path: Some(path),
            dir,
            cgroup_id,
            notifier,
            wd,
            tracker: Tracker::new(kind, hits),
        });
    }

    /// Stops watching `key` (its fds close: the kernel drops the eventfd
    /// registration or the PSI trigger with them); the end of its episode,
    /// if it was in one.
    fn unwatch(&mut self, key: u64, removed: bool) -> Option<Change> {
        let mut watched = self.registry.remove(key)?;
        if let Some(wd) = watched.wd {
            self.discovery.forget_file(wd);
        }
        let episode = watched.tracker.take_episode()?;
        Some(Change::End(Box::new(
            self.events.end_event(&watched, &episode, removed),
        )))
    }

    /// Applies what discovery found.
    fn apply(&mut self, found: Vec<Found>) -> Vec<Change> {
        let mut changes = Vec::new();
        for found in found {
            match found {
                Found::Watch { path, dir } => {
                    if self.registry.key_of_path(&path).is_none() {
                        self.watch_cgroup(path, dir);
                    }
                }
                Found::Unwatch { path, removed } => {
                    if let Some(key) = self.registry.key_of_path(&path) {
                        changes.extend(self.unwatch(key, removed));
                    }
                }
            }
        }
        changes
    }

    /// Walks the whole hierarchy: watches new cgroups and forgets removed
    /// ones; returns the end events of removed cgroups that were under
    /// pressure.
    fn rescan(&mut self, walk: Walk) -> Vec<Change> {
        let found = self.discovery.rescan(walk, &self.registry);
        self.apply(found)
    }

    /// The safety walk when it is due: every `rescan` (10 min), or every
    /// 5 s while a directory could not be watched.
    pub fn rescan_if_due(&mut self) -> Vec<Change> {
        let found = self.discovery.rescan_if_due(&self.registry);
        self.apply(found)
    }

    /// Waits until the kernel notifies, then handles every notification
    /// pending. Cancel-safe: nothing is read before the wait ends.
    pub async fn next(&mut self) -> Vec<Change> {
        loop {
            self.registry.wait().await;
            self.registry.rearm_due(Instant::now());
            let changes = self.drain();
            if !changes.is_empty() {
                return changes;
            }
        }
    }

    /// Handles what epoll has ready, without waiting.
    pub fn drain(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut ready = Vec::with_capacity(256);
        while self.registry.ready(&mut ready) {
            let now = Instant::now();
            for event in ready.iter().copied() {
                let (flags, data) = (event.flags, event.data);
                let key = data.u64();
                if key == INOTIFY_KEY {
                    changes.extend(self.on_inotify(now));
                    continue;
                }
                let failed = flags.intersects(
                    rustix::event::epoll::EventFlags::ERR | rustix::event::epoll::EventFlags::HUP,
                );
                if let Some(w) = self.registry.get(key) {
                    cgroupfs::consume(&w.notifier);
                    if !w.notifier.psi && !failed {
                        self.registry.disarm(key, now);
                    }
                }
                if failed {
                    // A PSI trigger whose cgroup was removed.
                    changes.extend(self.unwatch(key, true));
                    continue;
                }
                changes.extend(self.on_wake(key, now, Wake::Notified));
            }
            if ready.len() < ready.capacity() {
                break;
            }
        }
        changes
    }

    /// What inotify has: directory changes applied one by one (a walk
    /// after them if its queue overflowed), then the cgroups whose
    /// `memory.events` changed checked.
    fn on_inotify(&mut self, now: Instant) -> Vec<Change> {
        let read = self.discovery.read();
        let keys: Vec<u64> = read
            .files
            .iter()
            .filter_map(|&wd| self.registry.key_of_wd(wd))
            .collect();
        let mut changes = Vec::new();
        let mut overflow = false;
        for change in read.dirs {
            if change == discovery::DirChange::Overflow {
                overflow = true;
                continue;
            }
            let found = self.discovery.on_change(change, &self.registry);
            changes.extend(self.apply(found));
        }
        if overflow {
            self.discovery.overflowed();
            changes.extend(self.rescan(Walk::Overflow));
        }
        for key in keys {
            changes.extend(self.on_wake(key, now, Wake::Check));
        }
        changes
    }

    /// A wake-up of `key` at `now`: reads what its state machine asks for,
    /// lets it decide, and builds the warning when one is due.
    fn on_wake(&mut self, key: u64, now: Instant, wake: Wake) -> Option<Change> {
        let rules = Rules {
            node_available_percent: self.options.node_available_percent,
            interval: self.options.interval,
            clear_after: self.options.clear_after,
            psi_trigger: self.registrar.psi(),
        };
        let watched = self.registry.get_mut(key)?;
        if watched.scope() == PressureScope::Cgroup && !watched.dir.exists() {
            // The v1 eventfd is signalled when its cgroup is removed.
            return self.unwatch(key, true);
        }
        let reads = watched.tracker.wake(wake, now)?;
        let sample = read::sample(watched.tracker.kind(), &watched.dir, reads);
        let observation = watched
            .tracker
            .observe(wake, sample, now, wall_time_of(now), &rules);
        let (at_limit, notified) = match &observation {
            Observation::Stale => return None,
            Observation::Calm { at_limit, notified } => (*at_limit, *notified),
            Observation::Pressure { .. } => (true, true),
        };
        tracing::debug!(
            path = watched.path.as_deref().unwrap_or("(node)"),
            pressure = wake == Wake::Notified,
            hits = sample.hits,
            at_limit,
            notified,
            "pressure wake-up"
        );
        let Observation::Pressure {
            warning: Some(warning),
        } = observation
        else {
            return None;
        };
        let stalling = match self.registry.get(key)?.scope() {
            PressureScope::Node => self.stalling(),
            PressureScope::Cgroup => Vec::new(),
        };
        let watched = self.registry.get(key)?;
        Some(Change::Pressure(Box::new(
            self.events.pressure_event(watched, &warning, now, stalling),
        )))
    }

    /// The cgroups that stall as the node does: on v2 the deepest whose PSI
    /// says so, anywhere in the hierarchy; on v1 (no PSI per cgroup) the
    /// watched ones in a pressure episode, the latest first.
    fn stalling(&mut self) -> Vec<StallingCgroup> {
        if let Some(walk) = &mut self.stalling {
            let root = walk.root().to_path_buf();
            return walk
                .walk(Instant::now())
                .into_iter()
                .map(|(path, percent)| {
                    let dir = root.join(path.trim_start_matches('/'));
                    events::stalling_cgroup(path, &dir, Some(percent))
                })
                .collect();
        }
        let mut in_episode: Vec<(Instant, String, PathBuf)> = self
            .registry
            .iter_mut()
            .filter_map(|(_, w)| {
                let last = w.tracker.episode()?.last;
                Some((last, w.path.clone()?, w.dir.clone()))
            })
            .collect();
        in_episode.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        in_episode
            .into_iter()
            .take(stalling::STALLING_MAX)
            .map(|(_, path, dir)| events::stalling_cgroup(path, &dir, None))
            .collect()
    }

    /// Ends the episodes quiet for `clear_after`; forgets old ended ones.
    /// Also checks the node: its shortage, and its PSI `some` total in case
    /// its trigger missed a stall; while it is stalled or short, reads the
    /// cgroups' stall (v2).
    pub fn tick(&mut self) -> Vec<Change> {
        let now = Instant::now();
        let mut changes = Vec::new();
        let clear_after = self.options.clear_after;
        if let Some(key) = self.node_key {
            changes.extend(self.on_wake(key, now, Wake::Check));
            // The cgroups' stall totals, read while the node is stalled or
            // short, so that a warning compares them over a second.
            let engaged = self
                .registry
                .get(key)
                .is_some_and(|w| w.tracker.engaged(now, clear_after));
            if let Some(walk) = &mut self.stalling {
                if engaged {
                    walk.walk(now);
                } else {
                    walk.forget();
                }
            }
        }
        for (_, watched) in self.registry.iter_mut() {
            if let Some(episode) = watched.tracker.end_if_quiet(now, clear_after) {
                let end = self.events.end_event(watched, &episode, false);
                changes.push(Change::End(Box::new(end)));
            }
        }
        self.events.expire(now);
        changes
    }

    /// The pressure that came before a kill at `at` in the cgroup at
    /// `path`: its current episode if that began before the kill (the
    /// kill's own reclaim often starts one a moment after it, before the
    /// kill is handled here), or one that ended within the last five
    /// minutes.
    pub fn before_kill(&self, path: &str, at: Instant) -> Option<PressureBefore> {
        let current = self
            .registry
            .key_of_path(path)
            .and_then(|key| self.registry.get(key)?.tracker.episode());
        self.events.before_kill(path, current, at)
    }
}

impl WatchedPaths for Registry {
    fn is_watched(&self, path: &str) -> bool {
        self.key_of_path(path).is_some()
    }

    fn watched_paths(&self) -> Vec<String> {
        self.paths().map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        use std::fs;
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
            cgroups: vec!["/keep".to_string()],
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
