//! The pressure events: `memory_pressure` (a memory cgroup, or the node,
//! at its limit and struggling to reclaim), `memory_pressure_end`, and the
//! `pressure_before` a kill carries. Re-exported by [`crate::event`].

use serde::{Deserialize, Serialize};

use super::{Container, Kubernetes, Memcg, MemcgStat, Task};

/// The pressure that came before a kill, from the `memory_pressure` events
/// of the same cgroup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PressureBefore {
    /// RFC 3339 wall-clock time the pressure began (its first notification).
    pub since: String,
    /// Highest PSI `some avg10` (percent of wall time, 0-100) read during
    /// the episode; null where the cgroup has no PSI (cgroup v1).
    pub peak_psi_some_avg10: Option<f64>,
}

/// Where a `memory_pressure` event was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PressureScope {
    /// One memory cgroup (a container, or a cgroup under `--pressure-cgroup`).
    Cgroup,
    /// The whole node (`/proc/pressure/memory`).
    Node,
}

/// Which kernel notification reported the pressure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PressureSource {
    /// cgroup v1 `memory.pressure_level` (vmpressure) through
    /// `cgroup.event_control`, with `memory.failcnt` rising.
    PressureLevel,
    /// A PSI trigger on the cgroup's `memory.pressure` (cgroup v2) with
    /// `memory.events` `max`/`high` rising, or on `/proc/pressure/memory`
    /// for the node.
    Psi,
}

/// The kernel's memory pressure stall information (PSI) at the event.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Psi {
    /// Percent of the last 10 s in which some task stalled on memory.
    pub some_avg10: f64,
    /// Percent of the last 10 s in which every non-idle task stalled.
    pub full_avg10: f64,
    /// Total time some task stalled on memory since the cgroup (or the
    /// node) began, in microseconds.
    pub some_total_us: u64,
    /// Total time all non-idle tasks stalled, in microseconds.
    pub full_total_us: u64,
}

/// The memory cgroup a `memory_pressure` or `memory_pressure_end` is about
/// (every field null for the node), flattened into both events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PressureTarget {
    /// The memory cgroup's id (cgroupfs inode); null for the node.
    pub cgroup_id: Option<u64>,
    /// Its path below the hierarchy root; null for the node.
    pub cgroup_path: Option<String>,
    /// Pod and container, named as for kills; null outside any pod.
    pub kubernetes: Option<Kubernetes>,
    /// The container, from the cgroup path alone (as for kills).
    pub container: Option<Container>,
}

/// A memory cgroup, or the node, at its limit and struggling to reclaim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PressureEvent {
    /// RFC 3339 wall-clock time of the notification that made this event.
    pub time: String,
    pub node: String,
    /// `cgroup` or `node`.
    pub scope: PressureScope,
    /// `pressure_level` (cgroup v1) or `psi`.
    pub source: PressureSource,
    /// Which cgroup: `cgroup_id`, `cgroup_path`, `kubernetes`, `container`.
    #[serde(flatten)]
    pub target: PressureTarget,
    /// Usage and limit now (`memory.usage_in_bytes`/`memory.current`,
    /// `memory.limit_in_bytes`/`memory.max`; the node: MemTotal minus
    /// MemAvailable, and MemTotal).
    pub memcg: Memcg,
    /// What fills it now (`memory.stat`; null for the node).
    pub memcg_stat: Option<MemcgStat>,
    /// PSI of the cgroup (`memory.pressure`) or the node; null where the
    /// kernel has none (cgroup v1 cgroups).
    pub psi: Option<Psi>,
    /// How often the limit was hit since the previous event of this
    /// episode (the rise of `memory.failcnt`, or of `memory.events` `max`
    /// plus `high`); null for the node.
    pub limit_hits: Option<u64>,
    /// Usage growth over the last minute in bytes (negative: it shrank);
    /// null until oom-probe has watched for a minute.
    pub growth_bytes_per_minute: Option<i64>,
    /// RFC 3339 time the pressure began.
    pub since: String,
    /// How long it has lasted, in seconds.
    pub duration_seconds: f64,
    /// The 5 biggest processes by resident memory in the cgroup (and below
    /// it) or on the node, from `/proc`; null when they could not be read.
    pub tasks: Option<Vec<Task>>,
    /// How many processes the cgroup (or node) has in all.
    pub tasks_total: Option<u64>,
    /// One sentence a person can act on.
    pub explanation: String,
    /// The node's shortage that came with its stall (a node's warning needs
    /// both); null in a cgroup's event.
    #[serde(default)]
    pub shortage: Option<NodeShortage>,
    /// The cgroups that stall on memory as the node does, most stalled
    /// first (at most 5; may be empty); null in a cgroup's event.
    #[serde(default)]
    pub stalling: Option<Vec<StallingCgroup>>,
}

/// What made the node short of memory (`scope: node`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeShortage {
    /// `MemAvailable` below `--pressure-node-available` percent of
    /// `MemTotal` at the read that warned.
    pub mem_available_low: bool,
    /// How often the node's allocations entered direct reclaim (the rise of
    /// `/proc/vmstat` `allocstall_*`; a cgroup's limit reclaim is not
    /// counted) since the node's previous `memory_pressure` (or since
    /// oom-probe began watching).
    pub direct_reclaims: u64,
}

/// A cgroup stalling on memory while the node does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StallingCgroup {
    /// Which cgroup: `cgroup_id`, `cgroup_path`, `kubernetes`, `container`.
    #[serde(flatten)]
    pub target: PressureTarget,
    /// Percent of the time some task of it (or below) stalled on memory
    /// over about the last second: the rise of its `memory.pressure` `some
    /// total` since oom-probe's previous reading (its `some avg10` where
    /// there was none); null on cgroup v1, where the cgroup is one watched
    /// and in a pressure episode.
    pub stall_percent: Option<f64>,
}

/// The pressure reported by `memory_pressure` cleared: no notification
/// for `--pressure-clear-after`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PressureEndEvent {
    /// RFC 3339 time oom-probe decided it cleared.
    pub time: String,
    pub node: String,
    pub scope: PressureScope,
    /// Which cgroup, as in `memory_pressure`.
    #[serde(flatten)]
    pub target: PressureTarget,
    /// RFC 3339 time the pressure began.
    pub since: String,
    /// RFC 3339 time of its last notification.
    pub last: String,
    /// From `since` to `last`, in seconds.
    pub duration_seconds: f64,
    /// How many `memory_pressure` events the episode gave.
    pub events: u64,
    /// Highest PSI `some avg10` read during it; null without PSI.
    pub peak_psi_some_avg10: Option<f64>,
    /// True when the cgroup was removed (its pressure ended with it).
    pub cgroup_removed: bool,
}
