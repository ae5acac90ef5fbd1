//! The `signal_generate` tracepoint, filtered in the kernel to SIGKILLs sent
//! by userspace OOM killers (systemd-oomd, earlyoom, oomd, ...): those kills
//! never reach the kernel OOM path but are memory kills all the same.
//! Arguments: `(int sig, struct kernel_siginfo *info, struct task_struct *task, int group, int result)`.
//!
//! It also keeps the target of every kernel-private SIGKILL (`info ==
//! SEND_SIG_PRIV`, which the OOM killer uses and `kill(2)` never does) for
//! the `mark_victim` that follows: its task on pid-only kernels, and on every
//! kernel the proof that the mark is a kill.

use aya_ebpf::{
    helpers::bpf_get_current_comm,
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::HashMap,
    programs::{BtfTracePointContext, RawTracePointContext},
};
use oom_probe_common::{feature, RECORD_USERSPACE_KILL, TASK_COMM_LEN};

use crate::{
    kernel::{current_tgid_tid, has},
    mark_victim::PENDING_VICTIMS,
    victim::send_victim_record,
};

const SIGKILL: u64 = 9;
/// The kernel's `SEND_SIG_PRIV`: `(struct kernel_siginfo *) 1`.
const SEND_SIG_PRIV: u64 = 1;

/// Names of the processes whose SIGKILLs count as OOM kills; userspace
/// fills it (`--userspace-killers`).
#[map(name = "KILLERS")]
static KILLERS: HashMap<[u8; TASK_COMM_LEN], u8> = HashMap::with_max_entries(32, 0);

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
    if signal as u32 as u64 != SIGKILL || !has(feature::SIGNAL_TASK_ARG) {
        return;
    }
    if info == SEND_SIG_PRIV {
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
    send_victim_record(RECORD_USERSPACE_KILL, task as usize as *const u8, 0);
}
