//! The event oom-probe emits for each kill: the stable JSON schema that log
//! pipelines, alerts and the tests rely on. Field names never change; a
//! value the kernel could not give is `null`, never a made-up zero.

use serde::Serialize;

/// One process the kernel OOM killer killed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomKillEvent {
    /// Always `"oom_kill"`; other event types share the stream later.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// RFC 3339 wall-clock time of the kill.
    pub time: String,
    /// The kernel's CLOCK_MONOTONIC stamp of the kill, for latency figures.
    pub kernel_time_ns: u64,
    pub node: String,
    pub victim: Victim,
    pub trigger: Trigger,
    /// The victim's own memory cgroup at the time of the kill.
    pub memcg: Memcg,
    /// Why the kernel ran out: `memcg`, `global`, `cpuset` or `mempolicy`
    /// (null where the kernel gives no `oom_kill_process` hook).
    pub constraint: Option<&'static str>,
    /// The memory cgroup whose limit ran out (null for a global OOM or when
    /// unknown).
    pub oom_memcg: Option<OomMemcg>,
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
