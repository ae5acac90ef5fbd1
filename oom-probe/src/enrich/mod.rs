//! Builds user-facing events from kernel records: units in bytes, cgroup ids
//! named, the memory cgroup that ran out found, victims of one OOM decision
//! grouped, and what filled the memory explained.
//!
//! One type (`Enricher`) whose parts share its state; the OOM decision
//! (`constraint`, `oom_memcg`, `oom_id`) is its own file, `decision.rs`.

pub mod cgroup_layout;
pub mod cri;
mod decision;
pub mod explain;
pub mod killer_signal;
pub mod snapshot;
pub mod tasks;

use std::collections::HashMap;

use oom_probe_cgroupfs::CgroupResolver;
use oom_probe_common::{feature, OomContextRecord, VictimRecord};

use self::decision::{Decided, Decision, SAME_DECISION_NS};
use crate::{
    clock,
    decode::Record,
    event::{
        Constraint, Container, Event, KillKind, KillSignal, Kubernetes, Memcg, MemcgStatSource,
        OomKillEvent, OomMemcg, Rss, Task, TasksSource, Trigger, Victim,
    },
    kill_trace::Stage,
    text,
};

/// Turns records into events; keeps the little state that needs.
pub struct Enricher {
    node: String,
    page_size: u64,
    memcg_paths: Option<CgroupResolver>,
    constraint_names: HashMap<u32, Constraint>,
    /// Last OOM decision per triggering thread, with its oom_id.
    pending_contexts: HashMap<u32, (OomContextRecord, u64)>,
    /// The previous victim's decision, for kernels without a context hook.
    last_decision: Option<Decision>,
    next_oom_id: u64,
    /// Where `/proc` is (the host's, for the tasks of a kill).
    procfs: std::path::PathBuf,
    /// The boot id's first 8 hex digits, the first part of every event id.
    boot_id: String,
    /// Userspace killers' SIGTERMs held until their targets end.
    killer_signals: killer_signal::KillerSignals,
}

/// A kill's stable event id: `<boot>-<kernel_time_ns>-<pid>-<cgroup id>`
/// (cgroup id 0 when unknown). Everything in it comes from the kernel, so the
/// same kill gets the same id in whichever process prints it.
pub fn kill_id(boot: &str, kernel_time_ns: u64, pid: u32, cgroup_id: Option<u64>) -> String {
    format!("{boot}-{kernel_time_ns}-{pid}-{}", cgroup_id.unwrap_or(0))
}

impl Enricher {
    /// `memcg_paths` resolves ids of the memory controller's hierarchy;
    /// `constraint_names` maps the kernel's `enum oom_constraint` values.
    pub fn new(
        node: String,
        memcg_paths: Option<CgroupResolver>,
        constraint_names: HashMap<u32, Constraint>,
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
            procfs: "/proc".into(),
            pending_contexts: HashMap::new(),
            last_decision: None,
            next_oom_id: 1,
            boot_id: crate::boot::short_boot_id(),
            killer_signals: Default::default(),
        }
    }

    /// The node name every event carries.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The memory cgroup hierarchy, for reconciling kill counters.
    pub fn cgroups(&mut self) -> Option<&mut CgroupResolver> {
        self.memcg_paths.as_mut()
    }

    /// Reads the tasks of a kill from this `/proc` (the host's, mounted
    /// elsewhere in a DaemonSet) instead of `/proc`.
    pub fn set_procfs(&mut self, procfs: std::path::PathBuf) {
        self.procfs = procfs;
    }

    fn path_of(&mut self, id: u64) -> Option<String> {
        self.memcg_paths.as_mut()?.path_of(id)
    }

    /// The event for a record, or `None` for records that only feed later
    /// events (the OOM decision).
    pub fn on_record(&mut self, record: Record) -> Option<Event> {
        match record {
            Record::OomContext(context) => {
                self.pending_contexts.retain(|_, (c, _)| {
                    context.kernel_time_ns.saturating_sub(c.kernel_time_ns) < SAME_DECISION_NS
                });
                let oom_id = self.new_oom_id();
                self.pending_contexts
                    .insert(context.trigger_tid, (context, oom_id));
                None
            }
            Record::Victim(victim) => {
                self.killer_signals.on_kernel_kill(victim.tgid);
                Some(Event::kill(
                    KillKind::OomKill,
                    self.kill_event(&victim, KillKind::OomKill),
                ))
            }
            Record::UserspaceKill(signal) => {
                let joined = self.killer_signals.on_signal(signal)?;
                Some(self.userspace_kill(joined))
            }
            Record::KillerExit(exit) => {
                let joined = self.killer_signals.on_exit(&exit)?;
                Some(self.userspace_kill(joined))
            }
            Record::OomMark(victim) => {
                // Not a kill: the kernel counts no oom_kill for it, so
                // neither do we; said once on the log, never as an event.
                tracing::info!(
                    "the OOM killer chose pid {} ({}) in cgroup {:?} but only marked it: it was \
                     already exiting, so no SIGKILL was sent and no kill is counted",
                    victim.tgid,
                    String::from_utf8_lossy(&victim.comm)
                        .trim_end_matches('\0')
                        .to_owned(),
                    self.path_of(victim.memcg_levels[0].cgroup_id),
                );
                None
            }
        }
    }

    /// The `userspace_kill` of a killer's signal joined to its end.
    fn userspace_kill(&mut self, joined: killer_signal::Joined) -> Event {
        let mut event = self.kill_event(&joined.record, KillKind::UserspaceKill);
        event.signal = Some(joined.signal);
        event.exit = joined.exit;
        let mut explanation = explain::explain(KillKind::UserspaceKill, &event);
        if let Some(sigterm) = joined.sigterm_before_ns {
            let seconds = joined.record.kernel_time_ns.saturating_sub(sigterm) as f64 / 1e9;
            explanation = explanation.replacen(
                "a userspace OOM killer;",
                &format!(
                    "a userspace OOM killer, {seconds:.1} s after a SIGTERM the process did not \
                     end on;"
                ),
                1,
            );
        }
        event.explanation = Some(explanation);
        Event::kill(KillKind::UserspaceKill, event)
    }

    fn new_oom_id(&mut self) -> u64 {
        let id = self.next_oom_id;
        self.next_oom_id += 1;
        id
    }

    fn kill_event(&mut self, r: &VictimRecord, kind: KillKind) -> OomKillEvent {
        crate::kill_trace::record(r.kernel_time_ns);
        let has = |bit: u32| r.features & bit != 0;
        // Set per record: on pid-only kernels the task may not be found.
        let task = has(feature::TASK);
        let memcg = has(feature::MEMCG);
        let own = r.memcg_levels[0];
        let cgroup_id = memcg.then_some(own.cgroup_id);
        let cgroup_path = cgroup_id.and_then(|id| self.path_of(id));
        let ns_pid = has(feature::NS_PID).then_some(r.ns_pid);
        let kernel_kill = kind == KillKind::OomKill;
        let constraint = if kernel_kill {
            self.constraint(r)
        } else {
            Decided::none()
        };
        let oom_memcg = constraint.oom_memcg.map(|level| OomMemcg {
            cgroup_id: level.cgroup_id,
            path: self.path_of(level.cgroup_id),
            usage_bytes: Some(level.usage_pages * self.page_size),
            limit_bytes: self.limit_bytes(level.limit_pages),
        });
        // memory.stat of the memcg that ran out (else the victim's own),
        // and that memcg's usage at the kill to check the late read against.
        let own_usage = memcg.then(|| own.usage_pages * self.page_size);
        let stat_dir = oom_memcg
            .as_ref()
            .and_then(|m| Some((m.path.clone()?, m.usage_bytes)))
            .or_else(|| Some((cgroup_path.clone()?, own_usage)));
        crate::kill_trace::mark(Stage::DecodePath);
        let kill_clock = snapshot::KillClock::of(r.kernel_time_ns);
        let at_kill = |usage| snapshot::AtKill {
            usage,
            victim_anon: has(feature::RSS).then(|| self.bytes(r.rss_anon_pages)),
            time_ns: r.kernel_time_ns,
        };
        let (memcg_stat, memcg_stat_source) = match stat_dir {
            Some((path, usage_at_kill)) => {
                let dir = self.absolute(&path);
                let stat = dir.as_deref().and_then(explain::read_memcg_stat);
                let source = stat.map(|stat| {
                    let read = self.snapshot(stat, dir.as_deref(), r, &kill_clock);
                    let fit = snapshot::judge(&at_kill(usage_at_kill), &read);
                    // Late reads are rare and worth a line; reads that lost
                    // to the reaper are common (cgroups removed at once).
                    match (fit.reason(), fit.source()) {
                        (Some(reason), MemcgStatSource::AfterKillLate) => tracing::info!(
                            "memory.stat of {path} does not fit the kill of pid {}: {reason}; \
                             the explanation uses the kill's own figures",
                            r.tgid
                        ),
                        (Some(reason), _) => tracing::debug!(
                            "memory.stat of {path} does not fit the kill of pid {}: {reason}",
                            r.tgid
                        ),
                        (None, _) => {}
                    }
                    fit.source()
                });
                (stat, source)
            }
            None => (None, None),
        };
        crate::kill_trace::mark(Stage::MemcgStat);
        let group_kill = match (&cgroup_path, &oom_memcg) {
            (Some(victim), Some(oom)) => {
                self.oom_group_set(victim, oom.path.as_deref().unwrap_or("/"))
            }
            _ => false,
        };
        let oom_id = if kernel_kill {
            self.oom_id(r, &constraint, group_kill)
        } else {
            self.new_oom_id()
        };
        let identity = cgroup_path
            .as_deref()
            .map(cgroup_layout::parse)
            .unwrap_or_default();
        let container = container_from(&identity);
        let kubernetes = kubernetes_from(identity);
        let (victim_comm, victim_comm_hex) = match task {
            true => {
                let (text, hex) = text::comm(&r.comm);
                (Some(text), hex)
            }
            false => (None, None),
        };
        let (trigger_comm, trigger_comm_hex) = text::comm(&r.trigger_comm);
        let trigger_cgroup_id = (memcg && r.trigger_cgroup_id != 0).then_some(r.trigger_cgroup_id);
        let trigger_path = trigger_cgroup_id.and_then(|id| self.path_of(id));
        let mut event = OomKillEvent {
            time: humantime::format_rfc3339_millis(clock::wall_time(r.kernel_time_ns)).to_string(),
            kernel_time_ns: r.kernel_time_ns,
            node: self.node.clone(),
            victim: Victim {
                pid: r.tgid,
                tid: r.tid,
                ns_pid,
                comm: victim_comm,
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
                cgroup_v2_id: has(feature::CGROUP_V2)
                    .then_some(r.cgroup_v2_id)
                    .filter(|&id| id != 0),
                oom_points: constraint
                    .chosen
                    .filter(|&(tgid, _)| tgid == r.tgid)
                    .map(|(_, points)| points),
                comm_hex: victim_comm_hex,
            },
            trigger: Trigger {
                pid: r.trigger_tgid,
                comm: trigger_comm,
                comm_hex: trigger_comm_hex,
                tid: r.trigger_tid,
                cgroup_id: trigger_cgroup_id,
                kubernetes: trigger_path.as_deref().and_then(kubernetes_from_path),
                cgroup_path: trigger_path,
            },
            memcg: Memcg {
                usage_bytes: memcg.then(|| own.usage_pages * self.page_size),
                limit_bytes: if memcg {
                    self.limit_bytes(own.limit_pages)
                } else {
                    None
                },
            },
            constraint: constraint.name,
            constraint_source: constraint.source,
            oom_memcg,
            memcg_stat,
            explanation: None,
            oom_id,
            group_kill,
            kubernetes,
            silent: ns_pid.map(|pid| pid != 1),
            oom_domain_bytes: constraint.domain_pages.map(|pages| pages * self.page_size),
            container,
            memcg_stat_source,
            tasks: None,
            tasks_total: None,
            tasks_source: None,
            pressure_before: None,
            signal: Some(KillSignal::Sigkill),
            exit: None,
            event_id: kill_id(&self.boot_id, r.kernel_time_ns, r.tgid, cgroup_id),
            replayed: false,
        };
        if let Some(scene) = self.scene(&event, &kill_clock) {
            event.tasks = Some(scene.top);
            event.tasks_total = Some(scene.total);
            event.tasks_source = Some(match scene.later_left_out {
                0 => TasksSource::Procfs,
                later => {
                    tracing::info!(
                        "the kill of pid {}: {later} process(es) of its cgroup started after it \
                         and were left out of its tasks",
                        r.tgid
                    );
                    TasksSource::ProcfsLaterLeftOut
                }
            });
        }
        crate::kill_trace::mark(Stage::Tasks);
        event.explanation = Some(explain::explain(kind, &event));
        crate::kill_trace::mark(Stage::Explain);
        event
    }

    /// The processes of the memory cgroup that ran out (the victim's own
    /// when none is known), or of the node for a node-wide OOM, with the
    /// victim among them.
    fn scene(&self, event: &OomKillEvent, kill: &snapshot::KillClock) -> Option<tasks::Scene> {
        let victim = Task {
            pid: event.victim.pid,
            ns_pid: event.victim.ns_pid,
            comm: event.victim.comm.clone(),
            rss_bytes: event.victim.rss_bytes,
            oom_score_adj: event.victim.oom_score_adj,
            cgroup_path: None,
            kubernetes: None,
        };
        let node_wide = event.constraint == Some(Constraint::Global);
        let mut scene = if node_wide {
            tasks::of_node(&self.procfs, victim, kill)?
        } else {
            let path = event
                .oom_memcg
                .as_ref()
                .and_then(|m| m.path.clone())
                .or_else(|| event.victim.cgroup_path.clone())?;
            tasks::of_cgroup(&self.absolute(&path)?, &self.procfs, victim, kill)?
        };
        if node_wide {
            for task in &mut scene.top {
                task.cgroup_path = if task.pid == event.victim.pid {
                    event.victim.cgroup_path.clone()
                } else {
                    tasks::memory_cgroup_of(&self.procfs, task.pid)
                };
                task.kubernetes = task.cgroup_path.as_deref().and_then(kubernetes_from_path);
            }
        }
        Some(scene)
    }

    /// What is known at the read of `stat` from the memcg at `dir` after
    /// the kill of `r`: the usage now, the time, and (only when the read is
    /// late, so as not to touch a victim that may still be exiting) whether
    /// the victim exited.
    fn snapshot(
        &self,
        stat: crate::event::MemcgStat,
        dir: Option<&std::path::Path>,
        r: &VictimRecord,
        kill: &snapshot::KillClock,
    ) -> snapshot::Snapshot {
        let time_ns = clock::monotonic_now_ns();
        let late = time_ns.saturating_sub(r.kernel_time_ns) >= snapshot::LATE_READ_NS;
        snapshot::Snapshot {
            stat,
            usage_now: dir.and_then(snapshot::read_usage),
            time_ns,
            victim_exited: late && snapshot::victim_exited(&self.procfs, r.tgid, kill),
        }
    }

    fn absolute(&self, path: &str) -> Option<std::path::PathBuf> {
        let root = self.memcg_paths.as_ref()?.root();
        Some(root.join(path.trim_start_matches('/')))
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

/// The container a cgroup path names, in a pod or not.
pub(crate) fn container_from(identity: &cgroup_layout::CgroupIdentity) -> Option<Container> {
    Some(Container {
        id: identity.container_id.clone()?,
        runtime: identity.runtime.map(str::to_owned),
    })
}

/// The pod and container a cgroup path names, as [`kubernetes_from`].
pub(crate) fn kubernetes_from_path(path: &str) -> Option<Kubernetes> {
    kubernetes_from(cgroup_layout::parse(path))
}

/// The ids a pod's cgroup path carries (pod uid, container id, QoS class);
/// names come later from the runtime or the API server. `None` for cgroups
/// that are not a pod's.
fn kubernetes_from(identity: cgroup_layout::CgroupIdentity) -> Option<Kubernetes> {
    identity.pod_uid.as_ref()?;
    Some(Kubernetes {
        pod_uid: identity.pod_uid,
        container_id: identity.container_id,
        qos_class: identity.qos_class.map(|q| q.as_str().to_string()),
        ..Kubernetes::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ConstraintSource;
    use oom_probe_common::{
        MemcgLevel, RECORD_OOM_CONTEXT, RECORD_OOM_MARK, RECORD_USERSPACE_KILL, RECORD_VICTIM,
    };

    const ALL: u32 = feature::VICTIM_TASK_ARG
        | feature::TASK
        | feature::NS_PID
        | feature::RSS
        | feature::CGROUP_V2
        | feature::MEMCG
        | feature::OOM_CONTROL;
    const UNLIMITED: u64 = i64::MAX as u64 / 4096;

    fn enricher() -> Enricher {
        Enricher::new(
            "node-a".into(),
            None,
            HashMap::from([(0, Constraint::Global), (3, Constraint::Memcg)]),
        )
    }

    fn kill(event: Option<Event>) -> OomKillEvent {
        match event {
            Some(Event::OomKill(kill) | Event::UserspaceKill(kill)) => *kill,
            other => panic!("not a kill: {other:?}"),
        }
    }

    fn level(cgroup_id: u64, usage_pages: u64, limit_pages: u64) -> MemcgLevel {
        MemcgLevel {
            cgroup_id,
            usage_pages,
            limit_pages,
        }
    }

    fn victim(features: u32) -> VictimRecord {
        let mut levels = [MemcgLevel::default(); oom_probe_common::MEMCG_LEVELS];
        levels[0] = level(77, 20, UNLIMITED);
        levels[1] = level(1, 5000, UNLIMITED);
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
            cgroup_v2_id: 88,
            memcg_levels: levels,
            ..Default::default()
        }
    }

    #[test]
    fn converts_pages_and_flags_an_init_kill_as_not_silent() {
        let mut e = enricher();
        let event = kill(e.on_record(Record::Victim(victim(ALL))));
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
        assert_eq!(event.victim.cgroup_v2_id, Some(88));
        assert_eq!(event.victim.oom_points, None, "no decision hook");
        assert_eq!(event.oom_domain_bytes, None);
        assert_eq!(event.silent, Some(false));
        assert_eq!((event.trigger.pid, event.trigger.tid), (300, 301));
        assert_eq!(event.trigger.cgroup_id, None, "0 is no cgroup");
        let json = serde_json::to_value(Event::OomKill(Box::new(event))).unwrap();
        assert_eq!(json["type"], "oom_kill");
        assert_eq!(json["victim"]["rss_bytes"]["anon"], 10 * page);
    }

    #[test]
    fn the_trigger_is_named_by_its_own_cgroup() {
        let mut r = victim(ALL);
        r.trigger_cgroup_id = 99;
        let event = kill(enricher().on_record(Record::Victim(r)));
        assert_eq!(event.trigger.cgroup_id, Some(99));
        // The enricher of these tests has no cgroupfs: ids only.
        assert_eq!(event.trigger.cgroup_path, None);
        let mut r = victim(ALL & !feature::MEMCG);
        r.trigger_cgroup_id = 99;
        let event = kill(enricher().on_record(Record::Victim(r)));
        assert_eq!(
            event.trigger.cgroup_id, None,
            "not read without the memcg offsets"
        );
    }

    #[test]
    fn no_memcg_at_its_limit_means_a_global_oom() {
        let event = kill(enricher().on_record(Record::Victim(victim(ALL))));
        assert_eq!(event.constraint, Some(Constraint::Global));
        assert_eq!(
            event.constraint_source,
            Some(ConstraintSource::PageCounters)
        );
        assert_eq!(event.oom_memcg, None);
        assert!(event.explanation.unwrap().starts_with("node-wide OOM"));
    }

    #[test]
    fn the_lowest_memcg_at_its_limit_ran_out() {
        let mut r = victim(ALL);
        r.memcg_levels[0] = level(77, 100, 1_000_000); // far from its limit
        r.memcg_levels[1] = level(70, 8_190, 8_192); // the pod: full
        r.memcg_levels[2] = level(60, 9_000, 9_000); // also full, but higher up
        let mut e = enricher();
        let event = kill(e.on_record(Record::Victim(r)));
        assert_eq!(event.constraint, Some(Constraint::Memcg));
        let oom = event.oom_memcg.unwrap();
        assert_eq!(oom.cgroup_id, 70);
        assert_eq!(oom.limit_bytes, Some(8_192 * e.page_size));
        assert_eq!(event.memcg.limit_bytes, Some(1_000_000 * e.page_size));
    }

    /// A victim more than 8 memcgs below the one that ran out (kind in
    /// Docker): unlimited levels all the way up the carried ones.
    fn deep_victim() -> VictimRecord {
        let mut r = victim(ALL);
        for (i, l) in r.memcg_levels.iter_mut().enumerate() {
            *l = level(100 + i as u64, 8_000, UNLIMITED);
        }
        r
    }

    #[test]
    fn a_memcg_at_its_limit_above_the_carried_levels_ran_out() {
        let mut r = deep_victim();
        r.memcg_beyond = level(60, 8_190, 8_192);
        r.memcg_depth = 12;
        let event = kill(enricher().on_record(Record::Victim(r)));
        assert_eq!(event.constraint, Some(Constraint::Memcg));
        assert_eq!(event.oom_memcg.map(|m| m.cgroup_id), Some(60));
    }

    #[test]
    fn no_memcg_at_its_limit_is_global_only_when_the_walk_reached_the_root() {
        let mut r = deep_victim();
        r.memcg_depth = 12;
        let event = kill(enricher().on_record(Record::Victim(r)));
        assert_eq!(event.constraint, Some(Constraint::Global));
        // Deeper than MEMCG_WALK_LEVELS: the walk never saw the root.
        r.memcg_depth = 0;
        let event = kill(enricher().on_record(Record::Victim(r)));
        assert_eq!(event.constraint, None, "unknown, not global");
        assert_eq!(event.oom_memcg, None);
        assert!(!event.explanation.unwrap().contains("node-wide"));
    }

    /// A record whose task was not found (pid-only `mark_victim`, no
    /// SIGKILL seen before it) has every task-based feature cleared.
    #[test]
    fn a_victim_without_its_task_gives_nulls_not_zeros() {
        let features = ALL & !feature::TASK_BASED & !feature::VICTIM_TASK_ARG;
        let event = kill(enricher().on_record(Record::Victim(victim(features))));
        assert_eq!(event.victim.pid, 300);
        assert_eq!(event.victim.comm, None);
        assert_eq!(event.victim.rss_bytes, None);
        assert_eq!(event.victim.cgroup_id, None);
        assert_eq!(event.silent, None);
        assert_eq!(event.memcg.usage_bytes, None);
        assert_eq!(event.constraint, None);
    }

    /// On pid-only kernels a record whose task was found is as full as on
    /// 6.9+: the fields come from the task, not from the tracepoint.
    #[test]
    fn pid_only_kernels_report_every_field_when_the_task_was_found() {
        let event =
            kill(enricher().on_record(Record::Victim(victim(ALL & !feature::VICTIM_TASK_ARG))));
        assert_eq!(event.victim.comm.as_deref(), Some("celery"));
        assert_eq!(event.victim.uid, Some(1000));
        assert_eq!(event.victim.oom_score_adj, Some(999));
        assert_eq!(event.victim.ns_pid, Some(1));
        assert_eq!(event.silent, Some(false));
        assert!(event.victim.rss_bytes.is_some());
        assert_eq!(event.victim.cgroup_id, Some(77));
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
            totalpages: 8192,
            chosen_tgid: 300,
            chosen_points: 1234,
            ..Default::default()
        };
        assert_eq!(e.on_record(Record::OomContext(context)), None);
        let mut r = victim(ALL);
        r.ns_pid = 12;
        let first = kill(e.on_record(Record::Victim(r)));
        assert_eq!(first.constraint, Some(Constraint::Memcg));
        assert_eq!(
            first.constraint_source,
            Some(ConstraintSource::OomKillProcess)
        );
        let oom_memcg = first.oom_memcg.clone().unwrap();
        assert_eq!(oom_memcg.cgroup_id, 70);
        assert_eq!(oom_memcg.limit_bytes, Some(8 * e.page_size));
        assert_eq!(first.silent, Some(true));
        assert_eq!(first.oom_domain_bytes, Some(8192 * e.page_size));
        assert_eq!(first.victim.oom_points, Some(1234), "the chosen task");
        r.tgid = 302;
        let second = kill(e.on_record(Record::Victim(r)));
        assert_eq!(second.oom_id, first.oom_id, "one decision, one oom_id");
        assert_eq!(second.victim.oom_points, None, "not the chosen task");
        assert_eq!(second.oom_domain_bytes, first.oom_domain_bytes);

        let mut other_thread = victim(ALL);
        other_thread.trigger_tid = 999;
        let unjoined = kill(e.on_record(Record::Victim(other_thread)));
        assert_eq!(
            unjoined.constraint_source,
            Some(ConstraintSource::PageCounters)
        );
        assert_ne!(unjoined.oom_id, first.oom_id);
    }

    #[test]
    fn without_a_context_hook_only_a_group_kill_shares_an_oom_id() {
        let mut e = enricher();
        let mut r = victim(ALL);
        r.memcg_levels[0] = level(77, 8_192, 8_192);
        let decided = e.constraint(&r);
        let a = e.oom_id(&r, &decided, true);
        r.tgid = 400;
        r.kernel_time_ns += 50_000;
        let b = e.oom_id(&r, &decided, true);
        assert_eq!(a, b, "memory.oom.group: one decision killed both");
        r.kernel_time_ns += 2 * SAME_DECISION_NS;
        let c = e.oom_id(&r, &decided, true);
        assert_ne!(c, a, "a later kill is a new decision");
    }

    #[test]
    fn without_oom_group_back_to_back_kills_are_separate_decisions() {
        // Two kills 15 ms apart in one v1 memcg, by the same trigger: the
        // kernel made two decisions (v1 has no memory.oom.group).
        let mut e = enricher();
        let mut r = victim(ALL);
        r.memcg_levels[0] = level(77, 8_192, 8_192);
        let a = kill(e.on_record(Record::Victim(r)));
        r.tgid = 400;
        r.kernel_time_ns += 15_000_000;
        let b = kill(e.on_record(Record::Victim(r)));
        assert!(!a.group_kill && !b.group_kill);
        assert_ne!(a.oom_id, b.oom_id);
    }

    #[test]
    fn containers_outside_kubernetes_keep_their_id_and_runtime() {
        let id = "b".repeat(64);
        for (path, runtime) in [
            (format!("/system.slice/docker-{id}.scope"), Some("docker")),
            (
                format!("/machine.slice/libpod-{id}.scope/container"),
                Some("podman"),
            ),
            (format!("/kubepods/pod{}/{id}", "1".repeat(32)), None),
        ] {
            let identity = cgroup_layout::parse(&path);
            assert_eq!(
                container_from(&identity),
                Some(Container {
                    id: id.clone(),
                    runtime: runtime.map(str::to_owned)
                }),
                "{path}"
            );
        }
        let host = cgroup_layout::parse("/system.slice/kubelet.service");
        assert_eq!(container_from(&host), None);
    }

    #[test]
    fn a_pod_cgroup_path_gives_the_ids_and_a_host_path_none() {
        let uid = "0f8a1c2e-1111-2222-3333-444455556666";
        let id = "a".repeat(64);
        let k8s = kubernetes_from_path(&format!("/kubepods/burstable/pod{uid}/{id}")).unwrap();
        assert_eq!(k8s.pod_uid.as_deref(), Some(uid));
        assert_eq!(k8s.container_id.as_deref(), Some(id.as_str()));
        assert_eq!(k8s.qos_class.as_deref(), Some("Burstable"));
        assert_eq!(
            k8s.pod, None,
            "names come from the runtime or the API server"
        );
        assert_eq!(kubernetes_from_path("/system.slice/kubelet.service"), None);
    }

    #[test]
    fn userspace_kills_name_the_killer() {
        let mut r = victim(ALL);
        r.kind = RECORD_USERSPACE_KILL;
        r.trigger_comm = *b"systemd-oomd\0\0\0\0";
        let event = enricher().on_record(Record::UserspaceKill(r));
        assert!(matches!(event, Some(Event::UserspaceKill(_))), "{event:?}");
        let event = kill(event);
        assert_eq!(event.trigger.comm, "systemd-oomd");
        assert_eq!(event.constraint, None);
        assert!(event
            .explanation
            .unwrap()
            .starts_with("SIGKILL from systemd-oomd"));
    }

    #[test]
    fn a_killers_sigterm_is_a_kill_at_the_end_it_brought_and_one_with_its_sigkill() {
        let mut e = enricher();
        let mut r = victim(ALL);
        r.kind = RECORD_USERSPACE_KILL;
        r.trigger_comm = *b"earlyoom\0\0\0\0\0\0\0\0";
        r.signal = oom_probe_common::SIGTERM;
        assert_eq!(e.on_record(Record::UserspaceKill(r)), None, "held");
        let exit = oom_probe_common::ExitRecord {
            kind: oom_probe_common::RECORD_KILLER_EXIT,
            exit_code: 0x0100,
            kernel_time_ns: r.kernel_time_ns + 1_000_000,
            tgid: r.tgid,
            _pad: 0,
        };
        let event = kill(e.on_record(Record::KillerExit(exit)));
        assert_eq!(event.signal, Some(KillSignal::Sigterm));
        assert_eq!(event.kernel_time_ns, r.kernel_time_ns, "the SIGTERM's time");
        let ended = event.exit.unwrap();
        assert_eq!((ended.signal, ended.code), (None, Some(1)));
        assert!(
            event.explanation.as_deref().unwrap().starts_with(
                "SIGTERM from earlyoom, a userspace OOM killer, ended the process \
                 (it handled the signal and exited with status 1)"
            ),
            "{:?}",
            event.explanation
        );
        // Ignored, then the SIGKILL 2.5 s later: one event, the SIGKILL.
        assert_eq!(e.on_record(Record::UserspaceKill(r)), None);
        let sigkill = VictimRecord {
            signal: oom_probe_common::SIGKILL,
            kernel_time_ns: r.kernel_time_ns + 2_500_000_000,
            ..r
        };
        let event = kill(e.on_record(Record::UserspaceKill(sigkill)));
        assert_eq!(event.signal, Some(KillSignal::Sigkill));
        assert_eq!(event.exit, None);
        assert!(
            event.explanation.as_deref().unwrap().starts_with(
                "SIGKILL from earlyoom, a userspace OOM killer, 2.5 s after a SIGTERM"
            ),
            "{:?}",
            event.explanation
        );
        let exit = oom_probe_common::ExitRecord {
            exit_code: 9,
            ..exit
        };
        assert_eq!(e.on_record(Record::KillerExit(exit)), None);
    }

    #[test]
    fn a_mark_of_an_exiting_task_is_no_event_and_the_next_kill_is() {
        let mut e = enricher();
        let mut r = victim(ALL);
        r.kind = RECORD_OOM_MARK;
        assert_eq!(e.on_record(Record::OomMark(r)), None);
        let killed = VictimRecord {
            kind: RECORD_VICTIM,
            tgid: r.tgid + 1,
            ..r
        };
        let event = kill(e.on_record(Record::Victim(killed)));
        assert_eq!(event.victim.pid, r.tgid + 1);
    }
}
