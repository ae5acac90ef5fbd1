//! The lost-record drain: kernel OOM kills whose records the ring buffer
//! had no room for, counted by the eBPF side per victim memory cgroup
//! ([`LostByCgroup`]), drained as what each count gained ([`LostKills`])
//! and accounted in the ledger as `oom_kill_unobserved` with reason
//! `ring_buffer_full` ([`KillLedger::lost`]).

use std::collections::HashMap;

use anyhow::Result;

use super::KillLedger;
use crate::event::{UnobservedKills, UnobservedReason};

impl KillLedger {
    /// Accounts for `count` kills in cgroup `cgroup_id` whose records the
    /// ring buffer had no room for (from [`LostKills::drain`]) and returns
    /// the `oom_kill_unobserved` event that reports them; a later
    /// [`reconcile`] does not count them again. Cgroup id 0 (the victim's
    /// cgroup could not be read) is not accounted in any cgroup.
    ///
    /// [`reconcile`]: KillLedger::reconcile
    pub fn lost(
        &mut self,
        lost: &LostKill,
        cgroup_path: Option<String>,
        time: &str,
        node: &str,
    ) -> UnobservedKills {
        if lost.cgroup_id != 0 {
            self.walk.seen(lost.count);
        }
        let event_id = if lost.cgroup_id == 0 {
            format!(
                "{}-lost-0-{}-{}-{}",
                self.boot,
                lost.run,
                lost.first,
                lost.first + lost.count - 1
            )
        } else {
            let accounted = self
                .state
                .accounted
                .get(&lost.cgroup_id)
                .copied()
                .unwrap_or(0);
            for _ in 0..lost.count {
                self.observed(lost.cgroup_id);
            }
            format!(
                "{}-unobserved-{}-{}-{}",
                self.boot,
                lost.cgroup_id,
                accounted + 1,
                accounted + lost.count
            )
        };
        UnobservedKills {
            time: time.to_string(),
            node: node.to_string(),
            cgroup_id: lost.cgroup_id,
            cgroup_path,
            count: lost.count,
            event_id,
            replayed: false,
            reason: UnobservedReason::RingBufferFull,
        }
    }
}

/// The eBPF side's count of kernel OOM-kill records the ring buffer had no
/// room for, per victim memory cgroup id (the `LOST_BY_CGROUP` map).
pub trait LostByCgroup {
    /// Every `(cgroup id, count)` in the map now.
    fn by_cgroup(&self) -> Vec<(u64, u64)>;
    /// One cgroup's count now (0 when it has no entry).
    fn of_cgroup(&self, id: u64) -> u64;
    /// Removes a cgroup's entry. Errors: the kernel refused.
    fn forget(&mut self, id: u64) -> Result<()>;
}

/// New lost kill records of one cgroup, from [`LostKills::drain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostKill {
    /// The victim's memory cgroup id; 0 when the eBPF side could not read it.
    pub cgroup_id: u64,
    /// Kills lost since the last drain.
    pub count: u64,
    /// Position of the first of them in the map's count for this cgroup
    /// (1-based), for the event id of cgroup 0.
    pub first: u64,
    /// This agent run (its start time, ns since the epoch), for the event
    /// id of cgroup 0, whose map count restarts at every run.
    pub run: u128,
}

/// Drains the lost-kill map: what each entry gained since the last drain.
/// The map is only read, never reset, so a kill counted while userspace
/// reads is never missed; an entry is removed (room made) only after its
/// cgroup is gone, when no kill can be counted in it any more.
pub struct LostKills {
    drained: HashMap<u64, u64>,
    run: u128,
    /// Lost kills drained since start.
    total: u64,
}

impl Default for LostKills {
    fn default() -> Self {
        Self::new()
    }
}

impl LostKills {
    /// Nothing drained yet.
    pub fn new() -> Self {
        Self {
            drained: HashMap::new(),
            run: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            total: 0,
        }
    }

    /// Lost kill records drained since start, every cgroup.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kills `map` counted since the last drain, per cgroup. `exists`
    /// says whether a cgroup exists now; it is asked before the final read
    /// of a cgroup's entry, which is then removed.
    pub fn drain(
        &mut self,
        map: &mut impl LostByCgroup,
        mut exists: impl FnMut(u64) -> bool,
    ) -> Vec<LostKill> {
        let mut new = Vec::new();
        for (id, mut count) in map.by_cgroup() {
            // Gone first, then read: nothing can be counted in it after.
            let gone = id != 0 && !exists(id);
            if gone {
                count = map.of_cgroup(id).max(count);
            }
            let before = self.drained.get(&id).copied().unwrap_or(0);
            if count > before {
                new.push(LostKill {
                    cgroup_id: id,
                    count: count - before,
                    first: before + 1,
                    run: self.run,
                });
                self.total += count - before;
            }
            if gone {
                match map.forget(id) {
                    Ok(()) => {
                        self.drained.remove(&id);
                    }
                    Err(err) => {
                        tracing::warn!("cannot remove cgroup {id} from the lost-kill map: {err:#}");
                        self.drained.insert(id, count);
                    }
                }
            } else {
                self.drained.insert(id, count);
            }
        }
        new
    }
}
