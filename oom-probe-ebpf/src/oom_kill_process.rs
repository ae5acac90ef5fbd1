//! `oom_kill_process(struct oom_control *oc, const char *message)`: the OOM
//! decision itself (which memcg ran out, the constraint, the domain size).
//! Only kernels with kprobes or fentry can hook it; userspace joins this
//! record to the `mark_victim` records that follow it from the same task.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use oom_probe_common::{feature, OomContextRecord, RECORD_OOM_CONTEXT};

use crate::kernel::{
    cgroup_id, count_lost, current_tgid_tid, has, memcg_usage_and_limit, offset, read, read_ptr,
    BPF_RB_FORCE_WAKEUP, EVENTS,
};

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_process_fentry(ctx: FEntryContext) -> u32 {
    record_oom_context(ctx.arg::<u64>(0) as usize as *const u8);
    0
}

#[kprobe]
pub fn oom_kill_process_kprobe(ctx: ProbeContext) -> u32 {
    let oc = ctx.arg::<u64>(0).unwrap_or(0);
    record_oom_context(oc as usize as *const u8);
    0
}

#[inline(always)]
fn record_oom_context(oc: *const u8) {
    if !has(feature::OOM_CONTROL) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<OomContextRecord>(0) else {
        count_lost();
        return;
    };
    let record = unsafe { &mut *entry.as_mut_ptr() };
    let (trigger_tgid, trigger_tid) = current_tgid_tid();
    record.kind = RECORD_OOM_CONTEXT;
    record.constraint = read::<u32>(oc, offset!(oom_control_constraint));
    record.kernel_time_ns = unsafe { bpf_ktime_get_ns() };
    record.trigger_tgid = trigger_tgid;
    record.trigger_tid = trigger_tid;
    let chosen = read_ptr(oc, offset!(oom_control_chosen));
    record.chosen_tgid = read::<u32>(chosen, offset!(task_tgid));
    record._pad = 0;
    record.totalpages = read::<u64>(oc, offset!(oom_control_totalpages));
    record.chosen_points = read::<i64>(oc, offset!(oom_control_chosen_points));
    let memcg = read_ptr(oc, offset!(oom_control_memcg));
    let css = memcg.wrapping_add(offset!(memcg_css) as usize);
    record.memcg_id = if memcg.is_null() {
        0
    } else {
        cgroup_id(read_ptr(css, offset!(css_cgroup)))
    };
    let (usage, limit) = memcg_usage_and_limit(memcg);
    record.memcg_usage_pages = usage;
    record.memcg_limit_pages = limit;
    entry.submit(BPF_RB_FORCE_WAKEUP);
}
