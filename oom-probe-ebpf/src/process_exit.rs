//! The `sched_process_exit` tracepoint, for the processes a userspace OOM
//! killer sent SIGTERM to only: when the thread-group leader of one in
//! [`KILLER_TARGETS`] exits, its `exit_code` goes to userspace, which
//! joins it to the SIGTERM (a polite kill that ended the process) or lets
//! the SIGTERM go (the process survived it). Every other exit costs one
//! hash lookup. Argument: `(struct task_struct *p)` (6.16+ adds
//! `bool group_dead`), which is the current task, so it is not read.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, LruHashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use oom_probe_common::{ExitRecord, KILLER_TARGETS_ENTRIES, RECORD_KILLER_EXIT};

use crate::kernel::{count_lost, current_tgid_tid, offset, read, BPF_RB_FORCE_WAKEUP, EVENTS};

/// Processes (tgid) a userspace OOM killer sent SIGTERM to and that have
/// not exited yet; filled by `signal_generate`.
#[map(name = "KILLER_TARGETS")]
pub static KILLER_TARGETS: LruHashMap<u32, u8> =
    LruHashMap::with_max_entries(KILLER_TARGETS_ENTRIES, 0);

/// Index 0 is 1 once userspace attached this hook.
#[map(name = "EXIT_HOOKED")]
pub static EXIT_HOOKED: Array<u32> = Array::with_max_entries(1, 0);

#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit_btf(_ctx: BtfTracePointContext) -> i32 {
    record_exit();
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn process_exit_raw(_ctx: RawTracePointContext) -> i32 {
    record_exit();
    0
}

#[inline(always)]
fn record_exit() {
    let (tgid, tid) = current_tgid_tid();
    // The leader's exit stands for the process's.
    if tgid != tid || unsafe { KILLER_TARGETS.get(&tgid) }.is_none() {
        return;
    }
    let _ = KILLER_TARGETS.remove(&tgid);
    let Some(mut entry) = EVENTS.reserve::<ExitRecord>(0) else {
        count_lost();
        return;
    };
    let task = unsafe { bpf_get_current_task() } as usize as *const u8;
    let record = unsafe { &mut *entry.as_mut_ptr() };
    record.kind = RECORD_KILLER_EXIT;
    record.exit_code = read::<u32>(task, offset!(task_exit_code));
    record.kernel_time_ns = unsafe { bpf_ktime_get_ns() };
    record.tgid = tgid;
    record._pad = 0;
    entry.submit(BPF_RB_FORCE_WAKEUP);
}
