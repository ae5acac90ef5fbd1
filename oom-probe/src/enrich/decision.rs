//! The OOM decision behind a kill: `constraint`, the memory cgroup that
//! ran out (`oom_memcg`) and the `oom_id` victims of one decision share,
//! from the decision hook's record where there is one, else inferred from
//! the page counters the victim record carries.

use std::fs;

use oom_probe_common::{feature, MemcgLevel, OomContextRecord, VictimRecord};

use super::Enricher;
use crate::event::{Constraint, ConstraintSource};

/// How long an `oom_kill_process` record waits for the victims it chose,
/// and how close two victims of one trigger must be to share an `oom_id`.
/// The kernel marks them within microseconds; a second covers a stalled CPU.
pub(super) const SAME_DECISION_NS: u64 = 1_000_000_000;

/// What identifies one OOM decision when the kernel does not say.
#[derive(Clone, Copy)]
pub(super) struct Decision {
    pub(super) trigger_tid: u32,
    pub(super) oom_memcg_id: u64,
    pub(super) kernel_time_ns: u64,
    pub(super) oom_id: u64,
}

/// Where the constraint and the memcg that ran out came from.
pub(super) struct Decided {
    pub(super) name: Option<Constraint>,
    pub(super) source: Option<ConstraintSource>,
    /// `oom_control.totalpages`: the OOM domain's size, in pages.
    pub(super) domain_pages: Option<u64>,
    /// The task the kernel chose and its badness score.
    pub(super) chosen: Option<(u32, i64)>,
    pub(super) oom_memcg: Option<MemcgLevel>,
}

impl Enricher {
    /// The kernel's own decision where a context hook gave it; otherwise the
    /// lowest memcg whose counter stood at its limit (the 8 levels carried,
    /// then the one the eBPF walk found above them), or a global OOM when
    /// none did and the walk reached the root; unknown (`None`) when it did
    /// not.
    pub(super) fn constraint(&self, r: &VictimRecord) -> Decided {
        if let Some((context, _)) = self.context_for(r) {
            let level = MemcgLevel {
                cgroup_id: context.memcg_id,
                usage_pages: context.memcg_usage_pages,
                limit_pages: context.memcg_limit_pages,
            };
            return Decided {
                name: self.constraint_names.get(&context.constraint).copied(),
                source: Some(ConstraintSource::OomKillProcess),
                domain_pages: Some(context.totalpages),
                chosen: Some((context.chosen_tgid, context.chosen_points)),
                oom_memcg: (context.memcg_id != 0).then_some(level),
            };
        }
        if r.features & feature::MEMCG == 0 {
            return Decided::none();
        }
        let full = r
            .memcg_levels
            .iter()
            .chain([&r.memcg_beyond])
            .find(|level| self.at_limit(level))
            .copied();
        // No memcg at its limit is a global OOM only where the walk saw
        // the whole way to the root; past MEMCG_WALK_LEVELS it is unknown.
        let whole_walk = r.memcg_levels.iter().any(|l| l.cgroup_id == 0) || r.memcg_depth != 0;
        let name = match full {
            Some(_) => Some(Constraint::Memcg),
            None if whole_walk => Some(Constraint::Global),
            None => None,
        };
        Decided {
            name,
            source: Some(ConstraintSource::PageCounters),
            domain_pages: None,
            chosen: None,
            oom_memcg: full,
        }
    }

    /// A charge fails when usage plus the pages asked for (at most a charge
    /// batch of 64 pages, or a huge page) would pass the limit.
    pub(super) fn at_limit(&self, level: &MemcgLevel) -> bool {
        let slack = 512 + level.limit_pages / 128;
        level.cgroup_id != 0
            && self.limit_bytes(level.limit_pages).is_some()
            && level.usage_pages + slack >= level.limit_pages
    }

    /// The OOM decision's id for this victim: the context's where the
    /// decision hook gave one (exact). Without it, a decision kills one task
    /// unless `memory.oom.group` is set (cgroup v2), so a victim shares the
    /// previous victim's id only when a group kill was possible (`group`)
    /// and the same task chose both in the same cgroup at once (inferred);
    /// every other kill is its own decision.
    pub(super) fn oom_id(&mut self, r: &VictimRecord, constraint: &Decided, group: bool) -> u64 {
        if let Some((_, oom_id)) = self.context_for(r) {
            return oom_id;
        }
        let oom_memcg_id = constraint.oom_memcg.map_or(0, |m| m.cgroup_id);
        let same = self.last_decision.filter(|d| {
            group
                && d.trigger_tid == r.trigger_tid
                && d.oom_memcg_id == oom_memcg_id
                && r.kernel_time_ns.saturating_sub(d.kernel_time_ns) < SAME_DECISION_NS
        });
        let oom_id = same.map_or_else(|| self.new_oom_id(), |d| d.oom_id);
        self.last_decision = Some(Decision {
            trigger_tid: r.trigger_tid,
            oom_memcg_id,
            kernel_time_ns: r.kernel_time_ns,
            oom_id,
        });
        oom_id
    }

    /// The OOM decision that chose this victim: same triggering thread,
    /// shortly before.
    pub(super) fn context_for(&self, r: &VictimRecord) -> Option<(OomContextRecord, u64)> {
        self.pending_contexts
            .get(&r.trigger_tid)
            .filter(|(c, _)| r.kernel_time_ns.saturating_sub(c.kernel_time_ns) < SAME_DECISION_NS)
            .copied()
    }

    /// True when `memory.oom.group` is set on the victim's cgroup or an
    /// ancestor up to the one that ran out (cgroup v2): the kernel then kills
    /// every process in it as one decision.
    pub(super) fn oom_group_set(&self, victim_path: &str, oom_path: &str) -> bool {
        let mut path = victim_path;
        loop {
            let set = self
                .absolute(path)
                .and_then(|dir| fs::read_to_string(dir.join("memory.oom.group")).ok())
                .is_some_and(|v| v.trim() == "1");
            if set {
                return true;
            }
            if path == oom_path || path == "/" || path.is_empty() {
                return false;
            }
            path = match path.rfind('/') {
                Some(0) => "/",
                Some(i) => &path[..i],
                None => return false,
            };
        }
    }
}

impl Decided {
    pub(super) fn none() -> Self {
        Self {
            name: None,
            source: None,
            domain_pages: None,
            chosen: None,
            oom_memcg: None,
        }
    }
}
