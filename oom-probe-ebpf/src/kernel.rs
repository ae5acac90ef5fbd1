//! Maps, the offsets global and the small readers every hook shares.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_probe_read_kernel,
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use oom_probe_common::{KernelOffsets, LOST_BY_CGROUP_ENTRIES, LOST_BY_CGROUP_FULL, LOST_RECORDS};

/// `bpf_ringbuf_submit` flag: notify the reader now, not adaptively.
pub const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Every record goes through this one buffer; userspace sets its size.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Records the buffer had no room for, so a loss is counted, never silent
/// (index `LOST_RECORDS`), and kill records lost while [`LOST_BY_CGROUP`]
/// was full (index `LOST_BY_CGROUP_FULL`).
#[map(name = "LOST")]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Kernel OOM-kill records the buffer had no room for, per victim memory
/// cgroup id: the kill is then still reported, from here, even when its
/// cgroup (and the kernel's counter in it) is removed before userspace
/// compares counters.
#[map(name = "LOST_BY_CGROUP")]
pub static LOST_BY_CGROUP: HashMap<u64, u64> = HashMap::with_max_entries(LOST_BY_CGROUP_ENTRIES, 0);

/// Filled by the loader from the running kernel's BTF before load.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };

/// Reads one field of [`OFFSETS`]; volatile so the compiler cannot fold the
/// zero it sees at build time into the program.
macro_rules! offset {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&$crate::kernel::offsets().$field) }
    };
}
pub(crate) use offset;

/// The offsets global, for [`offset!`].
pub fn offsets() -> &'static KernelOffsets {
    &OFFSETS
}

/// True when the kernel's BTF resolved the given [`oom_probe_common::feature`] group.
#[inline(always)]
pub fn has(feature: u32) -> bool {
    offset!(features) & feature != 0
}

/// Counts one record that did not fit in the ring buffer.
#[inline(always)]
pub fn count_lost() {
    count_at(LOST_RECORDS);
}

#[inline(always)]
fn count_at(index: u32) {
    if let Some(counter) = LOST.get_ptr_mut(index) {
        unsafe { *counter += 1 };
    }
}

/// Counts one kernel OOM-kill record that did not fit in the ring buffer
/// under the victim's memory cgroup id. The kernel runs its OOM killer under
/// `oom_lock`, so no two kills increment at once; userspace only reads an
/// entry, and removes it once its cgroup is gone.
#[inline(always)]
pub fn count_lost_kill(memcg_id: u64) {
    if let Some(count) = LOST_BY_CGROUP.get_ptr_mut(&memcg_id) {
        unsafe { *count += 1 };
        return;
    }
    if LOST_BY_CGROUP
        .insert(&memcg_id, &1, BPF_NOEXIST as u64)
        .is_err()
    {
        count_at(LOST_BY_CGROUP_FULL);
    }
}

/// Reads a `T` at `base + offset` in kernel memory; zero when unreadable.
#[inline(always)]
pub fn read<T: Default>(base: *const u8, offset: u32) -> T {
    if base.is_null() {
        return T::default();
    }
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }
        .unwrap_or_default()
}

/// Reads a kernel pointer at `base + offset`; null when unreadable.
#[inline(always)]
pub fn read_ptr(base: *const u8, offset: u32) -> *const u8 {
    read::<usize>(base, offset) as *const u8
}

/// The kernfs id of a `struct cgroup`, which is the inode number of its
/// directory in cgroupfs and what userspace resolves to a path.
#[inline(always)]
pub fn cgroup_id(cgroup: *const u8) -> u64 {
    let kn = read_ptr(cgroup, offset!(cgroup_kn));
    read::<u64>(kn, offset!(kernfs_node_id))
}

/// The `mem_cgroup` a memory css belongs to (the css is embedded in it).
#[inline(always)]
pub fn memcg_of_css(css: *const u8) -> *const u8 {
    if css.is_null() {
        return css;
    }
    css.wrapping_sub(offset!(memcg_css) as usize)
}

/// Usage and limit of a memcg's `memory` page counter, in pages.
#[inline(always)]
pub fn memcg_usage_and_limit(memcg: *const u8) -> (u64, u64) {
    let counter = offset!(memcg_memory);
    (
        read::<u64>(memcg, counter + offset!(page_counter_usage)),
        read::<u64>(memcg, counter + offset!(page_counter_max)),
    )
}

/// `bpf_get_current_pid_tgid()` split into (tgid, tid).
#[inline(always)]
pub fn current_tgid_tid() -> (u32, u32) {
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}
