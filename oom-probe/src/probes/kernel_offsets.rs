//! Resolves the kernel struct offsets the eBPF programs need from BTF.
//!
//! Rust eBPF has no CO-RE relocations, so the loader does the relocation
//! itself: it reads the running kernel's BTF, finds each field (looking
//! through anonymous structs and unions, as `mm_struct` needs), and hands the
//! byte offsets to the programs as a global. A group of fields that does not
//! resolve switches off only the part of the event that needs it.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use btf_rs::{Btf, Type};
use fallible_iterator::FallibleIterator;
use oom_probe_common::{feature, KernelOffsets};

use crate::event::Constraint;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The offsets, plus what could not be resolved and why, so `check` and the
/// start-up log can tell a user which event fields this kernel cannot fill.
#[derive(Debug)]
pub struct KernelLayout {
    pub offsets: KernelOffsets,
    pub missing: Vec<String>,
    /// `enum oom_constraint` values mapped to the names events use.
    pub constraint_names: HashMap<u32, Constraint>,
    /// The BTF type id of the kernel function `oom_kill_process` (a
    /// `BTF_KIND_FUNC`), which the fentry hook attaches to; `None` where the
    /// kernel's BTF has no such function (inlined, or renamed).
    pub oom_kill_process_btf_id: Option<u32>,
}

impl KernelLayout {
    /// True when `mark_victim` passes only a pid (kernels before 6.9 without
    /// the backport) and the victim's task has to come from the
    /// `signal_generate` hook, which must then be attached.
    pub fn victim_task_from_signal(&self) -> bool {
        let f = self.offsets.features;
        f & feature::VICTIM_TASK_ARG == 0 && f & feature::TASK != 0
    }

    /// True when the `signal_generate` hook can see the OOM killer's
    /// SIGKILL and its target, so that a `mark_victim` without one is known
    /// to be a mark of an exiting task, not a kill.
    pub fn tells_marks_from_kills(&self) -> bool {
        let f = self.offsets.features;
        f & feature::SIGNAL_TASK_ARG != 0 && f & feature::TASK != 0
    }

    /// Where victim records get the victim's task from, in words, for
    /// `check` and the start-up log.
    pub fn victim_task_source(&self) -> &'static str {
        let f = self.offsets.features;
        if f & feature::TASK == 0 {
            "none: task_struct does not resolve"
        } else if f & feature::VICTIM_TASK_ARG != 0 {
            "mark_victim's task argument"
        } else {
            "mark_victim passes only the pid (the pre-6.9 format): the task is the target \
             of the SIGKILL the OOM killer sends just before (signal_generate), else the \
             current task"
        }
    }
}

/// The running kernel's BTF, raw: mapped read-only where the kernel allows
/// it (6.16 and later: no copy and no read calls), else read into one
/// buffer of the file's size (sysfs hands it out 4 KiB per read). Read once
/// at start-up, parsed by [`parse_btf`] for the offsets and by aya for the
/// tp_btf and fentry attach, then dropped.
pub enum BtfBytes {
    /// A private read-only map of [`VMLINUX_BTF`].
    Mapped(memmap2::Mmap),
    /// The file read in full, where mapping it is refused.
    Read(Vec<u8>),
}

impl std::ops::Deref for BtfBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(map) => map,
            Self::Read(bytes) => bytes,
        }
    }
}

/// Reads the running kernel's BTF (see [`BtfBytes`]); the error says what
/// to do when it is absent.
pub fn read_vmlinux_btf() -> Result<BtfBytes> {
    if !std::path::Path::new(VMLINUX_BTF).exists() {
        bail!(
            "{VMLINUX_BTF} is missing: this kernel was built without CONFIG_DEBUG_INFO_BTF, \
             and oom-probe needs BTF to read kernel structures on any kernel version"
        );
    }
    let file =
        std::fs::File::open(VMLINUX_BTF).with_context(|| format!("cannot open {VMLINUX_BTF}"))?;
    // SAFETY: the kernel's BTF never changes while it runs, and the map is
    // private and read-only.
    if let Ok(map) = unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) } {
        return Ok(BtfBytes::Mapped(map));
    }
    let size = file.metadata().map_or(0, |m| m.len() as usize);
    let mut bytes = Vec::with_capacity(size);
    std::io::Read::read_to_end(&mut &file, &mut bytes)
        .with_context(|| format!("cannot read {VMLINUX_BTF}"))?;
    Ok(BtfBytes::Read(bytes))
}

/// Parses BTF read by [`read_vmlinux_btf`] for [`resolve`].
pub fn parse_btf(bytes: &[u8]) -> Result<Btf> {
    Btf::from_bytes(bytes).with_context(|| format!("cannot parse {VMLINUX_BTF}"))
}

/// Opens the running kernel's BTF for [`resolve`]: with btf-rs' mmap
/// backend where the kernel lets [`VMLINUX_BTF`] be mapped (6.16+), which
/// only records where each type starts and decodes the few [`resolve`]
/// asks for (measured on 6.18: a few ms, where btf-rs' caching parse,
/// which decodes and indexes all ~100,000 types, took 160-240 ms and most
/// of the start-up peak); else read and parsed by [`parse_btf`].
pub fn load_vmlinux_btf() -> Result<Btf> {
    if std::path::Path::new(VMLINUX_BTF).exists() {
        if let Ok(btf) = Btf::from_file_with_backend(VMLINUX_BTF, btf_rs::Backend::Mmap) {
            return Ok(btf);
        }
    }
    parse_btf(&read_vmlinux_btf()?)
}

/// Every enumerator [`resolve`] reads, found in one pass over the types.
const ENUMERATORS: [&str; 8] = [
    "MM_FILEPAGES",
    "MM_ANONPAGES",
    "MM_SHMEMPAGES",
    "memory_cgrp_id",
    "CONSTRAINT_NONE",
    "CONSTRAINT_CPUSET",
    "CONSTRAINT_MEMORY_POLICY",
    "CONSTRAINT_MEMCG",
];

/// Resolves every offset group; never fails as a whole.
pub fn resolve(btf: &Btf) -> KernelLayout {
    let btf = Layouts {
        btf,
        enumerators: enumerators(btf, &ENUMERATORS),
        structs: Default::default(),
    };
    let mut offsets = KernelOffsets::default();
    let mut missing = Vec::new();
    let groups: [(u32, &str, GroupFn); 7] = [
        (
            feature::TASK,
            "victim task (pid, comm, uid, oom_score_adj, exit_code)",
            task_basics,
        ),
        (feature::NS_PID, "pid namespace pid", ns_pid),
        (feature::RSS, "RSS and total_vm", rss),
        (feature::CGROUP_V2, "cgroup v2 id", cgroup_v2),
        (feature::MEMCG, "memory cgroup", memcg),
        (
            feature::OOM_CONTROL,
            "oom_control (kprobe/fentry context)",
            oom_control,
        ),
        (
            feature::SIGNAL_TASK_ARG,
            "signal_generate target task (userspace OOM killers, and the victim's \
             task where mark_victim passes only its pid)",
            signal_task,
        ),
    ];
    for (bit, name, group) in groups {
        match group(&btf, &mut offsets) {
            Ok(()) => offsets.features |= bit,
            Err(err) => missing.push(format!("{name}: {err:#}")),
        }
    }
    if mark_victim_takes_task(&btf).is_ok() {
        offsets.features |= feature::VICTIM_TASK_ARG;
    } else if offsets.features & feature::SIGNAL_TASK_ARG == 0 {
        // Neither hook hands over the victim's task.
        missing.push(
            "victim task: mark_victim passes only the pid, and signal_generate not the task".into(),
        );
        offsets.features &= !feature::TASK_BASED;
    }
    if offsets.features & feature::TASK == 0 {
        // Every task-based group, and userspace-killer records, read the
        // task with these offsets.
        offsets.features &= !(feature::TASK_BASED | feature::SIGNAL_TASK_ARG);
    }
    let constraint_names = constraint_names(&btf);
    KernelLayout {
        offsets,
        missing,
        constraint_names,
        oom_kill_process_btf_id: btf.func_id("oom_kill_process"),
    }
}

/// Names for the kernel's `enum oom_constraint`, by value as this kernel
/// numbers them.
fn constraint_names(btf: &Layouts) -> HashMap<u32, Constraint> {
    [
        ("CONSTRAINT_NONE", Constraint::Global),
        ("CONSTRAINT_CPUSET", Constraint::Cpuset),
        ("CONSTRAINT_MEMORY_POLICY", Constraint::Mempolicy),
        ("CONSTRAINT_MEMCG", Constraint::Memcg),
    ]
    .into_iter()
    .filter_map(|(enumerator, name)| Some((btf.enum_value(enumerator).ok()?, name)))
    .collect()
}

type GroupFn = fn(&Layouts, &mut KernelOffsets) -> Result<()>;

/// Named enums holding some of [`ENUMERATORS`] (the rest, the RSS
/// counters, are in an anonymous one).
const ENUMS: [&str; 2] = ["oom_constraint", "cgroup_subsys_id"];

/// Values of the enumerators named in `wanted`: looked for in the enums
/// named [`ENUMS`] and the anonymous ones (a name lookup each), and only if
/// some are still missing in one walk of every type (~100,000: decoding
/// them all was most of a cold start-up). A walk that fails midway keeps
/// what it found.
fn enumerators(btf: &Btf, wanted: &[&str]) -> HashMap<String, u32> {
    let mut found = HashMap::new();
    let take = |t: Type, found: &mut HashMap<String, u32>| {
        if let Type::Enum(e) = t {
            for member in &e.members {
                if let Ok(name) = btf.resolve_name(member) {
                    if wanted.contains(&name.as_str()) {
                        found.entry(name).or_insert(member.val());
                    }
                }
            }
        }
    };
    let candidates = ENUMS
        .iter()
        .chain(&[""])
        .filter_map(|name| btf.resolve_ids_by_name(name).ok())
        .flatten();
    for id in candidates {
        if let Ok(t) = btf.resolve_type_by_id(id) {
            take(t, &mut found);
        }
        if found.len() == wanted.len() {
            return found;
        }
    }
    found.clear();
    let mut types = btf.type_iter();
    while let Ok(Some(t)) = types.next() {
        take(t, &mut found);
        if found.len() == wanted.len() {
            break;
        }
    }
    found
}

/// `signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task, ...)`.
fn signal_task(btf: &Layouts, _: &mut KernelOffsets) -> Result<()> {
    btf.expect_task_pointer(btf.tracepoint_arg_type("signal_generate", 2)?)
}

fn task_basics(btf: &Layouts, o: &mut KernelOffsets) -> Result<()> {
    o.task_pid = btf.offset("task_struct", "pid")?;
    o.task_tgid = btf.offset("task_struct", "tgid")?;
    o.task_comm = btf.offset("task_struct", "comm")?;
    o.task_real_cred = btf.offset("task_struct", "real_cred")?;
    o.cred_uid = btf.offset("cred", "uid.val")?;
    o.task_signal = btf.offset("task_struct", "signal")?;
    o.signal_oom_score_adj = btf.offset("signal_struct", "oom_score_adj")?;
    o.task_exit_code = btf.offset("task_struct", "exit_code")?;
    Ok(())
}

/// 6.9+ (and distribution backports) pass `struct task_struct *`; older
/// kernels pass only `int pid`.
fn mark_victim_takes_task(btf: &Layouts) -> Result<()> {
    btf.expect_task_pointer(btf.tracepoint_arg_type("mark_victim", 0)?)
        .context("this kernel's mark_victim passes only the pid")
}

fn ns_pid(btf: &Layouts, o: &mut KernelOffsets) -> Result<()> {
    o.task_group_leader = btf.offset("task_struct", "group_leader")?;
    o.task_thread_pid = btf.offset("task_struct", "thread_pid")?;
    o.pid_level = btf.offset("pid", "level")?;
    o.pid_numbers = btf.offset("pid", "numbers")?;
    o.upid_size = btf.struct_size("upid")?;
    o.upid_nr = btf.offset("upid", "nr")?;
    Ok(())
}

/// Handles both RSS layouts: `struct mm_rss_stat { atomic_long_t count[] }`
/// before 6.2 and `struct percpu_counter rss_stat[]` since.
fn rss(btf: &Layouts, o: &mut KernelOffsets) -> Result<()> {
    o.task_mm = btf.offset("task_struct", "mm")?;
    o.mm_total_vm = btf.offset("mm_struct", "total_vm")?;
    let (rss_stat, rss_type) = btf.member("mm_struct", "rss_stat")?;
    match rss_type {
        Type::Struct(s) if btf.btf.resolve_name(&s)? == "mm_rss_stat" => {
            o.mm_rss_base = rss_stat + btf.offset("mm_rss_stat", "count")?;
            o.mm_rss_stride = 8;
        }
        Type::Array(array) => {
            let element = btf.skip_modifiers(btf.btf.resolve_chained_type(&array)?)?;
            let Type::Struct(counter) = element else {
                bail!("mm_struct.rss_stat is an array of an unexpected type");
            };
            let name = btf.btf.resolve_name(&counter)?;
            o.mm_rss_base = rss_stat + btf.offset(&name, "count")?;
            o.mm_rss_stride = u32::try_from(counter.size())?;
        }
        other => bail!("mm_struct.rss_stat has unexpected type {}", other.name()),
    }
    o.rss_file_index = btf.enum_value("MM_FILEPAGES")?;
    o.rss_anon_index = btf.enum_value("MM_ANONPAGES")?;
    o.rss_shmem_index = btf.enum_value("MM_SHMEMPAGES")?;
    Ok(())
}

fn cgroup_ids(btf: &Layouts, o: &mut KernelOffsets) -> Result<()> {
    o.task_cgroups = btf.offset("task_struct", "cgroups")?;
    o.cgroup_kn = btf.offset("cgroup", "kn")?;
    // u64 since 5.5; before, a union whose `id` member is the same u64.
    o.kernfs_node_id = btf.offset("kernfs_node", "id")?;
    if let (_, Type::Union(_)) = btf.member("kernfs_node", "id")? {
        o.kernfs_node_id += btf.offset("kernfs_node_id", "id")?;
    }
    Ok(())
}

fn cgroup_v2(btf: &Layouts, o: &mut KernelOffsets) -> Result<()> {
    cgroup_ids(btf, o)?;
    o.css_set_dfl_cgrp = btf.offset("css_set", "dfl_cgrp")?;
    Ok(())
}

fn memcg(btf: &Layouts, o: &mut KernelOffsets) -> Result<()> {
    cgroup_ids(btf, o)?;
    let memory_cgrp_id = btf.enum_value("memory_cgrp_id")?;
    o.css_set_memory_css = btf.offset("css_set", "subsys")? + memory_cgrp_id * 8;
    o.css_cgroup = btf.offset("cgroup_subsys_state", "cgroup")?;
    o.memcg_css = btf.offset("mem_cgroup", "css")?;
    o.memcg_memory = btf.offset("mem_cgroup", "memory")?;
    o.page_counter_usage = btf.offset("page_counter", "usage")?;
    // Renamed from `limit` to `max` in 4.19.
    o.page_counter_max = btf
        .offset("page_counter", "max")
        .or_else(|_| btf.offset("page_counter", "limit"))?;
    o.page_counter_parent = btf.offset("page_counter", "parent")?;
    Ok(())
}

fn oom_control(btf: &Layouts, o: &mut KernelOffsets) -> Result<()> {
    o.oom_control_memcg = btf.offset("oom_control", "memcg")?;
    o.oom_control_totalpages = btf.offset("oom_control", "totalpages")?;
    o.oom_control_chosen = btf.offset("oom_control", "chosen")?;
    o.oom_control_chosen_points = btf.offset("oom_control", "chosen_points")?;
    o.oom_control_constraint = btf.offset("oom_control", "constraint")?;
    Ok(())
}

/// Small queries over a [`Btf`], in the terms the groups above need.
struct Layouts<'a> {
    btf: &'a Btf,
    /// [`ENUMERATORS`] as this kernel numbers them.
    enumerators: HashMap<String, u32>,
    /// Structs found by name so far: a name lookup walks every type's name
    /// with btf-rs' mmap backend, and `task_struct` alone is asked for
    /// about fifteen times.
    structs: std::cell::RefCell<HashMap<String, btf_rs::Struct>>,
}

impl Layouts<'_> {
    fn find_struct(&self, name: &str) -> Result<btf_rs::Struct> {
        if let Some(found) = self.structs.borrow().get(name) {
            return Ok(found.clone());
        }
        let found = self.lookup_struct(name)?;
        self.structs
            .borrow_mut()
            .insert(name.to_owned(), found.clone());
        Ok(found)
    }

    fn lookup_struct(&self, name: &str) -> Result<btf_rs::Struct> {
        self.btf
            .resolve_types_by_name(name)
            .map_err(|_| anyhow!("no type {name}"))?
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) | Type::Union(s) => Some(s),
                _ => None,
            })
            .ok_or_else(|| anyhow!("no struct {name}"))
    }

    /// The type id of the function `name` (`BTF_KIND_FUNC`).
    fn func_id(&self, name: &str) -> Option<u32> {
        self.btf
            .resolve_ids_by_name(name)
            .ok()?
            .into_iter()
            .find(|&id| matches!(self.btf.resolve_type_by_id(id), Ok(Type::Func(_))))
    }

    fn struct_size(&self, name: &str) -> Result<u32> {
        Ok(u32::try_from(self.find_struct(name)?.size())?)
    }

    /// Byte offset of a dotted member path such as `uid.val`.
    fn offset(&self, struct_name: &str, path: &str) -> Result<u32> {
        Ok(self.member(struct_name, path)?.0)
    }

    /// Byte offset and type of a dotted member path.
    fn member(&self, struct_name: &str, path: &str) -> Result<(u32, Type)> {
        let mut current = Type::Struct(self.find_struct(struct_name)?);
        let mut offset = 0;
        for name in path.split('.') {
            let (Type::Struct(s) | Type::Union(s)) = self.skip_modifiers(current)? else {
                bail!("{struct_name}.{path}: {name} is not inside a struct");
            };
            let (bits, member_type) = self
                .find_member(&s, name)?
                .ok_or_else(|| anyhow!("no member {struct_name}.{path}"))?;
            if bits % 8 != 0 {
                bail!("{struct_name}.{path} is a bitfield");
            }
            offset += bits / 8;
            current = member_type;
        }
        Ok((offset, self.skip_modifiers(current)?))
    }

    /// Finds a member by name, descending into anonymous structs and unions;
    /// returns its bit offset from the start of `s`.
    fn find_member(&self, s: &btf_rs::Struct, name: &str) -> Result<Option<(u32, Type)>> {
        for member in &s.members {
            let member_name = self.btf.resolve_name(member).unwrap_or_default();
            let member_type = self.btf.resolve_chained_type(member)?;
            if member_name == name {
                return Ok(Some((member.bit_offset(), member_type)));
            }
            if member_name.is_empty() {
                if let Type::Struct(inner) | Type::Union(inner) =
                    self.skip_modifiers(member_type)?
                {
                    if let Some((bits, found)) = self.find_member(&inner, name)? {
                        return Ok(Some((member.bit_offset() + bits, found)));
                    }
                }
            }
        }
        Ok(None)
    }

    fn skip_modifiers(&self, mut t: Type) -> Result<Type> {
        loop {
            t = match t {
                Type::Typedef(x) => self.btf.resolve_chained_type(&x)?,
                Type::Const(x) | Type::Volatile(x) | Type::Restrict(x) => {
                    self.btf.resolve_chained_type(&x)?
                }
                Type::TypeTag(x) => self.btf.resolve_chained_type(&x)?,
                other => return Ok(other),
            }
        }
    }

    fn expect_task_pointer(&self, t: Type) -> Result<()> {
        let Type::Ptr(ptr) = t else {
            bail!("argument is not a pointer")
        };
        match self.skip_modifiers(self.btf.resolve_chained_type(&ptr)?)? {
            Type::Struct(s) if self.btf.resolve_name(&s)? == "task_struct" => Ok(()),
            _ => bail!("argument is not struct task_struct *"),
        }
    }

    /// Value of an enumerator (one of [`ENUMERATORS`]), by its own name.
    fn enum_value(&self, enumerator: &str) -> Result<u32> {
        debug_assert!(ENUMERATORS.contains(&enumerator), "{enumerator}");
        self.enumerators
            .get(enumerator)
            .copied()
            .ok_or_else(|| anyhow!("no enumerator {enumerator}"))
    }

    /// Type of argument `index` of a tracepoint, from the `btf_trace_<name>`
    /// typedef the kernel emits for every tracepoint (its first parameter is
    /// the tracing context, skipped here).
    fn tracepoint_arg_type(&self, tracepoint: &str, index: usize) -> Result<Type> {
        let typedef_name = format!("btf_trace_{tracepoint}");
        let typedef = self
            .btf
            .resolve_types_by_name(&typedef_name)
            .map_err(|_| anyhow!("no {typedef_name} in BTF: the tracepoint does not exist"))?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no {typedef_name}"))?;
        let Type::Ptr(ptr) = self.skip_modifiers(typedef)? else {
            bail!("{typedef_name} is not a function pointer");
        };
        let Type::FuncProto(proto) = self.btf.resolve_chained_type(&ptr)? else {
            bail!("{typedef_name} is not a function pointer");
        };
        let param = proto
            .parameters
            .get(index + 1)
            .ok_or_else(|| anyhow!("{tracepoint} has no argument {index}"))?;
        self.skip_modifiers(self.btf.resolve_chained_type(param)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn fixture(name: &str) -> Btf {
        let path = format!("{}/src/testdata/{name}.gz", env!("CARGO_MANIFEST_DIR"));
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        Btf::from_bytes(&bytes).unwrap()
    }

    // Expected values in these tests were read off the same BTF with pahole
    // (`pahole -F btf -C task_struct ...`), an implementation independent of
    // this one.
    #[test]
    fn resolves_every_group_on_6_18_as_pahole_does() {
        check(
            "btf-6.18-host",
            Expected {
                task: [1264, 1268, 1752, 1728, 1848, 1328, 1368, 1136, 2376],
                signal_oom_score_adj: 1058,
                pid_numbers: 144,
                // 6.2+ layout: percpu_counter rss_stat[4] at 960, count at 8, size 40.
                mm: [360, 968, 40],
                css_set_dfl_cgrp: 112,
                cgroup_kn: 256,
                kernfs_node_id: 96,
                page_counter: [160, 168],
                exit_code: 1164,
            },
        );
        let layout = resolve(&fixture("btf-6.18-host"));
        let o = layout.offsets;
        let all = feature::VICTIM_TASK_ARG
            | feature::TASK
            | feature::NS_PID
            | feature::RSS
            | feature::CGROUP_V2
            | feature::MEMCG
            | feature::OOM_CONTROL
            | feature::SIGNAL_TASK_ARG;
        assert_eq!(o.features, all);
        assert_eq!(
            [o.cred_uid, o.pid_level, o.upid_size, o.upid_nr],
            [8, 4, 16, 0]
        );
        assert_eq!(
            [o.rss_file_index, o.rss_anon_index, o.rss_shmem_index],
            [0, 1, 3]
        );
        assert_eq!([o.css_cgroup, o.memcg_css, o.page_counter_usage], [0, 0, 0]);
        let oc = [
            o.oom_control_memcg,
            o.oom_control_totalpages,
            o.oom_control_chosen,
            o.oom_control_chosen_points,
        ];
        assert_eq!(oc, [16, 32, 40, 48]);
        assert_eq!(layout.constraint_names.get(&0), Some(&Constraint::Global));
        assert_eq!(layout.constraint_names.get(&3), Some(&Constraint::Memcg));
        // Counted by an independent walk of the fixture's type section (a
        // 25-line Python reader of the BTF format); on the running 6.18.44,
        // 99178 is also the attach_btf_id aya's own lookup gave fentry.
        assert_eq!(layout.oom_kill_process_btf_id, Some(99272));
    }

    /// The running kernel's BTF resolves the same through btf-rs' mmap
    /// backend (what start-up uses) as through its caching parse.
    #[test]
    fn both_btf_backends_resolve_the_running_kernel_alike() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("*** SKIPPED both_btf_backends_resolve_the_running_kernel_alike: no {VMLINUX_BTF} ***");
            return;
        }
        let mapped = resolve(&load_vmlinux_btf().unwrap());
        let parsed = resolve(&parse_btf(&read_vmlinux_btf().unwrap()).unwrap());
        assert_eq!(mapped.offsets, parsed.offsets);
        assert_eq!(mapped.missing, parsed.missing);
        assert_eq!(mapped.constraint_names, parsed.constraint_names);
        assert_eq!(
            mapped.oom_kill_process_btf_id,
            parsed.oom_kill_process_btf_id
        );
        assert!(parsed.oom_kill_process_btf_id.is_some());
    }

    /// The offsets that differ between kernels, in one row per fixture.
    struct Expected {
        task: [u32; 9], // pid tgid comm real_cred signal group_leader thread_pid mm cgroups
        signal_oom_score_adj: u32,
        pid_numbers: u32,
        mm: [u32; 3], // total_vm, first RSS counter value, stride
        css_set_dfl_cgrp: u32,
        cgroup_kn: u32,
        kernfs_node_id: u32,
        page_counter: [u32; 2], // max, parent
        /// `task_struct.exit_code`: read off the fixture by a 40-line
        /// Python reader of the BTF format (its pid and tgid agree with
        /// pahole's in `task`).
        exit_code: u32,
    }

    fn check(fixture_name: &str, e: Expected) {
        let layout = resolve(&fixture(fixture_name));
        assert!(
            layout.missing.is_empty(),
            "{fixture_name}: {:?}",
            layout.missing
        );
        let o = layout.offsets;
        let task = [
            o.task_pid,
            o.task_tgid,
            o.task_comm,
            o.task_real_cred,
            o.task_signal,
            o.task_group_leader,
            o.task_thread_pid,
            o.task_mm,
            o.task_cgroups,
        ];
        assert_eq!(task, e.task, "{fixture_name}: task_struct");
        assert_eq!(
            o.signal_oom_score_adj, e.signal_oom_score_adj,
            "{fixture_name}"
        );
        assert_eq!(o.pid_numbers, e.pid_numbers, "{fixture_name}");
        assert_eq!(
            [o.mm_total_vm, o.mm_rss_base, o.mm_rss_stride],
            e.mm,
            "{fixture_name}: mm_struct"
        );
        assert_eq!(o.css_set_dfl_cgrp, e.css_set_dfl_cgrp, "{fixture_name}");
        // memory_cgrp_id is 4 on these configs: subsys[4] of 8-byte pointers.
        assert_eq!(o.css_set_memory_css, 32, "{fixture_name}");
        assert_eq!(
            [o.cgroup_kn, o.kernfs_node_id],
            [e.cgroup_kn, e.kernfs_node_id],
            "{fixture_name}"
        );
        assert_eq!(
            [o.page_counter_max, o.page_counter_parent],
            e.page_counter,
            "{fixture_name}"
        );
        assert_eq!(o.oom_control_constraint, 56, "{fixture_name}");
        assert_eq!(o.task_exit_code, e.exit_code, "{fixture_name}: exit_code");
    }

    // Debian 6.1: the pre-6.2 `struct mm_rss_stat { atomic_long_t count[4] }`
    // layout, and the backported 6.9 mark_victim(task, uid). Values: pahole.
    #[test]
    fn resolves_debian_6_1_with_the_old_rss_layout() {
        check(
            "btf-6.1-debian",
            Expected {
                task: [2416, 2420, 2976, 2952, 3072, 2480, 2520, 2272, 3600],
                signal_oom_score_adj: 1026,
                pid_numbers: 96,
                mm: [192, 728, 8],
                css_set_dfl_cgrp: 128,
                cgroup_kn: 248,
                kernfs_node_id: 104,
                page_counter: [152, 160],
                exit_code: 2312,
            },
        );
    }

    // Debian 11's 5.10.223 (bullseye's last point release): the pre-6.9
    // mark_victim(int pid), so everything but the task argument resolves
    // and the victim's task comes through signal_generate. Values: pahole.
    #[test]
    fn resolves_debian_5_10_with_the_pid_only_mark_victim() {
        check(
            "btf-5.10-debian",
            Expected {
                task: [2232, 2236, 2736, 2712, 2832, 2296, 2336, 2056, 3328],
                signal_oom_score_adj: 1010,
                pid_numbers: 96,
                mm: [192, 712, 8],
                css_set_dfl_cgrp: 120,
                cgroup_kn: 248,
                kernfs_node_id: 104,
                page_counter: [32, 40],
                exit_code: 2136,
            },
        );
        let layout = resolve(&fixture("btf-5.10-debian"));
        let o = layout.offsets;
        assert_eq!(o.features & feature::VICTIM_TASK_ARG, 0);
        let rest = feature::TASK_BASED | feature::OOM_CONTROL | feature::SIGNAL_TASK_ARG;
        assert_eq!(o.features, rest);
        assert!(layout.victim_task_from_signal());
        assert_eq!(
            [
                o.cred_uid,
                o.upid_size,
                o.memcg_memory,
                o.page_counter_usage
            ],
            [8, 16, 208, 0]
        );
        assert_eq!(
            [o.rss_file_index, o.rss_anon_index, o.rss_shmem_index],
            [0, 1, 3]
        );
        assert_eq!(
            [
                o.oom_control_memcg,
                o.oom_control_totalpages,
                o.oom_control_chosen
            ],
            [16, 32, 40]
        );
        assert_eq!(layout.constraint_names.get(&3), Some(&Constraint::Memcg));
    }

    // Debian 6.12: percpu_counter RSS, as on 6.18 but with other offsets.
    #[test]
    fn resolves_debian_6_12() {
        check(
            "btf-6.12-debian",
            Expected {
                task: [2432, 2436, 2976, 2952, 3072, 2496, 2536, 2304, 3584],
                signal_oom_score_adj: 1018,
                pid_numbers: 112,
                mm: [256, 832, 40],
                css_set_dfl_cgrp: 128,
                cgroup_kn: 256,
                kernfs_node_id: 96,
                page_counter: [224, 232],
                exit_code: 2332,
            },
        );
    }
}
