//! The `signal_generate` tracepoint, filtered in the kernel to SIGKILLs and
//! SIGTERMs sent by userspace OOM killers (systemd-oomd, earlyoom, oomd,
//! ...): those kills never reach the kernel OOM path but are memory kills
//! all the same. A SIGTERM is sent only once the `sched_process_exit` hook
//! runs ([`EXIT_HOOKED`]), and its target is kept in [`KILLER_TARGETS`] so
//! that hook reports the target's end: userspace reports a SIGTERM only
//! when the process ends after it.
//! Arguments: `(int sig, struct kernel_siginfo *info, struct task_struct *task, int group, int result)`.
//!
//! A name is not an identity (any process can take any `comm`), so a sender
//! counts as a killer only when all three hold:
//! 1. its `comm` is in [`KILLERS`];
//! 2. it is in the host's pid namespace (`current->thread_pid->level == 0`:
//!    never a container's process);
//! 3. its cgroup is one of [`KILLER_CGROUPS`] (the killers' systemd units,
//!    resolved by userspace): its v2 cgroup id, or on cgroup v1 its memory
//!    cgroup id. Only root on the host can put a process there.
//!
//! A SIGKILL that passes 1 but not 2 and 3 is an impostor's: it is counted
//! in [`KILLER_IMPOSTORS`] and sends no record, so a pod cannot fake kills
//! or flood the ring buffer with them (an impostor's SIGTERM is dropped
//! too, uncounted).
//!
//! It also keeps the target of every kernel-private SIGKILL (`info ==
//! SEND_SIG_PRIV`, which the OOM killer uses and `kill(2)` never does) for
//! the `mark_victim` that follows: its task on pid-only kernels, and on every
//! kernel the proof that the mark is a kill.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_task,
        bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use oom_probe_common::{
    feature, KILLERS_ENTRIES, KILLER_CGROUPS_ENTRIES, KILLER_CGROUP_MEMORY_V1, KILLER_CGROUP_V2,
    RECORD_USERSPACE_KILL, SIGKILL, SIGTERM, TASK_COMM_LEN,
};

use crate::{
    kernel::{current_tgid_tid, has, offset, read, read_ptr},
    mark_victim::PENDING_VICTIMS,
    process_exit::{EXIT_HOOKED, KILLER_TARGETS},
    victim::{current_memcg_id, send_victim_record},
};

/// The kernel's `SEND_SIG_PRIV`: `(struct kernel_siginfo *) 1`.
const SEND_SIG_PRIV: u64 = 1;

/// Names of the processes whose SIGKILLs count as OOM kills; userspace
/// fills it (`--userspace-killers`).
#[map(name = "KILLERS")]
static KILLERS: HashMap<[u8; TASK_COMM_LEN], u8> = HashMap::with_max_entries(KILLERS_ENTRIES, 0);

/// The cgroups a killer must run in: cgroup id to the bitset of hierarchies
/// it was read from; userspace fills it and keeps it current.
#[map(name = "KILLER_CGROUPS")]
static KILLER_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(KILLER_CGROUPS_ENTRIES, 0);

/// SIGKILLs from senders with a killer's name but not its identity.
#[map(name = "KILLER_IMPOSTORS")]
static KILLER_IMPOSTORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate_btf(ctx: BtfTracePointContext) -> i32 {
    record_kill(ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2));
    0
}

#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate_raw(ctx: RawTracePointContext) -> i32 {
    record_kill(ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2));
    0
}

#[inline(always)]
fn record_kill(signal: u64, info: u64, task: u64) {
    let signal = signal as u32;
    if (signal != SIGKILL && signal != SIGTERM) || !has(feature::SIGNAL_TASK_ARG) {
        return;
    }
    if signal == SIGTERM && EXIT_HOOKED.get(0).copied().unwrap_or(0) == 0 {
        return;
    }
    if signal == SIGKILL && info == SEND_SIG_PRIV {
        // Sent by the kernel itself, so not by a userspace killer. Kept on
        // every kernel: a mark_victim without it is a mark, not a kill.
        let (_, tid) = current_tgid_tid();
        let _ = PENDING_VICTIMS.insert(&tid, &task, 0);
        return;
    }
    let Ok(sender) = bpf_get_current_comm() else {
        return;
    };
    if unsafe { KILLERS.get(&sender) }.is_none() {
        return;
    }
    if !sender_is_a_killer() {
        if signal == SIGKILL {
            if let Some(count) = KILLER_IMPOSTORS.get_ptr_mut(0) {
                unsafe { *count += 1 };
            }
        }
        return;
    }
    let task = task as usize as *const u8;
    if signal == SIGTERM {
        let tgid = read::<u32>(task, offset!(task_tgid));
        let _ = KILLER_TARGETS.insert(&tgid, &1, 0);
    }
    send_victim_record(RECORD_USERSPACE_KILL, task, 0, signal);
}

/// Rules 2 and 3 of the module doc, for the current task (the sender).
/// Fails closed: what cannot be read does not pass.
#[inline(always)]
fn sender_is_a_killer() -> bool {
    if !in_host_pid_namespace() {
        return false;
    }
    let v2 = unsafe { bpf_get_current_cgroup_id() };
    if in_killer_cgroup(v2, KILLER_CGROUP_V2) {
        return true;
    }
    has(feature::MEMCG) && in_killer_cgroup(current_memcg_id(), KILLER_CGROUP_MEMORY_V1)
}

/// True when the current task's pid lives in the initial pid namespace
/// (level 0); false for any container's task, or when unreadable.
#[inline(always)]
fn in_host_pid_namespace() -> bool {
    if !has(feature::NS_PID) {
        return false;
    }
    let current = unsafe { bpf_get_current_task() } as *const u8;
    let pid = read_ptr(current, offset!(task_thread_pid));
    if pid.is_null() {
        return false;
    }
    let level = pid.wrapping_add(offset!(pid_level) as usize) as *const u32;
    matches!(unsafe { bpf_probe_read_kernel(level) }, Ok(0))
}

#[inline(always)]
fn in_killer_cgroup(id: u64, hierarchy: u8) -> bool {
    id != 0 && unsafe { KILLER_CGROUPS.get(&id) }.is_some_and(|bits| bits & hierarchy != 0)
}
