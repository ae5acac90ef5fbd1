//! One watch's pressure as a state machine, fed what was read and the clock,
//! with no I/O: is the cgroup (or the node) at its limit and notified, which
//! episode is it in, is a `memory_pressure` due, has the episode ended.
//!
//! A wake-up is two steps. [`Tracker::wake`] says whether to read at all (a
//! cgroup's files are read at most every [`READ_EVERY`]) and what; the shell
//! reads that ([`super::read`]) and hands the [`Sample`] to
//! [`Tracker::observe`], which decides. [`Tracker::end_if_quiet`] ends the
//! episode after `clear_after` without a qualifying wake-up.
//!
//! The rules, in the order `observe` applies them:
//! - *at its limit*: the limit-hit counter rose since the last read, or a
//!   notification came with the usage within a charge batch of the limit
//!   ([`AtLimit`]); the node when it is short ([`super::node`]:
//!   `MemAvailable` low, or direct reclaim since the last read), never
//!   from PSI alone (a container reclaiming at its own limit stalls the
//!   node's PSI too). It counts for `clear_after`.
//! - *notified*: its notifier fired (a PSI trigger counts even when its
//!   read is skipped), or a check found the PSI `some` total grown by the
//!   trigger's share over at least the trigger's window
//!   ([`super::stall`]; the triggers were seen silent through whole
//!   stalls). It counts for `clear_after`.
//! - a v1 eventfd's notification may be up to [`READ_EVERY`] old (its fd
//!   is out of the epoll set that long after each one): it counts, and its
//!   wake-up may warn, only when the same read shows the cgroup still at
//!   its limit (CI once warned of a cgroup whose hog had died, 192 KiB of
//!   64 MiB).
//! - notified and at its limit: the episode begins (or goes on); a
//!   `memory_pressure` is due at its start and then at most once per
//!   `interval`, carrying the limit hits counted since the last one.
//! - a cgroup's `memory_pressure` is due only when the same read shows it
//!   at its limit *now* (its counter rose, or its usage is within a charge
//!   batch of the limit) and not drained below half of it: a PSI trigger
//!   fires on a window that may end after the hog died (a 6.1 VM in CI
//!   warned of 92 KiB of 64 MiB, 4 s after the hog's end). The episode
//!   still goes on until `clear_after` of quiet. Likewise the node's is due
//!   only when the same read finds it short.

use std::{
    collections::VecDeque,
    time::{Duration, Instant, SystemTime},
};

use super::{
    cgroupfs::AtLimit,
    node::{mem_available_low, NodeMemory, ShortageJudge},
    stall::StallHistory,
};
use crate::event::{Memcg, NodeShortage, Psi};

/// A cgroup's files are read at most this often, however often it notifies;
/// a v1 eventfd that notified is not polled again before this either.
pub const READ_EVERY: Duration = Duration::from_millis(250);

/// A new usage sample at most this often.
const USAGE_EVERY: Duration = Duration::from_secs(1);

/// Usage samples are kept this long (a minute, and a second of slack).
const USAGE_KEPT: Duration = Duration::from_secs(61);

/// What is watched, as far as the rules differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The node (`/proc/pressure/memory`): at its limit when short of
    /// memory, no counter.
    Node,
    /// A cgroup v1 memory cgroup: `memory.pressure_level` eventfd,
    /// `memory.failcnt`, no PSI.
    CgroupV1,
    /// A cgroup v2 memory cgroup: PSI trigger, `memory.events`, PSI.
    CgroupV2,
}

/// What woke a watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Its notifier fired: a v1 eventfd or a PSI trigger.
    Notified,
    /// A check without a notification: its `memory.events` changed (v2),
    /// or the node's every-second check.
    Check,
}

/// What a wake-up must read before [`Tracker::observe`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// The limit-hit counter (cgroups).
    pub hits: bool,
    /// Usage and limit (every wake-up of a cgroup, which comes from its
    /// notifier or a change of its limit-hit counter, never a poll; the
    /// node's when a usage sample is due).
    pub memcg: bool,
    /// The PSI file (v2 cgroups and the node).
    pub psi: bool,
    /// `MemAvailable` and the direct-reclaim counter (the node, every read).
    pub node: bool,
}

/// What was read at a wake-up; `None` where it was not read or could not be.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Limit hits so far: v1 `memory.failcnt` (+ `memory.memsw.failcnt`),
    /// v2 `memory.events` `max` + `high`.
    pub hits: Option<u64>,
    /// Usage and limit, bytes (the node: RAM in use of MemTotal).
    pub memcg: Option<Memcg>,
    /// PSI (`memory.pressure`, the node's `/proc/pressure/memory`).
    pub psi: Option<Psi>,
    /// The node's `MemAvailable` and direct-reclaim counter.
    pub node: Option<NodeMemory>,
}

/// The options the rules use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// The node is short when `MemAvailable` is below this percent of
    /// `MemTotal` (or it entered direct reclaim).
    pub node_available_percent: u8,
    /// At most one `memory_pressure` per this long.
    pub interval: Duration,
    /// Notifications and limit hits count this long; an episode ends after
    /// this long without a qualifying wake-up.
    pub clear_after: Duration,
    /// The PSI trigger in use, `(stall µs, window µs)`: its share of
    /// stalled time is what a check compares the PSI total with.
    pub psi_trigger: (u64, u64),
}

/// One pressure episode: from the first qualifying wake-up to the last one
/// before `clear_after` of quiet.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// The first qualifying wake-up.
    pub since: Instant,
    /// `since` on the wall clock.
    pub since_wall: SystemTime,
    /// The last qualifying wake-up.
    pub last: Instant,
    /// `last` on the wall clock.
    pub last_wall: SystemTime,
    /// When the last `memory_pressure` was due.
    pub last_event: Option<Instant>,
    /// How many `memory_pressure` were due.
    pub events: u64,
    /// Highest PSI `some avg10` read during the episode (percent).
    pub peak_some_avg10: Option<f64>,
}

/// A `memory_pressure` due now.
#[derive(Clone, Debug, PartialEq)]
pub struct Warning {
    /// The episode, as of this warning.
    pub episode: Episode,
    /// PSI as read at this wake-up (`None` on v1).
    pub psi: Option<Psi>,
    /// Limit hits counted since the previous warning (or since watched).
    pub hits: u64,
    /// Usage growth over the last minute, bytes per minute.
    pub growth: Option<i64>,
    /// The node's shortage (the node only): at this read, with the direct
    /// reclaims counted since the previous warning.
    pub shortage: Option<NodeShortage>,
}

/// What [`Tracker::observe`] concluded.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// A v1 eventfd notification whose cgroup is no longer at its limit:
    /// ignored.
    Stale,
    /// Not both notified and at its limit within `clear_after`: no episode
    /// goes on from this wake-up.
    Calm {
        /// A limit hit (the node: a shortage) within `clear_after`.
        at_limit: bool,
        /// A notification that counts within `clear_after`.
        notified: bool,
    },
    /// In an episode; `warning` when a `memory_pressure` is due.
    Pressure {
        /// The `memory_pressure` due now, if one is.
        warning: Option<Warning>,
    },
}

/// The pressure state of one watched cgroup (or the node).
#[derive(Clone, Debug)]
pub struct Tracker {
    kind: Kind,
    /// The limit-hit counter at the last read.
    last_hits: Option<u64>,
    /// Limit hits counted since the last warning.
    hits_since_event: u64,
    /// The last wake-up that found it at its limit.
    last_rise: Option<Instant>,
    /// The last notification that counts.
    last_notify: Option<Instant>,
    /// When its files were last read.
    last_read: Option<Instant>,
    /// The PSI `some` totals read lately (v2 cgroups and the node).
    stall: StallHistory,
    /// The node's shortage, read after read.
    shortage: ShortageJudge,
    /// The node's direct reclaims counted since the last warning.
    reclaims_since_event: u64,
    episode: Option<Episode>,
    /// `(when, usage)`, at most one a second, the last minute.
    usage: VecDeque<(Instant, u64)>,
}

impl Tracker {
    /// A new watch of `kind`; `hits` is its limit-hit counter when it was
    /// registered (rises are counted from there).
    pub fn new(kind: Kind, hits: Option<u64>) -> Self {
        Self {
            kind,
            last_hits: hits,
            hits_since_event: 0,
            last_rise: None,
            last_notify: None,
            last_read: None,
            stall: StallHistory::default(),
            shortage: ShortageJudge::default(),
            reclaims_since_event: 0,
            episode: None,
            usage: VecDeque::new(),
        }
    }

    /// What is watched.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// True when a notification or a limit hit (the node: a shortage)
    /// came within `clear_after` before `now`: one more would begin an
    /// episode.
    pub fn engaged(&self, now: Instant, clear_after: Duration) -> bool {
        [self.last_notify, self.last_rise]
            .into_iter()
            .flatten()
            .any(|at| now.saturating_duration_since(at) < clear_after)
    }

    /// The episode under way, if any.
    pub fn episode(&self) -> Option<&Episode> {
        self.episode.as_ref()
    }

    /// Ends the episode under way, if any (the watch goes away).
    pub fn take_episode(&mut self) -> Option<Episode> {
        self.episode.take()
    }

    /// Ends the episode when its last qualifying wake-up is `clear_after`
    /// or more before `now`.
    pub fn end_if_quiet(&mut self, now: Instant, clear_after: Duration) -> Option<Episode> {
        let quiet = self
            .episode
            .as_ref()
            .is_some_and(|e| now.duration_since(e.last) >= clear_after);
        if quiet {
            self.episode.take()
        } else {
            None
        }
    }

    /// The first step of a wake-up at `now`: what to read, or `None` when a
    /// notification comes within [`READ_EVERY`] of the last read (a PSI
    /// trigger's still counts as notified; a v1 eventfd's counts only with
    /// a read).
    pub fn wake(&mut self, wake: Wake, now: Instant) -> Option<Reads> {
        if wake == Wake::Notified {
            if self.kind != Kind::CgroupV1 {
                self.last_notify = Some(now);
            }
            if self
                .last_read
                .is_some_and(|at| now.duration_since(at) < READ_EVERY)
            {
                return None;
            }
        }
        self.last_read = Some(now);
        let cgroup = self.kind != Kind::Node;
        Some(Reads {
            hits: cgroup,
            memcg: cgroup || self.usage_due(now),
            psi: self.kind != Kind::CgroupV1,
            node: !cgroup,
        })
    }

    /// The second step: applies `sample`, read after [`Tracker::wake`] at
    /// `now` (`wall`: `now` on the wall clock), and decides.
    pub fn observe(
        &mut self,
        wake: Wake,
        sample: Sample,
        now: Instant,
        wall: SystemTime,
        rules: &Rules,
    ) -> Observation {
        let notified = wake == Wake::Notified;
        let v1_eventfd = notified && self.kind == Kind::CgroupV1;
        let mut still_at_limit = false;
        let mut rose = false;
        // The node's trigger was seen silent through a whole 8 s stall
        // (6.12 and 5.10 VMs), a v2 cgroup's for seconds while it stalled
        // half the time: a check (the node's every second, a v2 cgroup's
        // limit hit) compares PSI totals over the trigger's window.
        let stalled = self.stalled(sample.psi, now, rules.psi_trigger);
        if self.kind == Kind::Node {
            if !notified && stalled {
                self.last_notify = Some(now);
            }
            let short = sample
                .node
                .and_then(|node| self.shortage.observe(node, rules.node_available_percent));
            if let Some(short) = short {
                self.reclaims_since_event += short.direct_reclaims;
                self.last_rise = Some(now);
                still_at_limit = true;
            }
        } else {
            if let (Some(hits), Some(before)) = (sample.hits, self.last_hits) {
                if hits > before {
                    self.hits_since_event += hits - before;
                    self.last_rise = Some(now);
                    still_at_limit = true;
                    rose = true;
                }
            }
            if sample.hits.is_some() {
                self.last_hits = sample.hits;
            }
            // The counters miss some limit hits (a v1 cgroup whose
            // memory+swap limit equals its memory limit fails its charges
            // without counting them on 6.x kernels): a notification with
            // the usage within a charge batch of the limit counts too.
            if notified && sample.memcg.is_some_and(|m| m.at_limit()) {
                self.last_rise = Some(now);
                still_at_limit = true;
            }
            if v1_eventfd && still_at_limit {
                self.last_notify = Some(now);
            }
            if !notified && self.kind == Kind::CgroupV2 && stalled {
                self.last_notify = Some(now);
            }
        }
        self.sample_usage(sample.memcg, now);
        if v1_eventfd && !still_at_limit {
            return Observation::Stale;
        }
        let recent =
            |at: Option<Instant>| at.is_some_and(|at| now.duration_since(at) < rules.clear_after);
        let at_limit = recent(self.last_rise);
        let notified = recent(self.last_notify);
        if !(notified && at_limit) {
            return Observation::Calm { at_limit, notified };
        }
        let episode = self.episode.get_or_insert(Episode {
            since: now,
            since_wall: wall,
            last: now,
            last_wall: wall,
            last_event: None,
            events: 0,
            peak_some_avg10: None,
        });
        episode.last = now;
        episode.last_wall = wall;
        if let Some(psi) = sample.psi {
            episode.peak_some_avg10 = Some(
                episode
                    .peak_some_avg10
                    .map_or(psi.some_avg10, |p| p.max(psi.some_avg10)),
            );
        }
        let at_limit_now = match self.kind {
            Kind::Node => still_at_limit,
            Kind::CgroupV1 | Kind::CgroupV2 => at_limit_now(rose, sample.memcg),
        };
        let due = at_limit_now
            && episode
                .last_event
                .is_none_or(|at| now.duration_since(at) >= rules.interval);
        if !due {
            return Observation::Pressure { warning: None };
        }
        episode.last_event = Some(now);
        episode.events += 1;
        let episode = episode.clone();
        let shortage = (self.kind == Kind::Node).then(|| NodeShortage {
            mem_available_low: sample
                .node
                .is_some_and(|node| mem_available_low(node, rules.node_available_percent)),
            direct_reclaims: std::mem::take(&mut self.reclaims_since_event),
        });
        Observation::Pressure {
            warning: Some(Warning {
                episode,
                psi: sample.psi,
                hits: std::mem::take(&mut self.hits_since_event),
                growth: self.growth(now),
                shortage,
            }),
        }
    }

    /// Records the PSI `some` total read at `now`; true when it grew by
    /// the trigger's share over at least the trigger's window.
    fn stalled(&mut self, psi: Option<Psi>, now: Instant, trigger: (u64, u64)) -> bool {
        psi.is_some_and(|psi| self.stall.record(now, psi.some_total_us, trigger))
    }

    /// True when a usage sample is due at `now`.
    fn usage_due(&self, now: Instant) -> bool {
        self.usage
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= USAGE_EVERY)
    }

    fn sample_usage(&mut self, memcg: Option<Memcg>, now: Instant) {
        if !self.usage_due(now) {
            return;
        }
        if let Some(usage) = memcg.and_then(|m| m.usage_bytes) {
            self.usage.push_back((now, usage));
        }
        while self
            .usage
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > USAGE_KEPT)
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

/// True when a cgroup's read shows it at its limit now: its counter rose
/// (`rose`) or its usage is within a charge batch of the limit, and its
/// usage (when read, with a limit) is not below half the limit.
fn at_limit_now(rose: bool, memcg: Option<Memcg>) -> bool {
    let drained = memcg.is_some_and(|m| match (m.usage_bytes, m.limit_bytes) {
        (Some(usage), Some(limit)) => usage < limit / 2,
        _ => false,
    });
    (rose || memcg.is_some_and(|m| m.at_limit())) && !drained
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A watch fed by hand: each wake-up reads only what [`Tracker::wake`]
    /// asked for out of the sample given, as the shell does.
    struct Feed {
        tracker: Tracker,
        t0: Instant,
        rules: Rules,
    }

    impl Feed {
        fn new(kind: Kind, hits: Option<u64>) -> Self {
            Self {
                tracker: Tracker::new(kind, hits),
                t0: Instant::now(),
                rules: Rules {
                    node_available_percent: 10,
                    interval: Duration::from_secs(60),
                    clear_after: Duration::from_secs(10),
                    psi_trigger: (100_000, 1_000_000),
                },
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// A wake-up `ms` after the start; `None` when it was not read.
        fn wake(&mut self, ms: u64, wake: Wake, sample: Sample) -> Option<Observation> {
            let now = self.at(ms);
            let reads = self.tracker.wake(wake, now)?;
            let read = Sample {
                hits: sample.hits.filter(|_| reads.hits),
                memcg: sample.memcg.filter(|_| reads.memcg),
                psi: sample.psi.filter(|_| reads.psi),
                node: sample.node.filter(|_| reads.node),
            };
            let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms);
            Some(self.tracker.observe(wake, read, now, wall, &self.rules))
        }

        /// A wake-up that must be read; its warning, if one is due.
        fn warning(&mut self, ms: u64, wake: Wake, sample: Sample) -> Option<Warning> {
            match self.wake(ms, wake, sample).expect("read") {
                Observation::Pressure { warning } => warning,
                other => panic!("at {ms} ms: no episode: {other:?}"),
            }
        }
    }

    fn sample(hits: u64, usage: u64, limit: u64) -> Sample {
        Sample {
            hits: Some(hits),
            memcg: Some(Memcg {
                usage_bytes: Some(usage),
                limit_bytes: Some(limit),
            }),
            psi: None,
            node: None,
        }
    }

    fn with_psi(mut sample: Sample, some_avg10: f64, some_total_us: u64) -> Sample {
        sample.psi = Some(Psi {
            some_avg10,
            full_avg10: 0.0,
            some_total_us,
            full_total_us: 0,
        });
        sample
    }

    /// The node with `usage` of its 1 GiB in use (MemAvailable the rest:
    /// short below 102.4 MiB) and no direct reclaim.
    fn node(usage: u64, some_total_us: u64) -> Sample {
        node_reclaiming(usage, 0, some_total_us)
    }

    /// The node, its direct-reclaim counter at `allocstalls`.
    fn node_reclaiming(usage: u64, allocstalls: u64, some_total_us: u64) -> Sample {
        with_psi(
            Sample {
                hits: None,
                memcg: Some(Memcg {
                    usage_bytes: Some(usage),
                    limit_bytes: Some(1024 * MIB),
                }),
                psi: None,
                node: Some(NodeMemory {
                    total_bytes: Some(1024 * MIB),
                    available_bytes: Some(1024 * MIB - usage),
                    allocstalls: Some(allocstalls),
                }),
            },
            5.0,
            some_total_us,
        )
    }

    #[test]
    fn a_notification_with_the_limit_hits_rising_starts_an_episode_and_warns_at_once() {
        let mut feed = Feed::new(Kind::CgroupV2, Some(10));
        let warning = feed
            .warning(
                0,
                Wake::Notified,
                with_psi(sample(12, 60 * MIB, 64 * MIB), 20.0, 1),
            )
            .expect("the first warning of an episode is due at once");
        assert_eq!(warning.hits, 2, "hits since the cgroup was watched");
        assert_eq!(warning.episode.since, feed.t0);
        assert_eq!(warning.episode.events, 1);
        assert_eq!(warning.episode.peak_some_avg10, Some(20.0));
        assert_eq!(warning.psi.map(|p| p.some_avg10), Some(20.0));
        assert_eq!(warning.growth, None, "one usage sample");
        assert_eq!(feed.tracker.episode(), Some(&warning.episode));
    }

    #[test]
    fn a_notification_away_from_the_limit_or_a_limit_hit_alone_is_no_episode() {
        let mut feed = Feed::new(Kind::CgroupV2, Some(10));
        assert_eq!(
            feed.wake(0, Wake::Notified, sample(10, 10 * MIB, 64 * MIB)),
            Some(Observation::Calm {
                at_limit: false,
                notified: true
            })
        );
        let mut feed = Feed::new(Kind::CgroupV2, Some(10));
        // The first PSI total is only remembered: no stall share yet.
        assert_eq!(
            feed.wake(
                0,
                Wake::Check,
                with_psi(sample(11, 10 * MIB, 64 * MIB), 0.0, 0)
            ),
            Some(Observation::Calm {
                at_limit: true,
                notified: false
            })
        );
        assert_eq!(feed.tracker.episode(), None);
    }

    #[test]
    fn a_notification_and_a_limit_hit_count_together_within_clear_after() {
        let mut feed = Feed::new(Kind::CgroupV2, Some(10));
        feed.wake(0, Wake::Notified, sample(10, 10 * MIB, 64 * MIB));
        // memory.events changed 2 s later: the notification still counts.
        let warning = feed
            .warning(2_000, Wake::Check, sample(11, 60 * MIB, 64 * MIB))
            .unwrap();
        assert_eq!(warning.episode.since, feed.at(2_000));
        assert_eq!(warning.hits, 1);

        // clear_after (10 s) later it no longer does.
        let mut feed = Feed::new(Kind::CgroupV2, Some(10));
        feed.wake(0, Wake::Notified, sample(10, 10 * MIB, 64 * MIB));
        assert_eq!(
            feed.wake(10_000, Wake::Check, sample(11, 10 * MIB, 64 * MIB)),
            Some(Observation::Calm {
                at_limit: true,
                notified: false
            })
        );
    }

    #[test]
    fn warnings_come_once_per_interval_with_the_hits_counted_since_the_last() {
        let mut feed = Feed::new(Kind::CgroupV2, Some(0));
        let first = feed.warning(0, Wake::Notified, sample(5, 63 * MIB, 64 * MIB));
        assert_eq!(first.map(|w| w.hits), Some(5));
        for s in 1..60 {
            let hits = 5 + 5 * s;
            assert_eq!(
                feed.warning(s * 1_000, Wake::Notified, sample(hits, 63 * MIB, 64 * MIB)),
                None,
                "{s} s: within the interval"
            );
            assert_eq!(feed.tracker.episode().unwrap().last, feed.at(s * 1_000));
        }
        let renewed = feed
            .warning(60_000, Wake::Notified, sample(305, 63 * MIB, 64 * MIB))
            .expect("due again after the interval");
        assert_eq!(renewed.hits, 300, "every rise since the first warning");
        assert_eq!(renewed.episode.since, feed.t0, "the same episode");
        assert_eq!(renewed.episode.events, 2);
        assert_eq!(renewed.episode.last_event, Some(feed.at(60_000)));
    }

    #[test]
    fn the_episode_ends_after_clear_after_without_a_qualifying_wake_up() {
        let mut feed = Feed::new(Kind::CgroupV2, Some(0));
        feed.warning(0, Wake::Notified, sample(1, 63 * MIB, 64 * MIB));
        feed.warning(5_000, Wake::Notified, sample(2, 63 * MIB, 64 * MIB));
        // A notification away from the limit still renews it within
        // clear_after of the last limit hit (5 s).
        assert!(matches!(
            feed.wake(8_000, Wake::Notified, sample(2, 10 * MIB, 64 * MIB)),
            Some(Observation::Pressure { warning: None })
        ));
        let clear = feed.rules.clear_after;
        assert_eq!(feed.tracker.end_if_quiet(feed.at(16_999), clear), None);
        let ended = feed
            .tracker
            .end_if_quiet(feed.at(18_000), clear)
            .expect("10 s after the last qualifying wake-up");
        assert_eq!(ended.since, feed.t0);
        assert_eq!(ended.last, feed.at(8_000));
        assert_eq!(ended.events, 1);
        assert_eq!(feed.tracker.episode(), None);
        assert_eq!(feed.tracker.end_if_quiet(feed.at(30_000), clear), None);
        // The next pressure is a new episode, warned of at once.
        let next = feed
            .warning(40_000, Wake::Notified, sample(3, 63 * MIB, 64 * MIB))
            .expect("a new episode");
        assert_eq!(next.episode.since, feed.at(40_000));
        assert_eq!(next.episode.events, 1);
        // Counted since the last warning: the rise at 5 s too.
        assert_eq!(next.hits, 2);
    }

    #[test]
    fn notifications_within_read_every_are_not_read_but_a_psi_trigger_still_counts() {
        let mut feed = Feed::new(Kind::CgroupV2, Some(0));
        assert!(matches!(
            feed.wake(0, Wake::Check, sample(1, 10 * MIB, 64 * MIB)),
            Some(Observation::Calm {
                at_limit: true,
                notified: false
            })
        ));
        assert_eq!(
            feed.wake(100, Wake::Notified, sample(9, 63 * MIB, 64 * MIB)),
            None
        );
        // The trigger at 100 ms counts with the limit hit at 0: the episode
        // begins, warned of at the first read that finds it at its limit.
        assert_eq!(
            feed.wake(300, Wake::Check, sample(1, 10 * MIB, 64 * MIB)),
            Some(Observation::Pressure { warning: None })
        );
        assert!(feed
            .warning(500, Wake::Check, sample(2, 63 * MIB, 64 * MIB))
            .is_some());

        let mut v1 = Feed::new(Kind::CgroupV1, Some(0));
        assert!(v1
            .warning(0, Wake::Notified, sample(1, 60 * MIB, 64 * MIB))
            .is_some());
        assert_eq!(
            v1.wake(249, Wake::Notified, sample(2, 63 * MIB, 64 * MIB)),
            None
        );
        assert!(v1
            .wake(250, Wake::Notified, sample(2, 63 * MIB, 64 * MIB))
            .is_some());
    }

    /// CI on a 6.1 VM: a PSI trigger whose window ended after the hog died
    /// renewed the episode and, the interval being up, warned of 92 KiB of
    /// 64 MiB. A warning needs the same read to find the cgroup at its
    /// limit; the episode goes on meanwhile and ends after `clear_after`.
    #[test]
    fn a_late_trigger_renews_the_episode_but_warns_only_at_the_limit() {
        let mut feed = Feed::new(Kind::CgroupV2, Some(0));
        feed.rules.interval = Duration::from_secs(3);
        feed.rules.clear_after = Duration::from_secs(3);
        assert!(feed
            .warning(0, Wake::Notified, sample(1, 63 * MIB, 64 * MIB))
            .is_some());
        feed.wake(2_000, Wake::Check, sample(50, 63 * MIB, 64 * MIB));
        // The hog died at 2.5 s; the trigger fires at 3.5 s, interval up.
        assert_eq!(
            feed.wake(3_500, Wake::Notified, sample(50, 92 << 10, 64 * MIB)),
            Some(Observation::Pressure { warning: None })
        );
        assert_eq!(feed.tracker.episode().unwrap().last, feed.at(3_500));
        // A counter that rose while the read finds it drained: no warning.
        assert_eq!(
            feed.wake(4_000, Wake::Check, sample(51, 92 << 10, 64 * MIB)),
            Some(Observation::Pressure { warning: None })
        );
        let ended = feed
            .tracker
            .end_if_quiet(feed.at(7_000), feed.rules.clear_after)
            .expect("quiet for clear_after");
        assert_eq!(ended.events, 1, "only the warning at the limit");
        // A cgroup with no limit of its own is not judged by its usage.
        assert!(at_limit_now(
            true,
            Some(Memcg {
                usage_bytes: Some(1),
                limit_bytes: None
            })
        ));
        assert!(!at_limit_now(false, None));
    }

    /// The rule of be7c28f: a v1 eventfd's notification is up to 250 ms old
    /// (its fd rests after each one); the hog may have died meanwhile.
    #[test]
    fn a_v1_notification_counts_only_when_the_same_read_shows_the_cgroup_at_its_limit() {
        let mut feed = Feed::new(Kind::CgroupV1, Some(100));
        feed.rules.interval = Duration::from_secs(3);
        feed.rules.clear_after = Duration::from_secs(3);
        assert!(feed
            .warning(0, Wake::Notified, sample(101, 63 * MIB, 64 * MIB))
            .is_some());
        assert_eq!(
            feed.warning(1_000, Wake::Notified, sample(102, 63 * MIB, 64 * MIB)),
            None
        );
        let before = feed.tracker.clone();
        // 3.2 s: due, limit hit 2.2 s ago, but the cgroup holds 192 KiB of
        // 64 MiB and its counter did not move: the notification is stale.
        assert_eq!(
            feed.wake(3_200, Wake::Notified, sample(102, 192 << 10, 64 * MIB)),
            Some(Observation::Stale)
        );
        assert_eq!(feed.tracker.episode().unwrap().last, feed.at(1_000));
        // The same wake-up with the cgroup still at its limit warns.
        feed.tracker = before.clone();
        assert!(feed
            .warning(3_200, Wake::Notified, sample(102, 63 * MIB, 64 * MIB))
            .is_some());
        // And so does one whose counter rose, unless the same read finds
        // it drained (the hog hit the limit, then died).
        feed.tracker = before.clone();
        let warning = feed
            .warning(3_200, Wake::Notified, sample(103, 40 * MIB, 64 * MIB))
            .unwrap();
        assert_eq!(warning.hits, 2);
        assert_eq!(warning.psi, None, "no PSI per cgroup on v1");
        feed.tracker = before;
        assert_eq!(
            feed.wake(3_200, Wake::Notified, sample(103, 192 << 10, 64 * MIB)),
            Some(Observation::Pressure { warning: None })
        );

        // A v2 trigger's notification is not stale: it waits for a limit
        // hit within clear_after (a_notification_and_a_limit_hit_count...).
        let mut v2 = Feed::new(Kind::CgroupV2, Some(100));
        assert!(matches!(
            v2.wake(0, Wake::Notified, sample(100, 192 << 10, 64 * MIB)),
            Some(Observation::Calm { .. })
        ));
    }

    #[test]
    fn at_its_limit_means_within_a_charge_batch_2_mib_or_a_64th() {
        let cases = [
            (64 * MIB, 62 * MIB, true),
            (64 * MIB, 62 * MIB - 1, false),
            (4096 * MIB, 4032 * MIB, true),
            (4096 * MIB, 4032 * MIB - 1, false),
        ];
        for (limit, usage, at_limit) in cases {
            let mut feed = Feed::new(Kind::CgroupV1, Some(0));
            let seen = feed.wake(0, Wake::Notified, sample(0, usage, limit));
            assert_eq!(
                matches!(seen, Some(Observation::Pressure { .. })),
                at_limit,
                "{usage} of {limit}: {seen:?}"
            );
        }
        // No limit: never at it.
        let mut feed = Feed::new(Kind::CgroupV1, Some(0));
        let mut unlimited = sample(0, 63 * MIB, 0);
        unlimited.memcg = Some(Memcg {
            usage_bytes: Some(63 * MIB),
            limit_bytes: None,
        });
        assert_eq!(
            feed.wake(0, Wake::Notified, unlimited),
            Some(Observation::Stale)
        );
    }

    #[test]
    fn a_check_counts_as_notified_when_psi_grew_by_the_triggers_share() {
        // The node (short: 24 MiB available), checked every second: 100 ms
        // in 1 s is the share.
        for (stalled, notified) in [(100_000, true), (99_999, false)] {
            let mut feed = Feed::new(Kind::Node, None);
            assert!(matches!(
                feed.wake(0, Wake::Check, node(1000 * MIB, 500)),
                Some(Observation::Calm {
                    at_limit: true,
                    notified: false
                })
            ));
            // Within the window: not compared, however much it grew.
            assert!(matches!(
                feed.wake(50, Wake::Check, node(1000 * MIB, 500 + 10_000_000)),
                Some(Observation::Calm {
                    notified: false,
                    ..
                })
            ));
            let seen = feed.wake(1_000, Wake::Check, node(1000 * MIB, 500 + stalled));
            assert_eq!(
                matches!(seen, Some(Observation::Pressure { .. })),
                notified,
                "{stalled} us stalled in 1 s: {seen:?}"
            );
        }
        // A v2 cgroup's memory.events change does the same with its own PSI.
        let mut feed = Feed::new(Kind::CgroupV2, Some(0));
        feed.wake(0, Wake::Check, with_psi(sample(1, MIB, 64 * MIB), 0.0, 0));
        let warning = feed
            .warning(
                2_000,
                Wake::Check,
                with_psi(sample(2, 60 * MIB, 64 * MIB), 30.0, 200_000),
            )
            .expect("20 % stalled over 2 s, and a limit hit");
        assert_eq!(warning.episode.peak_some_avg10, Some(30.0));
        // v1 has no PSI: a check never counts as notified.
        let mut v1 = Feed::new(Kind::CgroupV1, Some(0));
        v1.wake(0, Wake::Check, with_psi(sample(1, MIB, 64 * MIB), 0.0, 0));
        assert!(matches!(
            v1.wake(
                2_000,
                Wake::Check,
                with_psi(sample(2, MIB, 64 * MIB), 0.0, 2_000_000)
            ),
            Some(Observation::Calm {
                at_limit: true,
                notified: false
            })
        ));
    }

    /// Issue 29: one small container reclaiming at its own limit stalls
    /// the node's PSI while the node has most of its RAM available; the
    /// node was warned of. PSI alone is no node pressure.
    #[test]
    fn the_node_warns_only_when_short_of_memory_as_well_as_stalled() {
        let mut feed = Feed::new(Kind::Node, None);
        assert_eq!(
            feed.wake(0, Wake::Check, node_reclaiming(100 * MIB, 500, 0)),
            Some(Observation::Calm {
                at_limit: false,
                notified: false
            })
        );
        for s in 1..5 {
            assert_eq!(
                feed.wake(
                    s * 1_000,
                    Wake::Notified,
                    node_reclaiming(100 * MIB, 500, 0)
                ),
                Some(Observation::Calm {
                    at_limit: false,
                    notified: true
                }),
                "{s} s: the trigger, 924 MiB available, no direct reclaim"
            );
        }
        assert_eq!(feed.tracker.episode(), None);
        // Direct reclaim with memory available (a burst faster than
        // kswapd): short, and stalled a moment ago.
        let warning = feed
            .warning(5_000, Wake::Check, node_reclaiming(100 * MIB, 512, 0))
            .expect("short and notified");
        assert_eq!(
            warning.shortage,
            Some(NodeShortage {
                mem_available_low: false,
                direct_reclaims: 12
            })
        );
        assert_eq!(warning.hits, 0);

        // MemAvailable low without a stall: no episode; with the trigger's
        // share of stall over a window: one.
        let mut feed = Feed::new(Kind::Node, None);
        assert_eq!(
            feed.wake(0, Wake::Check, node(1000 * MIB, 0)),
            Some(Observation::Calm {
                at_limit: true,
                notified: false
            })
        );
        let warning = feed
            .warning(1_000, Wake::Check, node(1000 * MIB, 100_000))
            .expect("24 MiB available, 100 ms stalled in 1 s");
        assert_eq!(
            warning.shortage,
            Some(NodeShortage {
                mem_available_low: true,
                direct_reclaims: 0
            })
        );
        assert_eq!(warning.episode.peak_some_avg10, Some(5.0));
    }

    /// As for a cgroup's limit: a trigger whose window ends after the
    /// shortage did renews the episode, but a warning needs the same read
    /// to find the node short; a shortage older than `clear_after` counts
    /// for nothing.
    #[test]
    fn a_node_warning_needs_the_same_read_to_find_it_short() {
        let mut feed = Feed::new(Kind::Node, None);
        feed.rules.interval = Duration::from_secs(3);
        assert!(feed
            .warning(0, Wake::Notified, node(1000 * MIB, 0))
            .is_some());
        // Freed at 2 s (the hog ended); the trigger fires at 4 s.
        assert_eq!(
            feed.wake(4_000, Wake::Notified, node(100 * MIB, 0)),
            Some(Observation::Pressure { warning: None })
        );
        assert_eq!(feed.tracker.episode().unwrap().last, feed.at(4_000));
        assert!(feed
            .tracker
            .end_if_quiet(feed.at(14_000), feed.rules.clear_after)
            .is_some());
        // 10 s after the last shortage, the trigger alone: calm.
        assert_eq!(
            feed.wake(14_500, Wake::Notified, node(100 * MIB, 0)),
            Some(Observation::Calm {
                at_limit: false,
                notified: true
            })
        );
    }

    #[test]
    fn each_wake_up_reads_only_what_its_rules_use() {
        let t0 = Instant::now();
        let reads = |kind, wake| Tracker::new(kind, Some(0)).wake(wake, t0).unwrap();
        let all = Reads {
            hits: true,
            memcg: true,
            psi: true,
            node: false,
        };
        assert_eq!(
            reads(Kind::CgroupV1, Wake::Notified),
            Reads { psi: false, ..all }
        );
        assert_eq!(reads(Kind::CgroupV2, Wake::Notified), all);
        let node_reads = Reads {
            hits: false,
            node: true,
            ..all
        };
        assert_eq!(reads(Kind::Node, Wake::Check), node_reads);
        // A cgroup's wake-up always reads its usage (a warning is due only
        // when the read finds it at its limit); the node's check only for
        // the one usage sample a second, its shortage every time.
        let mut cgroup = Feed::new(Kind::CgroupV2, Some(0));
        cgroup.wake(0, Wake::Check, sample(0, MIB, 64 * MIB));
        let at_500 = cgroup.at(500);
        assert_eq!(cgroup.tracker.wake(Wake::Check, at_500), Some(all));
        let mut feed = Feed::new(Kind::Node, None);
        feed.wake(0, Wake::Check, node(MIB, 0));
        let at = |ms| feed.at(ms);
        let (at_500, at_1000) = (at(500), at(1_000));
        assert_eq!(
            feed.tracker.wake(Wake::Check, at_500),
            Some(Reads {
                memcg: false,
                ..node_reads
            })
        );
        assert_eq!(feed.tracker.wake(Wake::Check, at_1000), Some(node_reads));
    }

    #[test]
    fn growth_is_scaled_to_a_minute_once_the_samples_span_10_s() {
        let mut feed = Feed::new(Kind::Node, None);
        feed.rules.interval = Duration::from_secs(10);
        let first = feed.warning(0, Wake::Notified, node(930 * MIB, 0)).unwrap();
        assert_eq!(first.growth, None);
        for s in 1..10 {
            feed.warning(s * 1_000, Wake::Notified, node((930 + s) * MIB, 0));
        }
        let tenth = feed
            .warning(10_000, Wake::Notified, node(940 * MIB, 0))
            .unwrap();
        assert_eq!(tenth.growth, Some(60 * MIB as i64), "10 MiB in 10 s");
        assert_eq!(tenth.episode.events, 2);
    }
}
