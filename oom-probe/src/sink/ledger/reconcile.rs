//! Counter reconciliation: reads every memory cgroup's own kill counter
//! ([`KillLedger::snapshot`]) and compares it with the kills the ledger
//! accounted for ([`KillLedger::reconcile`]), leaving out the kills a walk
//! saw after it read a counter (their kernel stamps say which).

use std::{collections::HashMap, path::Path};

use oom_probe_cgroupfs::{
    clock::monotonic_ns,
    counters::{self, Scope},
    CgroupResolver,
};

use super::KillLedger;
use crate::event::{UnobservedKills, UnobservedReason};

/// The kernel's per-cgroup kill counters, one [`CounterRead`] for every
/// memory cgroup whose counter could be read.
pub struct Counts(pub(super) Vec<CounterRead>);

/// One cgroup's kill counter as [`KillLedger::snapshot`] read it.
pub(super) struct CounterRead {
    pub(super) id: u64,
    path: String,
    count: u64,
    /// CLOCK_MONOTONIC in ns (the clock of `kernel_time_ns`) just before and
    /// just after the read: the kernel read the counter in between.
    pub(super) start: u64,
    pub(super) end: u64,
}

/// Kills accounted for during a walk in one cgroup, by where their stamps
/// fall against the read of its counter.
#[derive(Default)]
struct SinceRead {
    /// Stamped after the read: not in the count.
    after: u64,
    /// Stamped while the read was under way: maybe in the count.
    unsure: u64,
}

impl KillLedger {
    /// Per cgroup, the kills accounted for during the walk that the kernel
    /// stamped after the snapshot began to read that cgroup's counter. The
    /// kernel bumps the counter before it stamps the victim's record (a
    /// few instructions apart, under the victim's task lock), so a kill
    /// stamped before the read began is in the count, one stamped after it
    /// ended is taken as not, and one stamped while it was under way (an
    /// open and a read, milliseconds on a loaded machine) may be either.
    fn since_read(&self, counts: &Counts) -> HashMap<u64, SinceRead> {
        let Some(during) = self.during_walk.as_ref().filter(|d| !d.is_empty()) else {
            return HashMap::new();
        };
        let reads: HashMap<u64, (u64, u64)> =
            counts.0.iter().map(|c| (c.id, (c.start, c.end))).collect();
        let mut since = HashMap::<u64, SinceRead>::new();
        for (id, stamp) in during {
            match reads.get(id) {
                Some((_, end)) if stamp > end => since.entry(*id).or_default().after += 1,
                Some((start, _)) if stamp >= start => since.entry(*id).or_default().unsure += 1,
                _ => {}
            }
        }
        since
    }

    /// Reads every cgroup's kill counter (refreshing the cgroup names first).
    pub fn snapshot(cgroups: &mut CgroupResolver) -> Counts {
        cgroups.refresh();
        let root = cgroups.root().to_path_buf();
        let counts = Counts(
            cgroups
                .known()
                .filter_map(|(id, path)| {
                    let start = monotonic_ns();
                    let count = kernel_oom_kills(&root.join(path.trim_start_matches('/')))?;
                    Some(CounterRead {
                        id,
                        path: path.to_string(),
                        count,
                        start,
                        end: monotonic_ns(),
                    })
                })
                .collect(),
        );
        tracing::debug!(
            "snapshot: {} cgroup(s) known, {} counter(s) read",
            cgroups.known().count(),
            counts.0.len()
        );
        counts
    }

    /// Whether [`reconcile`] would report kills from `counts` now: some
    /// cgroup's counter is above what is accounted for.
    ///
    /// [`reconcile`]: KillLedger::reconcile
    pub fn has_unaccounted(&self, counts: &Counts) -> bool {
        let since = self.since_read(counts);
        self.has_baseline
            && counts.0.iter().any(|read| {
                let since = since.get(&read.id);
                since.is_none_or(|s| s.unsure == 0)
                    && read.count > self.accounted_at_read(read.id, since.map_or(0, |s| s.after))
            })
    }

    /// What was accounted for in cgroup `id` when its counter was read:
    /// now, less the `after` kills stamped after the read.
    fn accounted_at_read(&self, id: u64, after: u64) -> u64 {
        self.state
            .accounted
            .get(&id)
            .copied()
            .unwrap_or(0)
            .saturating_sub(after)
    }

    /// Compares a [`snapshot`] taken before the last drain with the kills
    /// accounted for, and returns the kills nobody accounted for. The new
    /// counts are written at the next [`commit`].
    ///
    /// [`snapshot`]: KillLedger::snapshot
    /// [`commit`]: KillLedger::commit
    pub fn reconcile(&mut self, counts: Counts, time: &str, node: &str) -> Vec<UnobservedKills> {
        let mut unobserved = Vec::new();
        let mut seen = HashMap::new();
        let mut any_unsure = false;
        let since_read = self.since_read(&counts);
        self.during_walk = None;
        for CounterRead {
            id, path, count, ..
        } in counts.0
        {
            // Compared with what was accounted for when the counter was
            // read: a kill accounted for since, in the drains that follow
            // the snapshot, is not in `count`, and must not hide one that
            // is (a kill missed while the agent was down, then a kill the
            // restarted agent reported after the read: same totals).
            let since = since_read.get(&id);
            if self.has_baseline && since.is_some_and(|s| s.unsure > 0) {
                // A kill stamped during the read may or may not be in the
                // count: judge this cgroup at the next tick's walk, when
                // that kill is long in the count. Nothing is forgotten.
                tracing::debug!("cgroup {id} ({path}): a kill stamped during the read; walk again");
                let kept = self.state.accounted.get(&id).copied().unwrap_or(0);
                seen.insert(id, kept);
                self.walk.force();
                any_unsure = true;
                continue;
            }
            let after = since.map_or(0, |s| s.after);
            let accounted = self.accounted_at_read(id, after);
            seen.insert(id, count + after);
            if count != accounted {
                tracing::debug!("cgroup {id} ({path}): kernel {count}, accounted {accounted}");
            }
            if self.has_baseline && count > accounted {
                unobserved.push(UnobservedKills {
                    time: time.to_string(),
                    node: node.to_string(),
                    cgroup_id: id,
                    cgroup_path: Some(path),
                    count: count - accounted,
                    event_id: format!("{}-unobserved-{id}-{}-{count}", self.boot, accounted + 1),
                    replayed: false,
                    reason: UnobservedReason::CounterAhead,
                });
            }
        }
        // Keep the larger of the two: a kill reported but not yet counted by
        // the kernel stays accounted for. Removed cgroups are forgotten, but
        // not one with a kill since the last reconcile that the snapshot
        // missed (made between the snapshot and the drain).
        let mut accounted: HashMap<u64, u64> = seen
            .into_iter()
            .map(|(id, count)| {
                (
                    id,
                    count.max(self.state.accounted.get(&id).copied().unwrap_or(0)),
                )
            })
            .collect();
        for id in self.recent.drain() {
            if let Some(&kept) = self.state.accounted.get(&id) {
                accounted.entry(id).or_insert(kept);
            }
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            for (id, kept) in &self.state.accounted {
                if !accounted.contains_key(id) {
                    tracing::debug!(
                        "cgroup {id}: forgotten (accounted {kept}, not in the snapshot)"
                    );
                }
            }
        }
        self.state.accounted = accounted;
        let found: u64 = unobserved.iter().map(|u| u.count).sum();
        unobserved.extend(self.node_residual(found, any_unsure, time, node));
        self.walk.walked(self.state.accounted.len());
        self.has_baseline = true;
        self.dirty = true;
        unobserved
    }
}

/// The kernel's count of OOM kills in this one cgroup (not its children).
fn kernel_oom_kills(dir: &Path) -> Option<u64> {
    counters::oom_kills(dir, Scope::Local).ok()
}
