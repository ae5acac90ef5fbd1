//! Fills a [`VictimRecord`] from a `task_struct`: shared by the kernel OOM
//! killer's hook and the userspace-killer hook, so both report a victim the
//! same way.

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_ktime_get_ns, bpf_probe_read_kernel_buf};
use oom_probe_common::{
    feature, MemcgLevel, VictimRecord, MEMCG_LEVELS, MEMCG_WALK_LEVELS, RECORD_VICTIM,
    TASK_COMM_LEN,
};

use crate::kernel::{
    cgroup_id, count_lost, count_lost_kill, current_tgid_tid, has, memcg_of_css,
    memcg_usage_and_limit, offset, read, read_ptr, BPF_RB_FORCE_WAKEUP, EVENTS,
};

/// Sends one record of `kind` about `task`; with a null `task` (kernels
/// whose hook gives only a pid, and the task was not found) only `pid` and
/// the trigger are filled, and the record's features say so. `signal` is
/// a userspace killer's signal (0 for the kernel's records).
#[inline(always)]
pub fn send_victim_record(kind: u32, task: *const u8, pid: u32, signal: u32) {
    // A flag, not a nulled pointer: a select on a typed (tp_btf) pointer
    // compiles to `&=` on it, which the verifier rejects.
    let task_ok = !task.is_null() && has(feature::TASK);
    let Some(mut entry) = EVENTS.reserve::<VictimRecord>(0) else {
        count_lost();
        // Kernel kills also by cgroup: the kernel's own counter of that
        // cgroup may be gone (removed) before userspace reads it.
        if kind == RECORD_VICTIM {
            count_lost_kill(if task_ok { victim_memcg_id(task) } else { 0 });
        }
        return;
    };
    let record = unsafe { &mut *entry.as_mut_ptr() };
    let (trigger_tgid, trigger_tid) = current_tgid_tid();
    record.kind = kind;
    record.features = if task_ok {
        offset!(features)
    } else {
        offset!(features) & !feature::TASK_BASED
    };
    record.kernel_time_ns = unsafe { bpf_ktime_get_ns() };
    record.trigger_tgid = trigger_tgid;
    record.trigger_tid = trigger_tid;
    record.trigger_comm = bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]);
    record._pad = 0;
    record.comm = [0; TASK_COMM_LEN];
    if task_ok {
        record.tgid = read::<u32>(task, offset!(task_tgid));
        record.tid = read::<u32>(task, offset!(task_pid));
        let comm = task.wrapping_add(offset!(task_comm) as usize);
        let _ = unsafe { bpf_probe_read_kernel_buf(comm, &mut record.comm) };
        let cred = read_ptr(task, offset!(task_real_cred));
        record.uid = read::<u32>(cred, offset!(cred_uid));
        let signal_struct = read_ptr(task, offset!(task_signal));
        record.oom_score_adj = read::<i16>(signal_struct, offset!(signal_oom_score_adj)) as i32;
    } else {
        record.tgid = pid;
        record.tid = pid;
        record.uid = 0;
        record.oom_score_adj = 0;
    }
    record.ns_pid = if has(feature::NS_PID) {
        ns_pid(task)
    } else {
        0
    };
    fill_mm(record, task);
    fill_cgroups(record, task);
    record.trigger_cgroup_id = trigger_cgroup_id();
    record.signal = signal;
    // Kills are rare: wake the reader for every one rather than batching.
    entry.submit(BPF_RB_FORCE_WAKEUP);
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
    let mut memcg = if has(feature::MEMCG) {
        memcg_of_css(read_ptr(cgroups, offset!(css_set_memory_css)))
    } else {
        core::ptr::null()
    };
    // Walk up the page counters now: a moment later the victim's memory is
    // freed and the cgroup that ran out no longer looks full.
    let mut depth = 0u32;
    for level in 0..MEMCG_LEVELS {
        record.memcg_levels[level] = memcg_level(memcg);
        if !memcg.is_null() {
            depth += 1;
        }
        memcg = parent_memcg(memcg);
    }
    // Deeper hierarchies (kind in Docker, nested runtimes): go on up to
    // MEMCG_WALK_LEVELS, keeping only the lowest memcg at its limit.
    record.memcg_beyond = MemcgLevel::default();
    for _ in MEMCG_LEVELS..MEMCG_WALK_LEVELS {
        if memcg.is_null() {
            break;
        }
        depth += 1;
        if record.memcg_beyond.cgroup_id == 0 {
            let level = memcg_level(memcg);
            if at_limit(&level) {
                record.memcg_beyond = level;
            }
        }
        memcg = parent_memcg(memcg);
    }
    // Null here: the walk passed the root within the bound.
    record.memcg_depth = if memcg.is_null() { depth } else { 0 };
}

/// A charge fails when usage plus the pages asked for (a charge batch of 64
/// pages, or a huge page) would pass the limit: the same slack userspace
/// allows for the levels it judges itself. An unlimited counter
/// (`PAGE_COUNTER_MAX`, 2^51 pages) never comes this close.
#[inline(always)]
fn at_limit(level: &MemcgLevel) -> bool {
    let slack = 512 + level.limit_pages / 128;
    level.cgroup_id != 0 && level.usage_pages.wrapping_add(slack) >= level.limit_pages
}

/// The id of `task`'s memory cgroup (the one whose kill counter the kernel
/// bumps for this kill); 0 when it cannot be read.
#[inline(always)]
fn victim_memcg_id(task: *const u8) -> u64 {
    if !has(feature::MEMCG) {
        return 0;
    }
    let cgroups = read_ptr(task, offset!(task_cgroups));
    let css = read_ptr(cgroups, offset!(css_set_memory_css));
    if css.is_null() {
        return 0;
    }
    cgroup_id(read_ptr(css, offset!(css_cgroup)))
}

/// The memory cgroup id of the current task: the one whose allocation (or
/// SIGKILL) set off this kill.
#[inline(always)]
fn trigger_cgroup_id() -> u64 {
    current_memcg_id()
}

/// The memory cgroup id of the current task; 0 when it cannot be read.
#[inline(always)]
pub fn current_memcg_id() -> u64 {
    if !has(feature::MEMCG) {
        return 0;
    }
    let current = unsafe { aya_ebpf::helpers::bpf_get_current_task() } as *const u8;
    let cgroups = read_ptr(current, offset!(task_cgroups));
    let css = read_ptr(cgroups, offset!(css_set_memory_css));
    if css.is_null() {
        return 0;
    }
    cgroup_id(read_ptr(css, offset!(css_cgroup)))
}

#[inline(always)]
fn memcg_level(memcg: *const u8) -> MemcgLevel {
    if memcg.is_null() {
        return MemcgLevel::default();
    }
    let css = memcg.wrapping_add(offset!(memcg_css) as usize);
    let (usage_pages, limit_pages) = memcg_usage_and_limit(memcg);
    MemcgLevel {
        cgroup_id: cgroup_id(read_ptr(css, offset!(css_cgroup))),
        usage_pages,
        limit_pages,
    }
}

/// The parent memcg, through `memory.parent` (a pointer to the parent's
/// embedded page counter); null at the root.
#[inline(always)]
fn parent_memcg(memcg: *const u8) -> *const u8 {
    let counter = offset!(memcg_memory);
    let parent = read_ptr(memcg, counter + offset!(page_counter_parent));
    if parent.is_null() {
        parent
    } else {
        parent.wrapping_sub(counter as usize)
    }
}
