//! The event oom-probe emits for each kill: the stable JSON schema that log
//! pipelines, alerts and the tests rely on. Field names never change; a
//! value the kernel could not give is `null`, never a made-up zero.

use serde::{Deserialize, Serialize};

mod pressure;

pub use pressure::{
    NodeShortage, PressureBefore, PressureEndEvent, PressureEvent, PressureScope, PressureSource,
    PressureTarget, Psi, StallingCgroup,
};

/// Everything oom-probe emits, in one stream; the variant is the JSON
/// object's first field, `type` (`oom_kill`, `userspace_kill`,
/// `oom_kill_unobserved`, `eviction`, `memory_pressure`,
/// `memory_pressure_end`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A process the kernel OOM killer killed.
    OomKill(Box<OomKillEvent>),
    /// A process a userspace OOM killer (systemd-oomd, earlyoom...) SIGKILLed,
    /// or SIGTERMed and saw end (`signal`); `trigger` is the killer.
    UserspaceKill(Box<OomKillEvent>),
    /// Kills the kernel counted that oom-probe did not see.
    OomKillUnobserved(UnobservedKills),
    /// A pod the kubelet evicted for node memory pressure.
    Eviction(Box<EvictionEvent>),
    /// A memory cgroup (or the node) at its limit and struggling to
    /// reclaim: the warning before an OOM kill, at most once per
    /// `--pressure-interval` while it lasts.
    MemoryPressure(Box<PressureEvent>),
    /// The pressure reported by `memory_pressure` cleared.
    MemoryPressureEnd(Box<PressureEndEvent>),
}

/// Who killed a process for memory: which of the two kill events it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillKind {
    /// The kernel OOM killer (`oom_kill`).
    OomKill,
    /// A userspace OOM killer's SIGKILL, or its SIGTERM that the process
    /// ended after (`userspace_kill`).
    UserspaceKill,
}

/// The signal a kill ended its victim with (`signal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillSignal {
    /// The kernel OOM killer's (always), or a userspace killer's SIGKILL.
    #[serde(rename = "SIGKILL")]
    Sigkill,
    /// A userspace killer's SIGTERM that the victim ended after.
    #[serde(rename = "SIGTERM")]
    Sigterm,
}

impl KillSignal {
    /// The JSON value: `SIGKILL` or `SIGTERM`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sigkill => "SIGKILL",
            Self::Sigterm => "SIGTERM",
        }
    }
}

/// How the victim of a userspace killer's SIGTERM ended, from the exit
/// code the kernel kept for it (`task_struct.exit_code` at
/// `sched_process_exit`): one of the two fields is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VictimExit {
    /// The signal whose action ended it (`SIGTERM`: the process did not
    /// handle it; another name: it died of that while shutting down); null
    /// when it exited on its own.
    pub signal: Option<String>,
    /// The status it gave `exit()` (0-255), having handled the SIGTERM;
    /// null when a signal ended it.
    pub code: Option<u32>,
}

impl Event {
    /// The event for a kill of this kind.
    pub fn kill(kind: KillKind, kill: OomKillEvent) -> Self {
        match kind {
            KillKind::OomKill => Self::OomKill(Box::new(kill)),
            KillKind::UserspaceKill => Self::UserspaceKill(Box::new(kill)),
        }
    }

    /// The kill and its kind, for the two kill events.
    pub fn as_kill(&self) -> Option<(KillKind, &OomKillEvent)> {
        match self {
            Self::OomKill(kill) => Some((KillKind::OomKill, kill)),
            Self::UserspaceKill(kill) => Some((KillKind::UserspaceKill, kill)),
            Self::OomKillUnobserved(_)
            | Self::Eviction(_)
            | Self::MemoryPressure(_)
            | Self::MemoryPressureEnd(_) => None,
        }
    }

    /// The stable event id (kills and unobserved kills; `None` for an
    /// eviction and the pressure events).
    pub fn event_id(&self) -> Option<&str> {
        match self {
            Self::OomKill(kill) | Self::UserspaceKill(kill) => Some(&kill.event_id),
            Self::OomKillUnobserved(missed) => Some(&missed.event_id),
            Self::Eviction(_) | Self::MemoryPressure(_) | Self::MemoryPressureEnd(_) => None,
        }
    }

    /// Marks the event as printed again after a crash (`replayed: true`).
    pub fn mark_replayed(&mut self) {
        match self {
            Self::OomKill(kill) | Self::UserspaceKill(kill) => kill.replayed = true,
            Self::OomKillUnobserved(missed) => missed.replayed = true,
            Self::Eviction(_) | Self::MemoryPressure(_) | Self::MemoryPressureEnd(_) => {}
        }
    }

    /// [`Event::as_kill`], mutable (the namer fills `kubernetes` in place).
    pub fn as_kill_mut(&mut self) -> Option<(KillKind, &mut OomKillEvent)> {
        match self {
            Self::OomKill(kill) => Some((KillKind::OomKill, kill)),
            Self::UserspaceKill(kill) => Some((KillKind::UserspaceKill, kill)),
            Self::OomKillUnobserved(_)
            | Self::Eviction(_)
            | Self::MemoryPressure(_)
            | Self::MemoryPressureEnd(_) => None,
        }
    }
}

/// Why the kernel ran out of memory: the `enum oom_constraint` of its OOM
/// decision (`CONSTRAINT_NONE` is `global`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// A memory cgroup reached its limit (`CONSTRAINT_MEMCG`).
    Memcg,
    /// The node ran out of memory (`CONSTRAINT_NONE`).
    Global,
    /// The allowed cpuset's memory nodes ran out (`CONSTRAINT_CPUSET`).
    Cpuset,
    /// A NUMA memory policy's nodes ran out (`CONSTRAINT_MEMORY_POLICY`).
    Mempolicy,
}

impl Constraint {
    /// The JSON value, also the `constraint` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memcg => "memcg",
            Self::Global => "global",
            Self::Cpuset => "cpuset",
            Self::Mempolicy => "mempolicy",
        }
    }
}

/// How `constraint` was learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintSource {
    /// The kernel's own decision, from `oom_kill_process` (fentry or kprobe).
    OomKillProcess,
    /// Inferred in eBPF from the page counters of the victim's memcg and
    /// its ancestors at the kill, on kernels without either hook.
    PageCounters,
}

/// One process killed for memory: by the kernel OOM killer (`oom_kill`) or by
/// a userspace OOM killer such as systemd-oomd (`userspace_kill`); which one
/// is the [`Event`] variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OomKillEvent {
    /// RFC 3339 wall-clock time of the kill.
    pub time: String,
    /// The kernel's CLOCK_MONOTONIC stamp of the kill, for latency figures.
    pub kernel_time_ns: u64,
    pub node: String,
    pub victim: Victim,
    /// The task whose allocation set off the kernel OOM killer; for a
    /// `userspace_kill`, the killer process.
    pub trigger: Trigger,
    /// The victim's own memory cgroup at the time of the kill.
    pub memcg: Memcg,
    /// Why the kernel ran out: `memcg`, `global`, `cpuset` or `mempolicy`.
    pub constraint: Option<Constraint>,
    /// How `constraint` was learnt: `oom_kill_process` (the kernel's own
    /// decision, via fentry/kprobe) or `page_counters` (inferred from the
    /// memcg counters at kill time, on kernels without either).
    pub constraint_source: Option<ConstraintSource>,
    /// The memory cgroup whose limit ran out (null for a global OOM).
    pub oom_memcg: Option<OomMemcg>,
    /// What filled the memory cgroup that ran out, read from its
    /// `memory.stat` right after the kill (not at it: see
    /// `memcg_stat_source`).
    pub memcg_stat: Option<MemcgStat>,
    /// One sentence a person can act on.
    pub explanation: Option<String>,
    /// Shared by every victim of one OOM decision.
    pub oom_id: u64,
    /// True when `memory.oom.group` made the kernel kill the whole cgroup.
    pub group_kill: bool,
    /// Pod and container of the victim; null when its cgroup is not a pod's.
    pub kubernetes: Option<Kubernetes>,
    /// True when the victim's container survives the kill (Kubernetes
    /// reports nothing): decided against the container's own init pid as
    /// the CRI runtime reports it (false also when the container had
    /// exited), else against pid 1 of the victim's pid namespace; null
    /// when neither is known.
    pub silent: Option<bool>,
    /// Size of the OOM domain in bytes (`oom_control.totalpages` times the
    /// page size: the memcg's limit, plus swap where counted, or the node's
    /// RAM plus swap for a global OOM), from the `oom_kill_process` hook;
    /// null without it.
    pub oom_domain_bytes: Option<u64>,
    /// The container the victim ran in, read from its cgroup path alone, in
    /// Kubernetes or not (Docker, Podman, containerd, CRI-O); null when the
    /// path names no container (a host service, a pod-level cgroup, conmon).
    pub container: Option<Container>,
    /// Whether `memcg_stat`, read after the kill, can stand for it, judged
    /// against the kill's usage, victim RSS and time (`enrich::snapshot`):
    /// `after_kill` (it fits), `after_kill_inconsistent` (memory was freed
    /// before the read, or no usage at the kill) or `after_kill_late`
    /// (memory was charged after the kill: a restarted container). Only
    /// `after_kill` is used by the explanation. Null with `memcg_stat`.
    pub memcg_stat_source: Option<MemcgStatSource>,
    /// The biggest processes (at most 10, by resident memory) of the memory
    /// cgroup that ran out and the cgroups below it, or of the whole node for
    /// a node-wide OOM (each then with its cgroup and pod); the victim is
    /// always among them, with its figures at the kill. Null when they could
    /// not be read.
    pub tasks: Option<Vec<Task>>,
    /// How many processes that cgroup (or the node) had in all, those that
    /// started after the kill not counted.
    pub tasks_total: Option<u64>,
    /// How `tasks` were taken: `procfs` (from userspace right after the
    /// event: `cgroup.procs` and `/proc/<pid>/status`), or
    /// `procfs_later_left_out` (the same, and processes that started after
    /// the kill were found and left out of `tasks` and `tasks_total`).
    pub tasks_source: Option<TasksSource>,
    /// This kill's stable id, from what the kernel gave: the first 8 hex
    /// digits of the boot id, `kernel_time_ns`, the victim's pid and its
    /// memory cgroup id (0 when unknown), joined by `-`. The same kill
    /// printed again after a crash (`replayed`) has the same id.
    #[serde(default)]
    pub event_id: String,
    /// True when this event was committed before a crash of the agent and
    /// may already have been printed then: the same event again, never a
    /// second kill (see the README's reliability section).
    #[serde(default)]
    pub replayed: bool,
    /// The `memory_pressure` episode of the victim's memory cgroup (or of
    /// the cgroup that ran out) that this kill ends, when oom-probe reported
    /// one; null when the kill came without a reported warning.
    #[serde(default)]
    pub pressure_before: Option<PressureBefore>,
    /// The signal that ended the victim: `SIGKILL` for every `oom_kill`
    /// (the kernel OOM killer sends nothing else) and for a userspace
    /// killer's SIGKILL, reported when it is sent; `SIGTERM` for a
    /// userspace killer's SIGTERM that the victim ended after (within 30 s;
    /// reported at its end, with the figures of the signal's time). Null
    /// only in events stored by older versions.
    #[serde(default)]
    pub signal: Option<KillSignal>,
    /// How the victim ended, for a `signal: "SIGTERM"` kill (read at its
    /// end); null for every other kill.
    #[serde(default)]
    pub exit: Option<VictimExit>,
}

/// One process of the scene at the kill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Process id (host pid namespace).
    pub pid: u32,
    /// Its pid in its own pid namespace (`NSpid`'s last number).
    pub ns_pid: Option<u32>,
    pub comm: Option<String>,
    /// Resident memory by kind (`RssAnon`, `RssFile`, `RssShmem`).
    pub rss_bytes: Option<Rss>,
    pub oom_score_adj: Option<i32>,
    /// Its memory cgroup (path below the hierarchy root); set for a
    /// node-wide OOM, null otherwise (all are in the cgroup that ran out).
    pub cgroup_path: Option<String>,
    /// Its pod, for a node-wide OOM; null otherwise or outside any pod.
    pub kubernetes: Option<Kubernetes>,
}

/// How the `tasks` of an event were taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TasksSource {
    /// From userspace right after the event (`cgroup.procs`, `/proc`):
    /// processes that exited in between are missing, except the victim,
    /// whose figures come from the kernel at the kill.
    Procfs,
    /// As `Procfs`, and processes that started after the kill (their
    /// `/proc/<pid>/stat` start time) were left out: not the kill's scene.
    ProcfsLaterLeftOut,
}

/// Whether `memcg_stat` fits the kill (`enrich::snapshot::judge`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemcgStatSource {
    /// Read after the kill; its total (anon + file + kernel + sock) is at
    /// least three quarters of the memcg's usage at the kill, and no more
    /// than the kill can have left.
    AfterKill,
    /// Read after the kill and under three quarters of the usage at the
    /// kill (memory was already freed), or with no usage at the kill.
    AfterKillInconsistent,
    /// Read after the kill and over what the kill can have left (its usage,
    /// less the victim's anonymous RSS once it exited) by more than an
    /// eighth of its usage: memory charged after the kill.
    AfterKillLate,
}

/// A container as its cgroup path names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// The runtime's full container id (64 lowercase hex), as `docker`,
    /// `podman` and `crictl` take it.
    pub id: String,
    /// `containerd`, `cri-o`, `docker` or `podman`, where the cgroup's name
    /// or its parent says which; null for a bare id under a pod (kubelet's
    /// cgroupfs layout does not name the runtime).
    pub runtime: Option<String>,
}

/// The killed process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Victim {
    pub pid: u32,
    pub tid: u32,
    pub ns_pid: Option<u32>,
    /// The task's name (`task_struct.comm`, at most 15 bytes) in printable
    /// form: valid UTF-8 as is, other bytes and control characters as
    /// `\xNN` like the kernel log (see `comm_hex`).
    pub comm: Option<String>,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i32>,
    pub rss_bytes: Option<Rss>,
    pub total_vm_bytes: Option<u64>,
    /// Id of the victim's memory cgroup (cgroupfs inode number).
    pub cgroup_id: Option<u64>,
    /// Path of that cgroup below its hierarchy's root; null when the cgroup
    /// vanished before oom-probe could read its name.
    pub cgroup_path: Option<String>,
    /// Id of the victim's cgroup on the unified (v2) hierarchy (its cgroupfs
    /// inode; the same as `cgroup_id` on a v2-only node), read in eBPF from
    /// the task's default css_set; null when no v2 hierarchy is mounted or
    /// the kernel's BTF lacks the fields.
    pub cgroup_v2_id: Option<u64>,
    /// The kernel's badness score of the victim (`oom_control.chosen_points`,
    /// the value the OOM killer ranked tasks by), from the `oom_kill_process`
    /// hook; null without that hook, and for victims of a group kill other
    /// than the chosen task.
    pub oom_points: Option<i64>,
    /// The exact bytes of `comm` as lowercase hex (`"7801ff79"`) when its
    /// printable form had to escape any; null when `comm` is the bytes
    /// verbatim (or is null).
    pub comm_hex: Option<String>,
}

/// Resident memory by kind: tells "the process was big" from "tmpfs filled
/// the memcg".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rss {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

/// The task whose allocation set off the OOM killer (often not the victim),
/// named like the victim; for a `userspace_kill`, the killer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// Process id (host pid namespace).
    pub pid: u32,
    /// Printable form of the task's name, as `victim.comm`.
    pub comm: String,
    /// The exact bytes of `comm` in hex when it escaped any, as
    /// `victim.comm_hex`.
    pub comm_hex: Option<String>,
    /// Thread id (host pid namespace) of the allocating thread.
    pub tid: u32,
    /// Id of its memory cgroup (cgroupfs inode), read in eBPF from the
    /// current task at the kill; null when the kernel's BTF lacks the fields.
    pub cgroup_id: Option<u64>,
    /// Path of that cgroup below its hierarchy's root; null when unknown.
    pub cgroup_path: Option<String>,
    /// Its pod and container, from the same sources as the victim's; null
    /// when its cgroup is not a pod's.
    pub kubernetes: Option<Kubernetes>,
}

/// Usage and limit of a memory cgroup at kill time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memcg {
    pub usage_bytes: Option<u64>,
    /// Null when the cgroup has no limit.
    pub limit_bytes: Option<u64>,
}

/// The memory cgroup that ran out, from the kernel's OOM decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomMemcg {
    pub cgroup_id: u64,
    pub path: Option<String>,
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
}

/// Memory of the cgroup that ran out, by kind, in bytes; cgroup v1 and v2
/// names mapped to one set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemcgStat {
    pub anon: u64,
    pub file: u64,
    pub file_dirty: u64,
    pub file_writeback: u64,
    pub shmem: u64,
    /// Slab, kernel stacks and page tables.
    pub kernel: u64,
    pub sock: u64,
}

/// Kills the kernel counted in a cgroup that oom-probe did not see (it was
/// not running, or its ring buffer overflowed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnobservedKills {
    pub time: String,
    pub node: String,
    pub cgroup_id: u64,
    pub cgroup_path: Option<String>,
    /// How many kills were missed.
    pub count: u64,
    /// Stable id: the boot id's first 8 hex digits, `unobserved`, the
    /// cgroup id and the range of the cgroup's kernel kill counter these
    /// kills cover (`<first>-<last>`), joined by `-`.
    #[serde(default)]
    pub event_id: String,
    /// True when printed again after a crash of the agent (see
    /// [`OomKillEvent::replayed`]).
    #[serde(default)]
    pub replayed: bool,
    /// How oom-probe knows of these kills.
    #[serde(default)]
    pub reason: UnobservedReason,
}

/// Why kills are reported as `oom_kill_unobserved` (`reason`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnobservedReason {
    /// The cgroup's kernel kill counter is above the kills reported: they
    /// happened while oom-probe was down (or its records were lost without
    /// their cgroup).
    #[default]
    CounterAhead,
    /// The kernel dropped their records because the ring buffer was full;
    /// the eBPF side counted them by victim memory cgroup
    /// (`--ring-buffer-size` too small for the burst).
    RingBufferFull,
    /// The node's count of OOM kills (`oom_kill` in `/proc/vmstat`) rose
    /// while oom-probe was down by more than the kills found since: kills
    /// in cgroups removed before it started again (`cgroup_id` 0, no
    /// path).
    NodeCounterAhead,
}

/// Where the victim ran in Kubernetes: from the cgroup path (ids), the
/// container runtime (names, without an API server) and the API server
/// (requests, limits, owner). Each field is null when no source knew it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kubernetes {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub container: Option<String>,
    pub container_id: Option<String>,
    pub qos_class: Option<String>,
    pub memory_request_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub owner_kind: Option<String>,
    pub owner_name: Option<String>,
}

/// A pod the kubelet evicted for node memory pressure: the kill Kubernetes
/// makes before the kernel has to, in the same stream as the kernel's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvictionEvent {
    pub time: String,
    pub node: String,
    /// namespace, pod and pod_uid; the other fields are null.
    pub kubernetes: Kubernetes,
    /// The kubelet's `status.message`.
    pub message: Option<String>,
    /// Per container, usage and request as the kubelet's message gives them.
    pub containers: Vec<EvictedContainer>,
}

/// One container named in an eviction message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvictedContainer {
    pub name: String,
    pub usage_bytes: Option<u64>,
    pub request_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    //! The JSON schema, byte for byte: `testdata/events.golden.jsonl` holds
    //! one line per event type; its first line is the README's sample, as
    //! oom-probe printed it before events were typed. A field may be added
    //! (then added here and there); none may change or move.

    use super::*;

    const GOLDEN: &str = include_str!("testdata/events.golden.jsonl");
    const UID: &str = "7b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
    const CONTAINER: &str = "5c3d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";

    fn readme_kill() -> Event {
        Event::OomKill(Box::new(OomKillEvent {
            time: "2026-11-23T12:09:21.845Z".into(),
            kernel_time_ns: 8_743_859_654_490,
            node: "vm".into(),
            victim: Victim {
                pid: 16669,
                tid: 16669,
                ns_pid: Some(16669),
                comm: Some("celery-worker".into()),
                uid: Some(0),
                oom_score_adj: Some(0),
                rss_bytes: Some(Rss {
                    anon: 33_423_360,
                    file: 524_288,
                    shmem: 0,
                }),
                total_vm_bytes: Some(36_745_216),
                cgroup_id: Some(226_283),
                cgroup_path: Some("/oom-probe-readme".into()),
                cgroup_v2_id: None,
                oom_points: None,
                comm_hex: None,
            },
            trigger: Trigger {
                pid: 16669,
                comm: "celery-worker".into(),
                comm_hex: None,
                tid: 16669,
                cgroup_id: Some(226_283),
                cgroup_path: Some("/oom-probe-readme".into()),
                kubernetes: None,
            },
            memcg: Memcg {
                usage_bytes: Some(33_554_432),
                limit_bytes: Some(33_554_432),
            },
            constraint: Some(Constraint::Memcg),
            constraint_source: Some(ConstraintSource::PageCounters),
            oom_memcg: Some(OomMemcg {
                cgroup_id: 226_283,
                path: Some("/oom-probe-readme".into()),
                usage_bytes: Some(33_554_432),
                limit_bytes: Some(33_554_432),
            }),
            memcg_stat: Some(MemcgStat {
                anon: 33_398_784,
                kernel: 155_648,
                ..MemcgStat::default()
            }),
            explanation: Some("victim celery-worker (16669) RSS 32 MiB of the 32 MiB limit".into()),
            oom_id: 1,
            group_kill: false,
            kubernetes: None,
            silent: Some(true),
            oom_domain_bytes: None,
            container: None,
            memcg_stat_source: Some(MemcgStatSource::AfterKill),
            tasks: None,
            tasks_total: None,
            tasks_source: None,
            event_id: "0f1e2d3c-8743859654490-16669-226283".into(),
            replayed: false,
            pressure_before: None,
            signal: Some(KillSignal::Sigkill),
            exit: None,
        }))
    }

    fn userspace_kill() -> Event {
        Event::UserspaceKill(Box::new(OomKillEvent {
            time: "2026-11-23T12:10:00.000Z".into(),
            kernel_time_ns: 8_780_000_000_000,
            node: "vm".into(),
            victim: Victim {
                pid: 4242,
                tid: 4243,
                ns_pid: Some(12),
                comm: Some("gunicorn".into()),
                uid: Some(1000),
                oom_score_adj: Some(-998),
                rss_bytes: Some(Rss {
                    anon: 1 << 20,
                    file: 4096,
                    shmem: 8192,
                }),
                total_vm_bytes: Some(2 << 20),
                cgroup_id: Some(77),
                cgroup_path: Some(format!("/kubepods/burstable/pod{UID}/{CONTAINER}")),
                cgroup_v2_id: Some(88),
                oom_points: None,
                comm_hex: None,
            },
            trigger: Trigger {
                pid: 600,
                comm: "systemd-oomd".into(),
                comm_hex: None,
                tid: 600,
                cgroup_id: Some(55),
                cgroup_path: Some("/system.slice/systemd-oomd.service".into()),
                kubernetes: None,
            },
            memcg: Memcg {
                usage_bytes: Some(1_056_768),
                limit_bytes: None,
            },
            constraint: None,
            constraint_source: None,
            oom_memcg: None,
            memcg_stat: None,
            explanation: Some(
                "SIGKILL from systemd-oomd, a userspace OOM killer; victim gunicorn (4242) RSS 1.0 MiB"
                    .into(),
            ),
            oom_id: 7,
            group_kill: false,
            kubernetes: Some(Kubernetes {
                namespace: Some("shop".into()),
                pod: Some("web-7d9f8-x2x4q".into()),
                pod_uid: Some(UID.into()),
                container: Some("app".into()),
                container_id: Some(CONTAINER.into()),
                qos_class: Some("Burstable".into()),
                memory_request_bytes: Some(128 << 20),
                memory_limit_bytes: None,
                owner_kind: Some("ReplicaSet".into()),
                owner_name: Some("web-7d9f8".into()),
            }),
            silent: Some(true),
            oom_domain_bytes: None,
            container: Some(Container {
                id: CONTAINER.into(),
                runtime: None,
            }),
            memcg_stat_source: None,
            tasks: None,
            tasks_total: None,
            tasks_source: None,
            event_id: "0f1e2d3c-8780000000000-4242-77".into(),
            replayed: false,
            pressure_before: None,
            signal: Some(KillSignal::Sigkill),
            exit: None,
        }))
    }

    fn unobserved() -> Event {
        Event::OomKillUnobserved(UnobservedKills {
            time: "2026-11-23T12:11:00.000Z".into(),
            node: "vm".into(),
            cgroup_id: 226_283,
            cgroup_path: Some("/oom-probe-readme".into()),
            count: 2,
            event_id: "0f1e2d3c-unobserved-226283-4-5".into(),
            replayed: true,
            reason: UnobservedReason::CounterAhead,
        })
    }

    /// A container pinned at its limit, from the host test's figures.
    fn pressure() -> Event {
        Event::MemoryPressure(Box::new(PressureEvent {
            time: "2026-11-30T04:02:30.650Z".into(),
            node: "vm".into(),
            scope: PressureScope::Cgroup,
            source: PressureSource::PressureLevel,
            target: PressureTarget {
                cgroup_id: Some(69411),
                cgroup_path: Some("/p12-try".into()),
                kubernetes: None,
                container: None,
            },
            memcg: Memcg {
                usage_bytes: Some(67088384),
                limit_bytes: Some(67108864),
            },
            memcg_stat: Some(MemcgStat {
                anon: 65011712,
                file: 1835008,
                ..MemcgStat::default()
            }),
            psi: None,
            limit_hits: Some(167332),
            growth_bytes_per_minute: None,
            since: "2026-11-30T04:02:27.644Z".into(),
            duration_seconds: 3.0,
            tasks: Some(vec![Task {
                pid: 3708,
                ns_pid: Some(3708),
                comm: Some("oom-hog".into()),
                rss_bytes: Some(Rss {
                    anon: 63963136,
                    file: 1048576,
                    shmem: 0,
                }),
                oom_score_adj: Some(0),
                cgroup_path: None,
                kubernetes: None,
            }]),
            tasks_total: Some(1),
            explanation: "/p12-try at 100% of its 64 MiB limit (64 MiB used), mostly anonymous \
                          memory (62 MiB), limit hit 167332 times, biggest process oom-hog \
                          (3708) RSS 62 MiB, for 3 s so far"
                .into(),
            shortage: None,
            stalling: None,
        }))
    }

    /// The node squeezed in the 6.12 VM of `tests/pressure.rs` (1 GiB, v2,
    /// PSI; 2026-12-07, two of its five tasks): short and stalling, with the
    /// cgroup that stalls at its `memory.high` named, not the squeeze.
    fn node_pressure() -> Event {
        Event::MemoryPressure(Box::new(PressureEvent {
            time: "2026-12-07T17:36:43.489Z".into(),
            node: "vm".into(),
            scope: PressureScope::Node,
            source: PressureSource::Psi,
            target: PressureTarget::default(),
            memcg: Memcg {
                usage_bytes: Some(997_335_040),
                limit_bytes: Some(1_014_116_352),
            },
            memcg_stat: None,
            psi: Some(Psi {
                some_avg10: 19.39,
                full_avg10: 18.35,
                some_total_us: 24_516_466,
                full_total_us: 22_570_348,
            }),
            limit_hits: None,
            growth_bytes_per_minute: None,
            since: "2026-12-07T17:36:43.489Z".into(),
            duration_seconds: 0.0,
            tasks: Some(vec![
                Task {
                    pid: 164,
                    ns_pid: Some(164),
                    comm: Some("oom-hog".into()),
                    rss_bytes: Some(Rss {
                        anon: 829_591_552,
                        file: 0,
                        shmem: 331_776,
                    }),
                    oom_score_adj: Some(0),
                    cgroup_path: None,
                    kubernetes: None,
                },
                Task {
                    pid: 165,
                    ns_pid: Some(165),
                    comm: Some("oom-hog".into()),
                    rss_bytes: Some(Rss {
                        anon: 35_344_384,
                        file: 0,
                        shmem: 372_736,
                    }),
                    oom_score_adj: Some(0),
                    cgroup_path: None,
                    kubernetes: None,
                },
            ]),
            tasks_total: Some(5),
            explanation: "node at 98% of its 967 MiB RAM (951 MiB used), MemAvailable low, \
                          stalled 19% of the last 10 s, stalling: /oom-probe-test-134-3 64%, \
                          biggest process oom-hog (164) RSS 791 MiB, for 0 s so far"
                .into(),
            shortage: Some(NodeShortage {
                mem_available_low: true,
                direct_reclaims: 0,
            }),
            stalling: Some(vec![StallingCgroup {
                target: PressureTarget {
                    cgroup_id: Some(147),
                    cgroup_path: Some("/oom-probe-test-134-3".into()),
                    kubernetes: None,
                    container: None,
                },
                stall_percent: Some(63.78),
            }]),
        }))
    }

    /// The node, on a v2 kernel with PSI.
    fn pressure_end() -> Event {
        Event::MemoryPressureEnd(Box::new(PressureEndEvent {
            time: "2026-11-30T04:02:41.152Z".into(),
            node: "vm".into(),
            scope: PressureScope::Node,
            target: PressureTarget::default(),
            since: "2026-11-30T04:02:27.644Z".into(),
            last: "2026-11-30T04:02:37.733Z".into(),
            duration_seconds: 10.1,
            events: 4,
            peak_psi_some_avg10: Some(42.5),
            cgroup_removed: false,
        }))
    }

    /// A kill that ends a reported pressure episode.
    fn kill_after_pressure() -> Event {
        let Event::OomKill(mut kill) = readme_kill() else {
            unreachable!()
        };
        kill.pressure_before = Some(PressureBefore {
            since: "2026-11-23T12:08:51.100Z".into(),
            peak_psi_some_avg10: Some(61.25),
        });
        Event::OomKill(kill)
    }

    fn eviction() -> Event {
        Event::Eviction(Box::new(EvictionEvent {
            time: "2026-11-23T12:12:00.000Z".into(),
            node: "vm".into(),
            kubernetes: Kubernetes {
                namespace: Some("shop".into()),
                pod: Some("web-7d9f8-x2x4q".into()),
                pod_uid: Some(UID.into()),
                ..Kubernetes::default()
            },
            message: Some(
                "The node was low on resource: memory. Container app was using 1Gi, \
                 request is 512Mi, has larger consumption of memory."
                    .into(),
            ),
            containers: vec![EvictedContainer {
                name: "app".into(),
                usage_bytes: Some(1 << 30),
                request_bytes: Some(512 << 20),
            }],
        }))
    }

    #[test]
    fn every_event_type_serializes_byte_for_byte_as_the_golden_file() {
        let events = [
            readme_kill(),
            userspace_kill(),
            unobserved(),
            eviction(),
            pressure(),
            pressure_end(),
            kill_after_pressure(),
            node_pressure(),
        ];
        if std::env::var_os("GOLDEN_REGENERATE").is_some_and(|v| v == "1") {
            // After a deliberate schema change: rewrite, then review the diff.
            let lines: Vec<String> = events
                .iter()
                .map(|e| serde_json::to_string(e).unwrap() + "\n")
                .collect();
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/testdata/events.golden.jsonl"
            );
            std::fs::write(path, lines.concat()).unwrap();
            return;
        }
        let golden: Vec<&str> = GOLDEN.lines().collect();
        assert_eq!(golden.len(), events.len());
        for (event, want) in events.iter().zip(golden) {
            assert_eq!(serde_json::to_string(event).unwrap(), want);
        }
    }

    #[test]
    fn every_golden_line_reads_back_as_the_same_event() {
        // `oom-probe history --output table` reads stored lines back.
        let events = [
            readme_kill(),
            userspace_kill(),
            unobserved(),
            eviction(),
            pressure(),
            pressure_end(),
            kill_after_pressure(),
            node_pressure(),
        ];
        for (event, line) in events.iter().zip(GOLDEN.lines()) {
            assert_eq!(&serde_json::from_str::<Event>(line).unwrap(), event);
        }
    }

    #[test]
    fn the_kind_is_the_variant() {
        let event = userspace_kill();
        assert_eq!(
            event.as_kill().map(|(kind, _)| kind),
            Some(KillKind::UserspaceKill)
        );
        assert_eq!(
            readme_kill().as_kill().map(|(kind, _)| kind),
            Some(KillKind::OomKill)
        );
        assert!(unobserved().as_kill().is_none() && eviction().as_kill().is_none());
    }
}
