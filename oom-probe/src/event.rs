//! The event oom-probe emits for each kill: the stable JSON schema that log
//! pipelines, alerts and the tests rely on. Field names never change; a
//! value the kernel could not give is `null`, never a made-up zero.

use serde::Serialize;

/// Everything oom-probe emits, in one stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// `oom_kill` or `userspace_kill`.
    Kill(Box<OomKillEvent>),
    /// `oom_kill_unobserved`.
    Unobserved(UnobservedKills),
    /// `eviction`.
    Eviction(Box<EvictionEvent>),
}

/// One process killed for memory: by the kernel OOM killer (`oom_kill`) or by
/// a userspace OOM killer such as systemd-oomd (`userspace_kill`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomKillEvent {
    /// `"oom_kill"` or `"userspace_kill"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
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
    pub constraint: Option<&'static str>,
    /// How `constraint` was learnt: `oom_kill_process` (the kernel's own
    /// decision, via fentry/kprobe) or `page_counters` (inferred from the
    /// memcg counters at kill time, on kernels without either).
    pub constraint_source: Option<&'static str>,
    /// The memory cgroup whose limit ran out (null for a global OOM).
    pub oom_memcg: Option<OomMemcg>,
    /// What filled the memory cgroup that ran out, read right after the kill.
    pub memcg_stat: Option<MemcgStat>,
    /// One sentence a person can act on.
    pub explanation: Option<String>,
    /// Shared by every victim of one OOM decision.
    pub oom_id: u64,
    /// True when `memory.oom.group` made the kernel kill the whole cgroup.
    pub group_kill: bool,
    /// Pod and container of the victim; null when its cgroup is not a pod's.
    pub kubernetes: Option<Kubernetes>,
    /// True when the victim is not the init process of its pid namespace:
    /// its container keeps running and Kubernetes reports nothing.
    pub silent: Option<bool>,
}

/// The killed process.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Victim {
    pub pid: u32,
    pub tid: u32,
    pub ns_pid: Option<u32>,
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
}

/// Resident memory by kind: tells "the process was big" from "tmpfs filled
/// the memcg".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rss {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

/// The task whose allocation set off the OOM killer (often not the victim).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Trigger {
    pub pid: u32,
    pub comm: String,
}

/// Usage and limit of a memory cgroup at kill time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Memcg {
    pub usage_bytes: Option<u64>,
    /// Null when the cgroup has no limit.
    pub limit_bytes: Option<u64>,
}

/// The memory cgroup that ran out, from the kernel's OOM decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OomMemcg {
    pub cgroup_id: u64,
    pub path: Option<String>,
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
}

/// Memory of the cgroup that ran out, by kind, in bytes; cgroup v1 and v2
/// names mapped to one set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnobservedKills {
    /// Always `"oom_kill_unobserved"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub node: String,
    pub cgroup_id: u64,
    pub cgroup_path: Option<String>,
    /// How many kills were missed.
    pub count: u64,
}

/// Where the victim ran in Kubernetes: from the cgroup path (ids), the
/// container runtime (names, without an API server) and the API server
/// (requests, limits, owner). Each field is null when no source knew it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EvictionEvent {
    /// Always `"eviction"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EvictedContainer {
    pub name: String,
    pub usage_bytes: Option<u64>,
    pub request_bytes: Option<u64>,
}
