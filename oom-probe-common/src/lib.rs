//! The ABI shared by the eBPF programs and the userspace loader.
//!
//! Everything here is `#[repr(C)]`, made only of integers and byte arrays, so
//! that any bit pattern is a valid value and both sides agree on the layout
//! without a serialisation step on the kernel's hot path.
#![no_std]

/// Length of `task_struct.comm`, fixed by the kernel ABI.
pub const TASK_COMM_LEN: usize = 16;

/// Tags the first word of every ring-buffer record so userspace can tell the
/// hooks apart when several share one buffer.
pub const RECORD_VICTIM: u32 = 1;
/// Tag of an [`OomContextRecord`], sent by the `oom_kill_process` hook.
pub const RECORD_OOM_CONTEXT: u32 = 2;
/// Tag of a [`VictimRecord`] for a SIGKILL sent by a userspace OOM killer
/// (systemd-oomd, earlyoom, ...); `trigger_*` is then the killer.
pub const RECORD_USERSPACE_KILL: u32 = 3;
/// Tag of a [`VictimRecord`] for a `mark_victim` that no SIGKILL from the
/// OOM killer preceded: the kernel chose a task that was already exiting
/// (`task_will_free_mem()`), only marked it and gave it memory reserves. Not
/// a kill: no SIGKILL, no "Killed process" line, no `oom_kill` count. Sent
/// only while the `signal_generate` hook runs (see [`SIGNAL_HOOKED_MAP`]).
pub const RECORD_OOM_MARK: u32 = 4;
/// Tag of an [`ExitRecord`]: a process a userspace OOM killer sent SIGTERM
/// to has ended (its thread-group leader passed `sched_process_exit`).
pub const RECORD_KILLER_EXIT: u32 = 5;

/// `SIGKILL`, as the kernel numbers it on every architecture.
pub const SIGKILL: u32 = 9;
/// `SIGTERM`, as the kernel numbers it on every architecture.
pub const SIGTERM: u32 = 15;

/// How many memory cgroups, from the victim's own upwards, a record
/// carries: enough for every real hierarchy (`/kubepods/burstable/pod/ctr`
/// is four deep), small enough for an unrolled loop the verifier accepts.
pub const MEMCG_LEVELS: usize = 8;

/// How many memory cgroups, from the victim's own upwards, the programs
/// walk to find the one that ran out (levels past [`MEMCG_LEVELS`] are not
/// carried, only the lowest at its limit: [`VictimRecord::memcg_beyond`]).
/// cgroupfs sets no depth limit of its own (`cgroup.max.depth` defaults to
/// unlimited); 64 is far past any real nesting (kind in Docker with a
/// kubelet's pods is about 12) and a bounded loop every kernel verifies.
pub const MEMCG_WALK_LEVELS: usize = 64;

/// Name of the global that carries [`KernelOffsets`] into the programs.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// Name of the ring buffer map every record goes through.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU counter of records the ring buffer had no room for.
pub const LOST_MAP: &str = "LOST";
/// Index in [`LOST_MAP`] of the count of records the ring buffer had no
/// room for (every kind).
pub const LOST_RECORDS: u32 = 0;
/// Index in [`LOST_MAP`] of the count of kernel OOM-kill records lost while
/// [`LOST_BY_CGROUP_MAP`] was full, so lost without their cgroup.
pub const LOST_BY_CGROUP_FULL: u32 = 1;
/// Name of the hash map of kernel OOM-kill records the ring buffer had no
/// room for, per victim memory cgroup: key the cgroup id (0 when the victim's
/// cgroup could not be read), value the count since load. Userspace removes
/// an entry once its cgroup is gone (no kill can come after that).
pub const LOST_BY_CGROUP_MAP: &str = "LOST_BY_CGROUP";
/// Entries of [`LOST_BY_CGROUP_MAP`]: cgroups with lost records at once.
pub const LOST_BY_CGROUP_ENTRIES: u32 = 1024;
/// Name of the one-entry array userspace sets to 1 once the
/// `signal_generate` hook is attached: only then can `mark_victim` tell a
/// kill (the OOM killer's SIGKILL came first) from a mark
/// ([`RECORD_OOM_MARK`]).
pub const SIGNAL_HOOKED_MAP: &str = "SIGNAL_HOOKED";
/// Name of the hash map of process names whose SIGKILLs are reported as
/// userspace OOM kills (key: comm, zero-padded to [`TASK_COMM_LEN`]), when
/// the sender also passes the identity check of [`KILLER_CGROUPS_MAP`].
pub const KILLERS_MAP: &str = "KILLERS";
/// Entries of [`KILLERS_MAP`]: distinct killer names at most.
pub const KILLERS_ENTRIES: u32 = 32;
/// Name of the hash map of the cgroups a userspace OOM killer must run in
/// (its systemd unit's, Talos' `/init`): key a cgroup id, value a bitset of
/// the hierarchies that id was read from ([`KILLER_CGROUP_V2`],
/// [`KILLER_CGROUP_MEMORY_V1`]; ids of two hierarchies may collide). The
/// sender must also be in the host's pid namespace (level 0). Userspace
/// fills it at start and keeps it current.
pub const KILLER_CGROUPS_MAP: &str = "KILLER_CGROUPS";
/// Entries of [`KILLER_CGROUPS_MAP`]: two hierarchies per allowed cgroup.
pub const KILLER_CGROUPS_ENTRIES: u32 = 2 * KILLERS_ENTRIES;
/// In [`KILLER_CGROUPS_MAP`]: the id is of the unified (v2) hierarchy,
/// compared with `bpf_get_current_cgroup_id()`.
pub const KILLER_CGROUP_V2: u8 = 1;
/// In [`KILLER_CGROUPS_MAP`]: the id is of the v1 memory hierarchy,
/// compared with the sender's memory cgroup.
pub const KILLER_CGROUP_MEMORY_V1: u8 = 2;
/// Name of the per-CPU counter (one entry) of SIGKILLs dropped in the kernel
/// because their sender had a killer's name but not its identity: an
/// impostor, never reported as a kill.
pub const KILLER_IMPOSTORS_MAP: &str = "KILLER_IMPOSTORS";
/// Name of the LRU hash map of processes (key: tgid) a userspace OOM
/// killer sent SIGTERM to, whose exit the `sched_process_exit` hook reports
/// ([`RECORD_KILLER_EXIT`]); an entry leaves at that exit, or when the map
/// is full and it is the oldest.
pub const KILLER_TARGETS_MAP: &str = "KILLER_TARGETS";
/// Entries of [`KILLER_TARGETS_MAP`].
pub const KILLER_TARGETS_ENTRIES: u32 = 1024;
/// Name of the one-entry array userspace sets to 1 once the
/// `sched_process_exit` hook is attached: only then are userspace killers'
/// SIGTERMs reported (without their targets' exits they would never be
/// judged).
pub const EXIT_HOOKED_MAP: &str = "EXIT_HOOKED";

/// Bits of [`KernelOffsets::features`]: which groups of offsets the running
/// kernel's BTF could resolve. A program never reads through an offset whose
/// group is missing, so one object file serves kernels with different layouts.
pub mod feature {
    /// The `mark_victim` tracepoint passes `struct task_struct *` as its first
    /// argument (kernels 6.9+ and backports); otherwise only the pid, and
    /// the programs find the task from the SIGKILL the OOM killer sends it
    /// just before (`signal_generate`, needs [`SIGNAL_TASK_ARG`]).
    pub const VICTIM_TASK_ARG: u32 = 1 << 0;
    /// `task->group_leader->thread_pid->numbers[level].nr` resolves.
    pub const NS_PID: u32 = 1 << 1;
    /// `task->mm` RSS counters and `total_vm` resolve.
    pub const RSS: u32 = 1 << 2;
    /// `task->cgroups->dfl_cgrp->kn->id` resolves (cgroup v2 hierarchy).
    pub const CGROUP_V2: u32 = 1 << 3;
    /// The memory controller's css and its `page_counter` resolve.
    pub const MEMCG: u32 = 1 << 4;
    /// `struct oom_control` resolves, for the `oom_kill_process` hooks.
    pub const OOM_CONTROL: u32 = 1 << 5;
    /// The `signal_generate` tracepoint passes the target task third.
    pub const SIGNAL_TASK_ARG: u32 = 1 << 6;
    /// `task_struct` pid, tgid, comm, `real_cred->uid` and
    /// `signal->oom_score_adj` resolve. In a [`super::VictimRecord`]: the
    /// victim's task was found and these fields were read from it.
    pub const TASK: u32 = 1 << 7;
    /// The groups read through the victim's task; a record whose task could
    /// not be found has all of them cleared.
    pub const TASK_BASED: u32 = TASK | NS_PID | RSS | CGROUP_V2 | MEMCG;
}

/// Byte offsets of the kernel struct fields the programs read, resolved from
/// the running kernel's BTF at load time. Rust eBPF has no CO-RE relocations,
/// so this is how one object file reads many kernels correctly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// Bitset of [`feature`] groups that resolved.
    pub features: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_real_cred: u32,
    pub cred_uid: u32,
    pub task_signal: u32,
    pub signal_oom_score_adj: u32,
    pub task_group_leader: u32,
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_nr: u32,
    pub task_mm: u32,
    pub mm_total_vm: u32,
    /// Offset in `mm_struct` of the value of RSS counter 0.
    pub mm_rss_base: u32,
    /// Distance between two RSS counters (8 for `mm_rss_stat`, the size of a
    /// `percpu_counter` on 6.2+).
    pub mm_rss_stride: u32,
    pub rss_file_index: u32,
    pub rss_anon_index: u32,
    pub rss_shmem_index: u32,
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    /// Offset in `css_set` of `subsys[memory_cgrp_id]`.
    pub css_set_memory_css: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// Offset in `mem_cgroup` of `css` (subtracted to get from css to memcg).
    pub memcg_css: u32,
    pub memcg_memory: u32,
    pub page_counter_usage: u32,
    pub page_counter_max: u32,
    pub page_counter_parent: u32,
    pub oom_control_memcg: u32,
    pub oom_control_totalpages: u32,
    pub oom_control_chosen: u32,
    pub oom_control_chosen_points: u32,
    pub oom_control_constraint: u32,
    /// `task_struct.exit_code` (group [`feature::TASK`]).
    pub task_exit_code: u32,
}

/// One OOM victim as the `mark_victim` hook saw it, at the moment the kernel
/// chose it. Counts are in pages; userspace turns them into bytes because it
/// knows the page size and the eBPF side should do as little as possible.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VictimRecord {
    /// [`RECORD_VICTIM`], [`RECORD_USERSPACE_KILL`] or [`RECORD_OOM_MARK`].
    pub kind: u32,
    /// Copy of [`KernelOffsets::features`] at the time of the event, so
    /// userspace knows which fields were read and which are zero by absence;
    /// without [`feature::TASK`] the victim's task was not found (only
    /// `tid`, set to the pid `mark_victim` passed, and the trigger are real).
    pub features: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub kernel_time_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// Process id in the victim's innermost pid namespace; 1 means the victim
    /// is that namespace's init (its container dies with it).
    pub ns_pid: u32,
    pub uid: u32,
    pub oom_score_adj: i32,
    pub trigger_tgid: u32,
    pub trigger_tid: u32,
    pub _pad: u32,
    pub comm: [u8; TASK_COMM_LEN],
    pub trigger_comm: [u8; TASK_COMM_LEN],
    pub rss_anon_pages: i64,
    pub rss_file_pages: i64,
    pub rss_shmem_pages: i64,
    pub total_vm_pages: u64,
    /// kernfs id of the victim's cgroup on the default (v2) hierarchy.
    pub cgroup_v2_id: u64,
    /// The victim's memory cgroup (`[0]`) and its ancestors at the moment of
    /// the kill; userspace finds the one that ran out. Unused levels are 0.
    pub memcg_levels: [MemcgLevel; MEMCG_LEVELS],
    /// kernfs id of the memory cgroup of the task that set off the kill
    /// (the current task: the allocator, or a userspace killer); 0 when
    /// unknown.
    pub trigger_cgroup_id: u64,
    /// The lowest memory cgroup above `memcg_levels` (more than
    /// [`MEMCG_LEVELS`] up) whose counter stood at its limit (usage within
    /// `512 + limit / 128` pages of it), found within [`MEMCG_WALK_LEVELS`];
    /// all zero when none was.
    pub memcg_beyond: MemcgLevel,
    /// How many memory cgroups the walk from the victim's met before the
    /// root's parent (the root included), when it got there within
    /// [`MEMCG_WALK_LEVELS`]; 0 when it did not (the hierarchy is deeper,
    /// or memcgs cannot be read): then "no memcg at its limit" does not
    /// mean a global OOM.
    pub memcg_depth: u32,
    /// For a [`RECORD_USERSPACE_KILL`], the signal the killer sent:
    /// [`SIGKILL`] or [`SIGTERM`]; 0 in every other record.
    pub signal: u32,
}

/// The end of a process a userspace OOM killer sent SIGTERM to, from the
/// `sched_process_exit` tracepoint of its thread-group leader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitRecord {
    /// Always [`RECORD_KILLER_EXIT`].
    pub kind: u32,
    /// `task_struct.exit_code` of the leader: the terminating signal in
    /// bits 0-6 (bit 7: core dumped), or the status given to `exit()` in
    /// bits 8-15 (the encoding of `wait(2)`).
    pub exit_code: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub kernel_time_ns: u64,
    pub tgid: u32,
    pub _pad: u32,
}

/// One memory cgroup's page counter at kill time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemcgLevel {
    /// kernfs id (cgroupfs inode number); 0 past the root.
    pub cgroup_id: u64,
    pub usage_pages: u64,
    /// `PAGE_COUNTER_MAX` when the cgroup has no limit.
    pub limit_pages: u64,
}

/// The OOM decision as `oom_kill_process` saw it (kernels with kprobes or
/// fentry): which memcg ran out and why, before any victim is marked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomContextRecord {
    /// Always [`RECORD_OOM_CONTEXT`].
    pub kind: u32,
    /// `enum oom_constraint` value.
    pub constraint: u32,
    pub kernel_time_ns: u64,
    pub trigger_tgid: u32,
    pub trigger_tid: u32,
    pub chosen_tgid: u32,
    pub _pad: u32,
    /// Size of the OOM domain in pages (not the victim's memory).
    pub totalpages: u64,
    pub chosen_points: i64,
    /// kernfs id of `oc->memcg`, 0 for a global OOM.
    pub memcg_id: u64,
    pub memcg_usage_pages: u64,
    pub memcg_limit_pages: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data made of integers and byte arrays; every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::KernelOffsets {}
}
