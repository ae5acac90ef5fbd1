//! The events a watch's episode makes: `memory_pressure` (with the scene
//! read at that moment: usage, `memory.stat`, the biggest processes; for
//! the node its shortage and the cgroups that stall),
//! `memory_pressure_end`, and the `pressure_before` a kill of the same
//! cgroup carries (from the episode under way, or one ended in the last
//! five minutes).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use super::{
    cgroupfs,
    episode::{Episode, Warning},
    explanation::explain_pressure,
    registry::Watched,
};
use crate::{
    enrich::{cgroup_layout, container_from, explain, kubernetes_from_path, tasks},
    event::{
        PressureBefore, PressureEndEvent, PressureEvent, PressureScope, PressureSource,
        PressureTarget, StallingCgroup,
    },
};

/// How many processes a `memory_pressure` event lists.
pub const TOP_TASKS: usize = 5;

/// How long an ended episode is still joined to a kill of its cgroup (the
/// kill itself often ends the pressure a moment before it is reported).
const KILL_JOIN: Duration = Duration::from_secs(300);

/// Builds the events, and remembers the episodes that ended for the kills
/// that follow them.
pub struct EventBuilder {
    node_name: String,
    procfs: PathBuf,
    v2: bool,
    /// Ended episodes by cgroup path, and when they ended.
    ended: HashMap<String, (Instant, PressureBefore)>,
}

impl EventBuilder {
    /// Events of node `node_name`, whose processes are read from `procfs`,
    /// on a v2 (`v2`) or v1 memory hierarchy.
    pub fn new(node_name: String, procfs: PathBuf, v2: bool) -> Self {
        Self {
            node_name,
            procfs,
            v2,
            ended: HashMap::new(),
        }
    }

    /// The `memory_pressure` of `warning` for `watched`, due at `now`;
    /// reads usage and limit, `memory.stat` and the biggest processes. The
    /// node's names `stalling`, the cgroups that stall (see
    /// [`stalling_cgroup`]; ignored for a cgroup).
    pub fn pressure_event(
        &self,
        watched: &Watched,
        warning: &Warning,
        now: Instant,
        stalling: Vec<StallingCgroup>,
    ) -> PressureEvent {
        let scope = watched.scope();
        let (memcg, memcg_stat, scene) = match scope {
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
        let episode = &warning.episode;
        let duration = now.duration_since(episode.since).as_secs_f64();
        let mut event = PressureEvent {
            // The notification's time, the instant the interval is counted
            // from (not after the files were read: on a slow machine that
            // put two events closer together than the interval).
            time: rfc3339(wall_time_of(now)),
            node: self.node_name.clone(),
            scope,
            source: if watched.notifier.psi {
                PressureSource::Psi
            } else {
                PressureSource::PressureLevel
            },
            target: target(watched),
            memcg,
            memcg_stat,
            psi: warning.psi,
            limit_hits: (scope == PressureScope::Cgroup).then_some(warning.hits),
            growth_bytes_per_minute: warning.growth,
            since: rfc3339(episode.since_wall),
            duration_seconds: (duration * 10.0).round() / 10.0,
            tasks_total: scene.as_ref().map(|s| s.total),
            tasks: scene.map(|s| s.top),
            explanation: String::new(),
            shortage: warning.shortage,
            stalling: (scope == PressureScope::Node).then_some(stalling),
        };
        event.explanation = explain_pressure(&event);
        event
    }

    /// The `memory_pressure_end` of `episode` of `watched` (`removed`: its
    /// cgroup is gone); the episode is kept for a kill that follows.
    pub fn end_event(
        &mut self,
        watched: &Watched,
        episode: &Episode,
        removed: bool,
    ) -> PressureEndEvent {
        if let Some(path) = &watched.path {
            self.ended
                .insert(path.clone(), (Instant::now(), before(episode)));
        }
        let duration = episode.last.duration_since(episode.since).as_secs_f64();
        PressureEndEvent {
            time: rfc3339(SystemTime::now()),
            node: self.node_name.clone(),
            scope: watched.scope(),
            target: target(watched),
            since: rfc3339(episode.since_wall),
            last: rfc3339(episode.last_wall),
            duration_seconds: (duration * 10.0).round() / 10.0,
            events: episode.events,
            peak_psi_some_avg10: episode.peak_some_avg10,
            cgroup_removed: removed,
        }
    }

    /// The pressure that came before a kill at `at` in the cgroup at
    /// `path`: its `current` episode if that began before the kill (the
    /// kill's own reclaim often starts one a moment after it, before the
    /// kill is handled here), or one that ended within the last five
    /// minutes.
    pub fn before_kill(
        &self,
        path: &str,
        current: Option<&Episode>,
        at: Instant,
    ) -> Option<PressureBefore> {
        if let Some(episode) = current.filter(|episode| episode.since <= at) {
            return Some(before(episode));
        }
        self.ended.get(path).map(|(_, before)| before.clone())
    }

    /// Forgets the episodes that ended longer than five minutes before
    /// `now`.
    pub fn expire(&mut self, now: Instant) {
        self.ended
            .retain(|_, (at, _)| now.duration_since(*at) < KILL_JOIN);
    }
}

/// What a kill that ends (or follows) `episode` carries.
fn before(episode: &Episode) -> PressureBefore {
    PressureBefore {
        since: rfc3339(episode.since_wall),
        peak_psi_some_avg10: episode.peak_some_avg10,
    }
}

/// The cgroup as the events name it (all null for the node); the
/// Kubernetes names are those the path gives, filled in later.
fn target(watched: &Watched) -> PressureTarget {
    let Some(path) = watched.path.as_deref() else {
        return PressureTarget::default();
    };
    PressureTarget {
        cgroup_id: watched.cgroup_id,
        cgroup_path: Some(path.to_string()),
        kubernetes: kubernetes_from_path(path),
        container: container_from(&cgroup_layout::parse(path)),
    }
}

/// A cgroup that stalls as the node does: `path` below the hierarchy's
/// root, its directory `dir` (its id is the directory's inode), and the
/// percent of the time it stalled (v2).
pub fn stalling_cgroup(path: String, dir: &Path, stall_percent: Option<f64>) -> StallingCgroup {
    use std::os::unix::fs::MetadataExt;
    StallingCgroup {
        target: PressureTarget {
            cgroup_id: fs::metadata(dir).ok().map(|m| m.ino()),
            kubernetes: kubernetes_from_path(&path),
            container: container_from(&cgroup_layout::parse(&path)),
            cgroup_path: Some(path),
        },
        stall_percent,
    }
}

/// The wall-clock time at which `Instant` `at` was (now, if in the future).
pub fn wall_time_of(at: Instant) -> SystemTime {
    let ago = Instant::now().saturating_duration_since(at);
    SystemTime::now()
        .checked_sub(ago)
        .unwrap_or_else(SystemTime::now)
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pressure::episode::{Kind, Tracker};

    fn watched(path: &str) -> Watched {
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        Watched {
            path: Some(path.to_string()),
            dir: PathBuf::from("/nonexistent").join(path.trim_start_matches('/')),
            cgroup_id: Some(42),
            notifier: cgroupfs::Notifier { fd, psi: false },
            wd: None,
            tracker: Tracker::new(Kind::CgroupV1, None),
        }
    }

    fn episode(since: Instant, seconds: f64) -> Episode {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Episode {
            since,
            since_wall: wall,
            last: since + Duration::from_secs_f64(seconds),
            last_wall: wall + Duration::from_secs_f64(seconds),
            last_event: Some(since),
            events: 3,
            peak_some_avg10: None,
        }
    }

    #[test]
    fn an_end_carries_the_episode_and_is_joined_to_a_kill_that_follows() {
        let mut builder = EventBuilder::new("node-1".into(), "/proc".into(), false);
        let now = Instant::now();
        let watched = watched("/oom-probe/test");
        let episode = episode(now, 12.34);
        assert_eq!(builder.before_kill("/oom-probe/test", None, now), None);
        let end = builder.end_event(&watched, &episode, true);
        assert_eq!(end.node, "node-1");
        assert_eq!(end.scope, PressureScope::Cgroup);
        assert_eq!(end.target.cgroup_path.as_deref(), Some("/oom-probe/test"));
        assert_eq!(end.target.cgroup_id, Some(42));
        assert_eq!(end.since, "2023-11-14T22:13:20.000Z");
        assert_eq!(end.last, "2023-11-14T22:13:32.340Z");
        assert_eq!(end.duration_seconds, 12.3);
        assert_eq!(end.events, 3);
        assert!(end.cgroup_removed);
        let before = builder
            .before_kill("/oom-probe/test", None, now)
            .expect("ended within five minutes");
        assert_eq!(before.since, end.since);
        assert_eq!(builder.before_kill("/elsewhere", None, now), None);
        builder.expire(Instant::now() + KILL_JOIN);
        assert_eq!(builder.before_kill("/oom-probe/test", None, now), None);
    }

    #[test]
    fn a_kill_carries_the_episode_under_way_only_if_it_began_before_the_kill() {
        let builder = EventBuilder::new("n".into(), "/proc".into(), true);
        let since = Instant::now();
        let mut current = episode(since, 1.0);
        current.peak_some_avg10 = Some(42.5);
        let before = builder
            .before_kill("/c", Some(&current), since)
            .expect("began at the kill");
        assert_eq!(before.peak_psi_some_avg10, Some(42.5));
        let earlier = since - Duration::from_millis(1);
        assert_eq!(builder.before_kill("/c", Some(&current), earlier), None);
    }
}
