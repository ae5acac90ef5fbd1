//! When to walk every cgroup's kill counter: the node's count of OOM kills
//! (`oom_kill` in `/proc/vmstat`) against the kills seen since the last
//! walk, a ledger grown past its size at that walk, and a longest period.
//! A pure schedule: the caller gives the clock and the counts.

use std::time::Instant;

/// The longest time between two walks, whatever the node's count says: a
/// net under the node-count shortcut, so a kill missed in a way nobody
/// foresaw is still reported, late. At 5,000 cgroups a walk costs about
/// 250 ms of CPU, 0.4 ms a second spread over this period.
pub(super) const WALK_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Cgroups the ledger may add past twice the count after the last walk
/// before a walk prunes the removed ones: bounds the ledger and the state
/// file under churn when no kill is ever missed.
pub(super) const PRUNE_SLACK: usize = 1024;

/// The last walk and what was seen since, to tell whether the next tick
/// must walk ([`WalkSchedule::needed`]).
#[derive(Debug, Default)]
pub(super) struct WalkSchedule {
    /// The node's kill count (`/proc/vmstat`) read just before the last
    /// walk of every cgroup's counter; `None`: walk at the next tick.
    node_kills_at_walk: Option<u64>,
    /// Kernel kills reported, or drained as lost records, since then.
    seen_since_walk: u64,
    /// Cgroups accounted for right after the last walk: the ledger only
    /// forgets removed cgroups at a walk, so it walks again when the count
    /// has grown well past this.
    accounted_at_walk: usize,
    /// When the last walk started; `None`: never.
    last_walk: Option<Instant>,
}

impl WalkSchedule {
    /// `kills` kernel kills reported, or drained as lost records, with
    /// their cgroup.
    pub(super) fn seen(&mut self, kills: u64) {
        self.seen_since_walk += kills;
    }

    /// Whether a tick at `now` must walk, given `accounted`, the cgroups the
    /// ledger accounts for now, and `node_kills`, the node's count read
    /// before the tick's drain: yes at the first tick, when the count is
    /// unknown, after [`force`](Self::force), when the node counted more
    /// kills since the last walk than were seen since, when the ledger has
    /// grown past twice its size after the last walk plus [`PRUNE_SLACK`],
    /// and [`WALK_AT_LEAST_EVERY`] after the last walk.
    pub(super) fn needed(&self, accounted: usize, node_kills: Option<u64>, now: Instant) -> bool {
        if accounted > self.accounted_at_walk * 2 + PRUNE_SLACK
            || self
                .last_walk
                .is_none_or(|at| now.saturating_duration_since(at) >= WALK_AT_LEAST_EVERY)
        {
            return true;
        }
        let needed = match (node_kills, self.node_kills_at_walk) {
            (Some(now), Some(then)) => now.saturating_sub(then) > self.seen_since_walk,
            _ => true,
        };
        tracing::debug!(
            "node count {node_kills:?}, at the last walk {:?}, kills seen since {}: walk {needed}",
            self.node_kills_at_walk,
            self.seen_since_walk
        );
        needed
    }

    /// A walk starts at `now`; `node_kills` is the node's count read before
    /// it (`None`: unknown, walk again at the next tick).
    pub(super) fn started(&mut self, node_kills: Option<u64>, now: Instant) {
        self.node_kills_at_walk = node_kills;
        self.seen_since_walk = 0;
        self.last_walk = Some(now);
    }

    /// The walk compared the counters and kept `accounted` cgroups.
    pub(super) fn walked(&mut self, accounted: usize) {
        self.accounted_at_walk = accounted;
    }

    /// Makes the next tick walk.
    pub(super) fn force(&mut self) {
        self.node_kills_at_walk = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn walks_when_the_node_counted_more_than_was_seen() {
        let start = Instant::now();
        let mut walk = WalkSchedule::default();
        assert!(walk.needed(0, Some(100), start), "never walked");
        walk.started(Some(100), start);
        walk.walked(3);
        assert!(!walk.needed(3, Some(100), start), "nothing new");
        assert!(walk.needed(3, Some(101), start), "one kill unseen");
        walk.seen(1);
        assert!(!walk.needed(3, Some(101), start), "seen");
        assert!(walk.needed(3, None, start), "the node count unreadable");
        walk.force();
        assert!(walk.needed(3, Some(101), start), "forced");
        walk.started(Some(101), start);
        assert!(!walk.needed(3, Some(101), start), "a walk clears the force");
    }

    #[test]
    fn walks_at_least_every_period_and_when_the_ledger_grew() {
        let start = Instant::now();
        let mut walk = WalkSchedule::default();
        walk.started(Some(7), start);
        walk.walked(10);
        let later = start + WALK_AT_LEAST_EVERY;
        assert!(!walk.needed(10, Some(7), later - Duration::from_secs(1)));
        assert!(walk.needed(10, Some(7), later), "the period is up");
        assert!(!walk.needed(20 + PRUNE_SLACK, Some(7), start));
        assert!(walk.needed(21 + PRUNE_SLACK, Some(7), start), "grown past");
    }
}
