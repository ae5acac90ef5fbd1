//! Builds user-facing events from kernel records: units in bytes, cgroup ids
//! named, the `oom_kill_process` decision joined to the victims it chose.

pub mod cri;

use std::collections::HashMap;

use oom_probe_common::{feature, OomContextRecord, VictimRecord, TASK_COMM_LEN};

use crate::{
    cgroups::CgroupResolver,
    clock,
    decode::Record,
    event::{Memcg, OomKillEvent, OomMemcg, Rss, Trigger, Victim},
};

/// How long an `oom_kill_process` record waits for the victims it chose.
/// The kernel marks them within microseconds; seconds cover a stalled CPU.
const CONTEXT_TTL_NS: u64 = 10_000_000_000;

/// Turns records into events; keeps the little state that needs.
pub struct Enricher {
    node: String,
    page_size: u64,
    memcg_paths: Option<CgroupResolver>,
    constraint_names: HashMap<u32, &'static str>,
    /// Last OOM decision per triggering thread, waiting for its victims.
    pending_contexts: HashMap<u32, OomContextRecord>,
}

impl Enricher {
    /// `memcg_paths` resolves ids of the memory controller's hierarchy;
    /// `constraint_names` maps the kernel's `enum oom_constraint` values.
    pub fn new(
        node: String,
        memcg_paths: Option<CgroupResolver>,
        constraint_names: HashMap<u32, &'static str>,
    ) -> Self {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page_size = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            size if size > 0 => size as u64,
            _ => 4096,
        };
        Self {
            node,
            page_size,
            memcg_paths,
            constraint_names,
            pending_contexts: HashMap::new(),
        }
    }

    /// The event for a record, or `None` for records that only feed later
    /// events (the OOM decision).
    pub fn on_record(&mut self, record: Record) -> Option<OomKillEvent> {
        match record {
            Record::OomContext(context) => {
                self.pending_contexts.retain(|_, c| {
                    context.kernel_time_ns.saturating_sub(c.kernel_time_ns) < CONTEXT_TTL_NS
                });
                self.pending_contexts.insert(context.trigger_tid, context);
                None
            }
            Record::Victim(victim) => Some(self.victim_event(&victim)),
        }
    }

    fn victim_event(&mut self, r: &VictimRecord) -> OomKillEvent {
        let has = |bit: u32| r.features & bit != 0;
        let task = has(feature::VICTIM_TASK_ARG);
        let memcg = has(feature::MEMCG);
        let cgroup_id = if memcg { Some(r.memcg_id) } else { None };
        let cgroup_path = cgroup_id.and_then(|id| self.path_of(id));
        let context = self.context_for(r);
        let ns_pid = has(feature::NS_PID).then_some(r.ns_pid);
        OomKillEvent {
            kind: "oom_kill",
            time: humantime::format_rfc3339_millis(clock::wall_time(r.kernel_time_ns)).to_string(),
            kernel_time_ns: r.kernel_time_ns,
            node: self.node.clone(),
            victim: Victim {
                pid: r.tgid,
                tid: r.tid,
                ns_pid,
                comm: task.then(|| comm(&r.comm)),
                uid: task.then_some(r.uid),
                oom_score_adj: task.then_some(r.oom_score_adj),
                rss_bytes: has(feature::RSS).then(|| Rss {
                    anon: self.bytes(r.rss_anon_pages),
                    file: self.bytes(r.rss_file_pages),
                    shmem: self.bytes(r.rss_shmem_pages),
                }),
                total_vm_bytes: has(feature::RSS).then(|| r.total_vm_pages * self.page_size),
                cgroup_id,
                cgroup_path,
            },
            trigger: Trigger {
                pid: r.trigger_tgid,
                comm: comm(&r.trigger_comm),
            },
            memcg: Memcg {
                usage_bytes: memcg.then(|| r.memcg_usage_pages * self.page_size),
                limit_bytes: if memcg {
                    self.limit_bytes(r.memcg_limit_pages)
                } else {
                    None
                },
            },
            constraint: context.and_then(|c| self.constraint_names.get(&c.constraint).copied()),
            oom_memcg: context.filter(|c| c.memcg_id != 0).map(|c| OomMemcg {
                cgroup_id: c.memcg_id,
                path: self.path_of(c.memcg_id),
                usage_bytes: Some(c.memcg_usage_pages * self.page_size),
                limit_bytes: self.limit_bytes(c.memcg_limit_pages),
            }),
            silent: ns_pid.map(|pid| pid != 1),
        }
    }

    /// The OOM decision that chose this victim: same triggering thread,
    /// shortly before.
    fn context_for(&self, r: &VictimRecord) -> Option<OomContextRecord> {
        self.pending_contexts
            .get(&r.trigger_tid)
            .filter(|c| r.kernel_time_ns.saturating_sub(c.kernel_time_ns) < CONTEXT_TTL_NS)
            .copied()
    }

    fn path_of(&mut self, id: u64) -> Option<String> {
        self.memcg_paths.as_mut()?.path_of(id)
    }

    /// RSS counters are per-CPU sums on 6.2+ and can read slightly negative.
    fn bytes(&self, pages: i64) -> u64 {
        pages.max(0) as u64 * self.page_size
    }

    /// `PAGE_COUNTER_MAX` (LONG_MAX / PAGE_SIZE) means "no limit".
    fn limit_bytes(&self, pages: u64) -> Option<u64> {
        (pages < i64::MAX as u64 / self.page_size).then(|| pages * self.page_size)
    }
}

fn comm(raw: &[u8; TASK_COMM_LEN]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oom_probe_common::{RECORD_OOM_CONTEXT, RECORD_VICTIM};

    const ALL: u32 = feature::VICTIM_TASK_ARG
        | feature::NS_PID
        | feature::RSS
        | feature::CGROUP_V2
        | feature::MEMCG
        | feature::OOM_CONTROL;

    fn enricher() -> Enricher {
        Enricher::new(
            "node-a".into(),
            None,
            HashMap::from([(0, "global"), (3, "memcg")]),
        )
    }

    fn victim(features: u32) -> VictimRecord {
        VictimRecord {
            kind: RECORD_VICTIM,
            features,
            kernel_time_ns: 5_000,
            tgid: 300,
            tid: 301,
            ns_pid: 1,
            uid: 1000,
            oom_score_adj: 999,
            trigger_tgid: 300,
            trigger_tid: 301,
            comm: *b"celery\0\0\0\0\0\0\0\0\0\0",
            trigger_comm: *b"celery\0\0\0\0\0\0\0\0\0\0",
            rss_anon_pages: 10,
            rss_file_pages: -2,
            rss_shmem_pages: 3,
            total_vm_pages: 40,
            memcg_id: 77,
            memcg_usage_pages: 20,
            memcg_limit_pages: i64::MAX as u64 / 4096,
            ..Default::default()
        }
    }

    #[test]
    fn converts_pages_and_flags_an_init_kill_as_not_silent() {
        let mut e = enricher();
        let event = e.on_record(Record::Victim(victim(ALL))).unwrap();
        let page = e.page_size;
        assert_eq!(event.victim.comm.as_deref(), Some("celery"));
        assert_eq!(
            event.victim.rss_bytes,
            Some(Rss {
                anon: 10 * page,
                file: 0,
                shmem: 3 * page
            })
        );
        assert_eq!(event.victim.total_vm_bytes, Some(40 * page));
        assert_eq!(event.memcg.usage_bytes, Some(20 * page));
        assert_eq!(
            event.memcg.limit_bytes, None,
            "PAGE_COUNTER_MAX is no limit"
        );
        assert_eq!(event.victim.cgroup_id, Some(77));
        assert_eq!(event.silent, Some(false));
        assert_eq!(event.constraint, None);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "oom_kill");
        assert_eq!(json["victim"]["rss_bytes"]["anon"], 10 * page);
    }

    #[test]
    fn pid_only_kernels_give_nulls_not_zeros() {
        let event = enricher().on_record(Record::Victim(victim(0))).unwrap();
        assert_eq!(event.victim.pid, 300);
        assert_eq!(event.victim.comm, None);
        assert_eq!(event.victim.rss_bytes, None);
        assert_eq!(event.victim.cgroup_id, None);
        assert_eq!(event.silent, None);
        assert_eq!(event.memcg.usage_bytes, None);
    }

    #[test]
    fn joins_the_oom_decision_from_the_same_thread() {
        let mut e = enricher();
        let context = OomContextRecord {
            kind: RECORD_OOM_CONTEXT,
            constraint: 3,
            kernel_time_ns: 4_000,
            trigger_tid: 301,
            memcg_id: 70,
            memcg_usage_pages: 8,
            memcg_limit_pages: 8,
            ..Default::default()
        };
        assert_eq!(e.on_record(Record::OomContext(context)), None);
        let mut r = victim(ALL);
        r.ns_pid = 12;
        let event = e.on_record(Record::Victim(r)).unwrap();
        assert_eq!(event.constraint, Some("memcg"));
        let oom_memcg = event.oom_memcg.unwrap();
        assert_eq!(oom_memcg.cgroup_id, 70);
        assert_eq!(oom_memcg.limit_bytes, Some(8 * e.page_size));
        assert_eq!(event.silent, Some(true));

        let mut other_thread = victim(ALL);
        other_thread.trigger_tid = 999;
        let unjoined = e.on_record(Record::Victim(other_thread)).unwrap();
        assert_eq!(unjoined.constraint, None);
    }
}
