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

use aya_ebpf::{
    helpers::bpf_get_current_task,
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::LruHashMap,
    programs::{BtfTracePointContext, RawTracePointContext},
};
use oom_probe_common::{feature, RECORD_VICTIM};

use crate::{
    kernel::{current_tgid_tid, has, offset, read},
    victim::send_victim_record,
};

/// Thread id of a task that just sent a kernel-private SIGKILL (the OOM
/// killer's) to the task whose `task_struct` address is the value; taken
/// back by the `mark_victim` that follows on the same thread.
#[map(name = "PENDING_VICTIMS")]
pub static PENDING_VICTIMS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(256, 0);

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
    if has(feature::VICTIM_TASK_ARG) {
        send_victim_record(RECORD_VICTIM, arg0 as usize as *const u8, 0);
    } else {
        let pid = arg0 as u32;
        send_victim_record(RECORD_VICTIM, victim_task(pid), pid);
    }
}

/// The task whose thread id is `pid`: the target of this thread's last
/// kernel SIGKILL, else the current task; null when neither is it.
#[inline(always)]
fn victim_task(pid: u32) -> *const u8 {
    if !has(feature::TASK) {
        return core::ptr::null();
    }
    let (_, tid) = current_tgid_tid();
    // SAFETY: the value is copied out before the entry is removed.
    if let Some(&task) = unsafe { PENDING_VICTIMS.get(&tid) } {
        let _ = PENDING_VICTIMS.remove(&tid);
        let task = task as usize as *const u8;
        if read::<u32>(task, offset!(task_pid)) == pid {
            return task;
        }
    }
    let current = unsafe { bpf_get_current_task() } as usize as *const u8;
    if read::<u32>(current, offset!(task_pid)) == pid {
        return current;
    }
    core::ptr::null()
}
