//! The `mark_victim` tracepoint: fires once per process the OOM killer has
//! chosen, on every kernel, with or without kprobes. tp_btf is preferred; the
//! raw tracepoint serves kernels that cannot attach tp_btf. Both receive the
//! same arguments: `(struct task_struct *task, uid_t uid)` on 6.9+ (and
//! backports), `(int pid)` before.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns, bpf_probe_read_kernel_buf},
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use oom_probe_common::{feature, VictimRecord, RECORD_VICTIM, TASK_COMM_LEN};

use crate::kernel::{
    cgroup_id, count_lost, current_tgid_tid, has, memcg_of_css, memcg_usage_and_limit, offset,
    read, read_ptr, EVENTS,
};

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

/// Sends one [`VictimRecord`]; `arg0` is the task pointer or, on old
/// kernels, the victim's pid.
#[inline(always)]
fn record_victim(arg0: u64) {
    let Some(mut entry) = EVENTS.reserve::<VictimRecord>(0) else {
        count_lost();
        return;
    };
    let record = unsafe { &mut *entry.as_mut_ptr() };
    let (trigger_tgid, trigger_tid) = current_tgid_tid();
    record.kind = RECORD_VICTIM;
    record.features = offset!(features);
    record.kernel_time_ns = unsafe { bpf_ktime_get_ns() };
    record.trigger_tgid = trigger_tgid;
    record.trigger_tid = trigger_tid;
    record.trigger_comm = bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]);
    record._pad = 0;
    if has(feature::VICTIM_TASK_ARG) {
        fill_from_task(record, arg0 as usize as *const u8);
    } else {
        fill_pid_only(record, arg0 as u32);
    }
    entry.submit(0);
}

/// Old kernels pass only the pid; userspace reports what it can.
#[inline(always)]
fn fill_pid_only(record: &mut VictimRecord, pid: u32) {
    record.tgid = pid;
    record.tid = pid;
    record.ns_pid = 0;
    record.uid = 0;
    record.oom_score_adj = 0;
    record.comm = [0; TASK_COMM_LEN];
    record.rss_anon_pages = 0;
    record.rss_file_pages = 0;
    record.rss_shmem_pages = 0;
    record.total_vm_pages = 0;
    record.cgroup_v2_id = 0;
    record.memcg_id = 0;
    record.memcg_usage_pages = 0;
    record.memcg_limit_pages = 0;
}

#[inline(always)]
fn fill_from_task(record: &mut VictimRecord, task: *const u8) {
    record.tgid = read::<u32>(task, offset!(task_tgid));
    record.tid = read::<u32>(task, offset!(task_pid));
    record.comm = [0; TASK_COMM_LEN];
    let comm = task.wrapping_add(offset!(task_comm) as usize);
    let _ = unsafe { bpf_probe_read_kernel_buf(comm, &mut record.comm) };
    let cred = read_ptr(task, offset!(task_real_cred));
    record.uid = read::<u32>(cred, offset!(cred_uid));
    let signal = read_ptr(task, offset!(task_signal));
    record.oom_score_adj = read::<i16>(signal, offset!(signal_oom_score_adj)) as i32;
    record.ns_pid = if has(feature::NS_PID) {
        ns_pid(task)
    } else {
        0
    };
    fill_mm(record, task);
    fill_cgroups(record, task);
}

/// The victim's process id as its own pid namespace numbers it.
#[inline(always)]
fn ns_pid(task: *const u8) -> u32 {
    let leader = read_ptr(task, offset!(task_group_leader));
    let pid = read_ptr(leader, offset!(task_thread_pid));
    let level = read::<u32>(pid, offset!(pid_level)) & 63;
    let upid = offset!(pid_numbers) + level * offset!(upid_size);
    read::<u32>(pid, upid + offset!(upid_nr))
}

#[inline(always)]
fn fill_mm(record: &mut VictimRecord, task: *const u8) {
    let mm = if has(feature::RSS) {
        read_ptr(task, offset!(task_mm))
    } else {
        core::ptr::null()
    };
    let counter = |index: u32| -> i64 {
        read::<i64>(mm, offset!(mm_rss_base) + index * offset!(mm_rss_stride))
    };
    record.rss_anon_pages = counter(offset!(rss_anon_index));
    record.rss_file_pages = counter(offset!(rss_file_index));
    record.rss_shmem_pages = counter(offset!(rss_shmem_index));
    record.total_vm_pages = read::<u64>(mm, offset!(mm_total_vm));
}

#[inline(always)]
fn fill_cgroups(record: &mut VictimRecord, task: *const u8) {
    let cgroups = read_ptr(task, offset!(task_cgroups));
    record.cgroup_v2_id = if has(feature::CGROUP_V2) {
        cgroup_id(read_ptr(cgroups, offset!(css_set_dfl_cgrp)))
    } else {
        0
    };
    if has(feature::MEMCG) {
        let css = read_ptr(cgroups, offset!(css_set_memory_css));
        record.memcg_id = cgroup_id(read_ptr(css, offset!(css_cgroup)));
        let (usage, limit) = memcg_usage_and_limit(memcg_of_css(css));
        record.memcg_usage_pages = usage;
        record.memcg_limit_pages = limit;
    } else {
        record.memcg_id = 0;
        record.memcg_usage_pages = 0;
        record.memcg_limit_pages = 0;
    }
}
