//! Kills the node counted while oom-probe was down, in cgroups removed
//! before it started again: their counters are gone, so no walk finds them,
//! but the node's count of OOM kills (`oom_kill` in `/proc/vmstat`) still
//! has them. The state file keeps the node's count read before the last
//! completed walk and the kernel kills published since; the first walk
//! after a start compares: the node's rise less what was published and
//! what the walk found is reported as one `oom_kill_unobserved` with
//! reason `node_counter_ahead`, `cgroup_id` 0 and no path.
//!
//! Every race leans to reporting fewer, never a kill twice: a kill
//! published after a read of the node's count may have been counted before
//! it (then it is subtracted from the next rise too), and a walk that had
//! to leave a cgroup for later (a kill stamped during its read) leaves the
//! comparison open until a walk that did not.

use super::KillLedger;
use crate::event::{Event, UnobservedKills, UnobservedReason};

impl KillLedger {
    /// Counts the kernel kills a committed batch publishes: `oom_kill`
    /// lines (with their cgroup or not) and `ring_buffer_full` counts. The
    /// kills a walk finds (`counter_ahead`, `node_counter_ahead`) belong to
    /// the walk's own comparison ([`node_residual`](Self::node_residual)).
    pub(super) fn count_published(&mut self, events: &[Event]) {
        for event in events {
            self.state.published_since += match event {
                Event::OomKill(_) => 1,
                Event::OomKillUnobserved(u) if u.reason == UnobservedReason::RingBufferFull => {
                    u.count
                }
                _ => 0,
            };
        }
    }

    /// Closes the walk's interval of the node's count: `found` kills the
    /// walk reported as `counter_ahead`, `unsure` when it left a cgroup for
    /// a later walk. At the first walk after a start that loaded a node
    /// count, returns the kills the node counted that nobody published
    /// or found, if any.
    pub(super) fn node_residual(
        &mut self,
        found: u64,
        unsure: bool,
        time: &str,
        node: &str,
    ) -> Option<UnobservedKills> {
        let (Some(node_now), published) = self.at_walking.take()? else {
            // The node's count could not be read: the interval stays open.
            return None;
        };
        let mut residual = None;
        if let Some(node_before) = self.start_node_kills {
            if unsure {
                // Compared at a later walk; what this one found is part of
                // the interval.
                self.state.published_since += found;
                return None;
            }
            self.start_node_kills = None;
            let missed = node_now
                .saturating_sub(node_before)
                .saturating_sub(published)
                .saturating_sub(found);
            if missed > 0 {
                tracing::warn!(
                    "the node counted {missed} OOM kill(s) while oom-probe was down in cgroups \
                     removed since (/proc/vmstat oom_kill {node_before} -> {node_now})"
                );
                residual = Some(UnobservedKills {
                    time: time.to_string(),
                    node: node.to_string(),
                    cgroup_id: 0,
                    cgroup_path: None,
                    count: missed,
                    event_id: format!("{}-unobserved-node-{node_before}-{node_now}", self.boot),
                    replayed: false,
                    reason: UnobservedReason::NodeCounterAhead,
                });
            }
        }
        self.state.node_kills = Some(node_now);
        self.state.published_since = self.state.published_since.saturating_sub(published);
        self.dirty = true;
        residual
    }
}
