//! The `mark_victim` tracepoint: fires once per process the OOM killer has
//! chosen, on every kernel, with or without kprobes. tp_btf is preferred; the
//! raw tracepoint serves kernels that cannot attach tp_btf. Both receive the
//! same arguments: `(struct task_struct *task, uid_t uid)` on 6.9+ (and
//! backports), `(int pid)` before.
//!
//! With only the pid, the victim's task comes from the SIGKILL the OOM
//! killer sends it from the same thread just before marking it
//! (`__oom_kill_process`: `do_send_sig_info(SIGKILL, SEND_SIG_PRIV, victim)`
//! then `mark_oom_victim(victim)`), which the `signal_generate` hook keeps
//! in [`PENDING_VICTIMS`]; or it is the current task, when the OOM killer
//! marks an already exiting allocator without a signal.
//!
//! That SIGKILL is also what makes a mark a kill: when the chosen task is
//! already exiting (`task_will_free_mem()`, in `oom_kill_process` and
//! `out_of_memory`), the kernel only marks it, sends nothing and counts no
//! `oom_kill`. A mark that no SIGKILL from this thread to the same task
//! preceded is sent as [`RECORD_OOM_MARK`], once userspace has said the
//! `signal_generate` hook runs ([`SIGNAL_HOOKED`]); else as a kill, as
//! before.

use aya_ebpf::{
    helpers::bpf_get_current_task,
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, LruHashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use oom_probe_common::{feature, RECORD_OOM_MARK, RECORD_VICTIM};

use crate::{
    kernel::{current_tgid_tid, has, offset, read},
    victim::send_victim_record,
};

/// Thread id of a task that just sent a kernel-private SIGKILL (the OOM
/// killer's) to the task whose `task_struct` address is the value; taken
/// back by the `mark_victim` that follows on the same thread.
#[map(name = "PENDING_VICTIMS")]
pub static PENDING_VICTIMS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(256, 0);

/// Index 0 is 1 once userspace attached the `signal_generate` hook, so a
/// missing SIGKILL in [`PENDING_VICTIMS`] means a mark, not a lost sight.
#[map(name = "SIGNAL_HOOKED")]
static SIGNAL_HOOKED: Array<u32> = Array::with_max_entries(1, 0);

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim_btf(ctx: BtfTracePointContext) -> i32 {
    record_victim(ctx.arg::<u64>(0));
    0
}

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn mark_victim_raw(ctx: RawTracePointContext) -> i32 {
    record_victim(ctx.arg::<u64>(0));
    0
}

/// `arg0` is the task pointer or, on old kernels, the victim's pid.
#[inline(always)]
fn record_victim(arg0: u64) {
    let sigkilled = take_sigkilled();
    if has(feature::VICTIM_TASK_ARG) {
        let kind = kind_of(sigkilled == arg0);
        send_victim_record(kind, arg0 as usize as *const u8, 0, 0);
    } else {
        let pid = arg0 as u32;
        let (task, killed) = victim_task(pid, sigkilled);
        send_victim_record(kind_of(killed), task, pid, 0);
    }
}

/// The task this thread last sent a kernel SIGKILL to (0: none), taken out
/// of [`PENDING_VICTIMS`].
#[inline(always)]
fn take_sigkilled() -> u64 {
    let (_, tid) = current_tgid_tid();
    // SAFETY: the value is copied out before the entry is removed.
    match unsafe { PENDING_VICTIMS.get(&tid) } {
        Some(&task) => {
            let _ = PENDING_VICTIMS.remove(&tid);
            task
        }
        None => 0,
    }
}

/// [`RECORD_VICTIM`] for a kill, [`RECORD_OOM_MARK`] for a mark without
/// one, where the signal hook runs to tell them apart.
#[inline(always)]
fn kind_of(killed: bool) -> u32 {
    let hooked = SIGNAL_HOOKED.get(0).copied().unwrap_or(0) != 0;
    if killed || !hooked {
        RECORD_VICTIM
    } else {
        RECORD_OOM_MARK
    }
}

/// The task whose thread id is `pid`: the target of this thread's last
/// kernel SIGKILL (then also `true`: killed), else the current task; null
/// when neither is it.
#[inline(always)]
fn victim_task(pid: u32, sigkilled: u64) -> (*const u8, bool) {
    if !has(feature::TASK) {
        // Cannot compare: a kill, as before (userspace does not set
        // SIGNAL_HOOKED on such kernels anyway).
        return (core::ptr::null(), true);
    }
    let task = sigkilled as usize as *const u8;
    if sigkilled != 0 && read::<u32>(task, offset!(task_pid)) == pid {
        return (task, true);
    }
    let current = unsafe { bpf_get_current_task() } as usize as *const u8;
    if read::<u32>(current, offset!(task_pid)) == pid {
        return (current, false);
    }
    (core::ptr::null(), false)
}
