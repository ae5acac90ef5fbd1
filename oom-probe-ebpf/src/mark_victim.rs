//! The `mark_victim` tracepoint: fires once per process the OOM killer has
//! chosen, on every kernel, with or without kprobes. tp_btf is preferred; the
//! raw tracepoint serves kernels that cannot attach tp_btf. Both receive the
//! same arguments: `(struct task_struct *task, uid_t uid)` on 6.9+ (and
//! backports), `(int pid)` before.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use oom_probe_common::{feature, RECORD_VICTIM};

use crate::{kernel::has, victim::send_victim_record};

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
        send_victim_record(RECORD_VICTIM, core::ptr::null(), arg0 as u32);
    }
}
