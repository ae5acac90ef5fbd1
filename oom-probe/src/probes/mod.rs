//! Loads the eBPF object and attaches the best hooks this kernel offers.
//!
//! Victims come from the `mark_victim` tracepoint (the raw tracepoint, else
//! tp_btf: every kernel with BPF has one of them). The OOM decision comes
//! from `oom_kill_process` through fentry, else a kprobe, where the kernel
//! allows either; without them oom-probe still reports every kill.
//!
//! Start-up reads the kernel's BTF at most once, and only on a cold start:
//! the offsets, and the BTF id fentry attaches to, come from one parse
//! ([`kernel_offsets`]) or from the layout cache of an earlier run on the
//! same boot ([`layout_cache`]). The raw tracepoints need no BTF, and the
//! fentry hook is loaded by id; aya's own parse of the BTF is made only for
//! a tp_btf hook, which is tried only where the raw tracepoint fails, or is
//! asked for (`--hook tp-btf`, `check`).

use std::fmt;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, KProbe, RawTracePoint},
    Btf, Ebpf, EbpfLoader,
};
use oom_probe_common::{
    EVENTS_MAP, EXIT_HOOKED_MAP, KILLERS_MAP, KILLER_CGROUPS_MAP, KILLER_IMPOSTORS_MAP,
    LOST_BY_CGROUP_FULL, LOST_BY_CGROUP_MAP, LOST_MAP, LOST_RECORDS, OFFSETS_GLOBAL,
    SIGNAL_HOOKED_MAP, TASK_COMM_LEN,
};

pub mod kernel_offsets;
pub mod killers;
pub mod layout_cache;

use killers::{KillerWatch, Killers};

use kernel_offsets::{BtfBytes, KernelLayout};
use layout_cache::LayoutCache;

/// The compiled eBPF object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oom-probe-ebpf"));

/// The kernel's `oom_kill_process()`, hooked for the OOM decision.
const OOM_KILL_PROCESS: &str = "oom_kill_process";
/// The tracepoint every OOM victim passes through.
const MARK_VICTIM: &str = "mark_victim";
/// The tracepoint every signal passes through, for userspace OOM killers.
const SIGNAL_GENERATE: &str = "signal_generate";
/// The tracepoint every exiting task passes through, for the end of a
/// userspace OOM killer's SIGTERM.
const SCHED_PROCESS_EXIT: &str = "sched_process_exit";

/// Where victims come from: the `mark_victim` tracepoint (`--hook`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VictimHook {
    /// `tp_btf/mark_victim`: the same record, but its load needs aya's
    /// parse of the kernel's BTF (tens of ms and MiB at start-up).
    TpBtf,
    /// `raw_tp/mark_victim`: the default; no BTF needed to load it, and the
    /// same arguments and per-kill cost as tp_btf.
    RawTracepoint,
}

/// Where the OOM decision comes from: `oom_kill_process` (`--decision-hook`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DecisionHook {
    /// `fentry/oom_kill_process`: cheapest.
    Fentry,
    /// `kprobe/oom_kill_process`: where fentry is refused.
    Kprobe,
}

/// Where userspace OOM killers' SIGKILLs come from: `signal_generate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalHook {
    /// `tp_btf/signal_generate`.
    TpBtf,
    /// `raw_tp/signal_generate`: where tp_btf is refused.
    RawTracepoint,
}

/// Where the exits of a userspace killer's SIGTERM targets come from:
/// `sched_process_exit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitHook {
    /// `tp_btf/sched_process_exit`.
    TpBtf,
    /// `raw_tp/sched_process_exit`: the default, no BTF parse needed.
    RawTracepoint,
}

impl ExitHook {
    /// Best first (as for [`VictimHook::ALL`]).
    pub const ALL: [ExitHook; 2] = [Self::RawTracepoint, Self::TpBtf];
}

impl VictimHook {
    /// Best first: the raw tracepoint gives the same record as tp_btf and
    /// starts without a BTF parse.
    pub const ALL: [VictimHook; 2] = [Self::RawTracepoint, Self::TpBtf];
}

impl DecisionHook {
    /// Best first.
    pub const ALL: [DecisionHook; 2] = [Self::Fentry, Self::Kprobe];
}

impl SignalHook {
    /// Best first (as for [`VictimHook::ALL`]).
    pub const ALL: [SignalHook; 2] = [Self::RawTracepoint, Self::TpBtf];
}

/// Any one hook, whatever its role: what gets loaded and attached, and what
/// `check` reports (its `Display` is the `check` name, e.g. `tp_btf mark_victim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Victim(VictimHook),
    Decision(DecisionHook),
    Signal(SignalHook),
    Exit(ExitHook),
}

impl From<VictimHook> for Hook {
    fn from(hook: VictimHook) -> Self {
        Self::Victim(hook)
    }
}

impl From<DecisionHook> for Hook {
    fn from(hook: DecisionHook) -> Self {
        Self::Decision(hook)
    }
}

impl From<SignalHook> for Hook {
    fn from(hook: SignalHook) -> Self {
        Self::Signal(hook)
    }
}

impl From<ExitHook> for Hook {
    fn from(hook: ExitHook) -> Self {
        Self::Exit(hook)
    }
}

macro_rules! display_as_hook {
    ($($role:ty),*) => {$(
        impl fmt::Display for $role {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                Hook::from(*self).fmt(f)
            }
        }
    )*};
}
display_as_hook!(VictimHook, DecisionHook, SignalHook, ExitHook);

impl Hook {
    /// Every hook, victims first, each role best first (`check` lists them
    /// in this order).
    pub fn all() -> impl Iterator<Item = Hook> {
        VictimHook::ALL
            .into_iter()
            .map(Hook::from)
            .chain(DecisionHook::ALL.into_iter().map(Hook::from))
            .chain(SignalHook::ALL.into_iter().map(Hook::from))
            .chain(ExitHook::ALL.into_iter().map(Hook::from))
    }

    fn program(self) -> &'static str {
        match self {
            Self::Victim(VictimHook::TpBtf) => "mark_victim_btf",
            Self::Victim(VictimHook::RawTracepoint) => "mark_victim_raw",
            Self::Decision(DecisionHook::Fentry) => "oom_kill_process_fentry",
            Self::Decision(DecisionHook::Kprobe) => "oom_kill_process_kprobe",
            Self::Signal(SignalHook::TpBtf) => "signal_generate_btf",
            Self::Signal(SignalHook::RawTracepoint) => "signal_generate_raw",
            Self::Exit(ExitHook::TpBtf) => "process_exit_btf",
            Self::Exit(ExitHook::RawTracepoint) => "process_exit_raw",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Victim(VictimHook::TpBtf) => "tp_btf mark_victim",
            Self::Victim(VictimHook::RawTracepoint) => "raw_tracepoint mark_victim",
            Self::Decision(DecisionHook::Fentry) => "fentry oom_kill_process",
            Self::Decision(DecisionHook::Kprobe) => "kprobe oom_kill_process",
            Self::Signal(SignalHook::TpBtf) => "tp_btf signal_generate",
            Self::Signal(SignalHook::RawTracepoint) => "raw_tracepoint signal_generate",
            Self::Exit(ExitHook::TpBtf) => "tp_btf sched_process_exit",
            Self::Exit(ExitHook::RawTracepoint) => "raw_tracepoint sched_process_exit",
        })
    }
}

/// Loaded, attached programs and the maps userspace reads.
pub struct Probes {
    ebpf: Ebpf,
    pub layout: KernelLayout,
    /// The layout cache [`Probes::layout`] was read from, `None` when the
    /// kernel's BTF was parsed for it.
    pub layout_cached_in: Option<std::path::PathBuf>,
    /// The hook that reports victims.
    pub victim_hook: VictimHook,
    /// The hook that reports the OOM decision, or why there is none.
    pub context_hook: Result<DecisionHook, String>,
    /// The hook that reports userspace OOM killers, or why there is none.
    pub signal_hook: Result<SignalHook, String>,
    /// The hook that reports the end of a userspace killer's SIGTERM
    /// target, or why there is none (then SIGTERMs are not reported).
    pub exit_hook: Result<ExitHook, String>,
    /// Keeps the killers' cgroups current in the kernel; `None` when no
    /// killer is named.
    _killer_watch: Option<KillerWatch>,
}

impl Probes {
    /// Loads the object for this kernel and attaches the first hook of
    /// `victim_hooks` that works, then the best OOM-decision hook. The
    /// offsets come from `layout_cache` where it holds this boot's (and it
    /// is written after a parse); `None` always parses the kernel's BTF.
    /// `userspace_killers` are `--userspace-killers` entries
    /// ([`killers::KillerSpec`]); errors: one does not parse, or too many.
    pub fn attach(
        ring_buffer_bytes: u32,
        victim_hooks: &[VictimHook],
        decision_hooks: &[DecisionHook],
        userspace_killers: &[String],
        layout_cache: Option<&LayoutCache>,
    ) -> Result<Self> {
        let killers = Killers::parse(userspace_killers)?;
        let (mut ebpf, layout, layout_cached_in) = load(ring_buffer_bytes, layout_cache)?;
        let mut btf = AyaBtf::default();
        let victim_hook = attach_first(&mut ebpf, &mut btf, &layout, victim_hooks)
            .map_err(|why| anyhow!("no OOM victim hook could be attached: {why}"))?;
        let context_hook = attach_first(&mut ebpf, &mut btf, &layout, decision_hooks);
        // The signal hook also tells a kill from a mark of an exiting task
        // (the OOM killer's SIGKILL comes first), and on pid-only
        // mark_victim kernels finds the victims' tasks, so it is attached
        // wherever it can read its target, even with no killers named.
        let signal_hook = if killers.is_empty() && !layout.tells_marks_from_kills() {
            Err(String::from("no userspace killers named"))
        } else {
            set_killers(&mut ebpf, &killers)
                .map_err(|e| format!("{e:#}"))
                .and_then(|()| attach_first(&mut ebpf, &mut btf, &layout, &SignalHook::ALL))
        };
        if signal_hook.is_ok() && layout.tells_marks_from_kills() {
            set_flag(&mut ebpf, SIGNAL_HOOKED_MAP)?;
        }
        let killer_watch = if killers.is_empty() || signal_hook.is_err() {
            None
        } else {
            Some(watch_killers(&mut ebpf, &killers)?)
        };
        // A killer's SIGTERM is reported only when its target's end is seen.
        let exit_hook = match &killer_watch {
            None => Err(String::from("no userspace killer's signals are watched")),
            Some(_) => attach_first(&mut ebpf, &mut btf, &layout, &ExitHook::ALL),
        };
        if exit_hook.is_ok() {
            set_flag(&mut ebpf, EXIT_HOOKED_MAP)?;
        }
        Ok(Self {
            ebpf,
            layout,
            layout_cached_in,
            victim_hook,
            context_hook,
            signal_hook,
            exit_hook,
            _killer_watch: killer_watch,
        })
    }

    /// The ring buffer every record arrives in (can be taken once).
    pub fn take_ring_buffer(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(EVENTS_MAP)
            .ok_or_else(|| anyhow!("no {EVENTS_MAP} map"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The counts of records the ring buffer had no room for (can be
    /// taken once).
    pub fn take_lost_counter(&mut self) -> Result<LostCounter> {
        let map = self
            .ebpf
            .take_map(LOST_MAP)
            .ok_or_else(|| anyhow!("no {LOST_MAP} map"))?;
        let by_cgroup = self
            .ebpf
            .take_map(LOST_BY_CGROUP_MAP)
            .ok_or_else(|| anyhow!("no {LOST_BY_CGROUP_MAP} map"))?;
        Ok(LostCounter {
            total: PerCpuArray::try_from(map)?,
            by_cgroup: BpfHashMap::try_from(by_cgroup)?,
        })
    }
}

/// Records the kernel dropped because the ring buffer was full: all of
/// them, and the kernel OOM kills among them by victim memory cgroup.
pub struct LostCounter {
    total: PerCpuArray<MapData, u64>,
    by_cgroup: BpfHashMap<MapData, u64, u64>,
}

impl LostCounter {
    /// Records of every kind lost since the programs were loaded, over all
    /// CPUs. Errors: the map could not be read.
    pub fn total(&self) -> Result<u64> {
        Ok(self.total.get(&LOST_RECORDS, 0)?.iter().sum())
    }

    /// Kernel OOM-kill records lost without their cgroup because the
    /// per-cgroup map was full, since load. Errors: the map could not be read.
    pub fn without_cgroup(&self) -> Result<u64> {
        Ok(self.total.get(&LOST_BY_CGROUP_FULL, 0)?.iter().sum())
    }

    /// Kernel OOM-kill records lost, per victim memory cgroup id (0: the
    /// cgroup could not be read), counted since load or since the cgroup's
    /// entry was last [`forget`]ed. An entry that cannot be read is skipped.
    ///
    /// [`forget`]: LostCounter::forget
    pub fn by_cgroup(&self) -> Vec<(u64, u64)> {
        self.by_cgroup.iter().filter_map(Result::ok).collect()
    }

    /// The count of one cgroup now (0 when it has none).
    pub fn of_cgroup(&self, id: u64) -> u64 {
        self.by_cgroup.get(&id, 0).unwrap_or(0)
    }

    /// Removes a cgroup's entry, making room in the map: only once the
    /// cgroup is gone, so that no kill can be counted in it meanwhile.
    /// Errors: the kernel refused the removal.
    pub fn forget(&mut self, id: u64) -> Result<()> {
        self.by_cgroup.remove(&id)?;
        Ok(())
    }
}

/// Loads the object with offsets for this kernel; attaches nothing.
fn load(
    ring_buffer_bytes: u32,
    cache: Option<&LayoutCache>,
) -> Result<(Ebpf, KernelLayout, Option<std::path::PathBuf>)> {
    raise_memlock_limit();
    let (layout, cached_in) = kernel_layout(cache)?;
    startup_trace("kernel layout");
    // Our programs carry no CO-RE relocations (the offsets go in as a
    // global), so aya's loader needs no kernel BTF: made without one, it
    // does not parse it (vendor/README.md).
    let ebpf = EbpfLoader::without_kernel_btf()
        .override_global(OFFSETS_GLOBAL, &layout.offsets, true)
        .map_max_entries(EVENTS_MAP, ring_buffer_bytes)
        .load(OBJECT)
        .map_err(|err| privilege_hint(anyhow!(err).context("cannot load the eBPF programs")))?;
    startup_trace("object loaded");
    Ok((ebpf, layout, cached_in))
}

/// This boot's layout from `cache` (and where it was read), else from one
/// parse of the kernel's BTF (then stored in `cache`; a failure to store is
/// logged, not fatal).
fn kernel_layout(
    cache: Option<&LayoutCache>,
) -> Result<(KernelLayout, Option<std::path::PathBuf>)> {
    if let Some(cache) = cache {
        if let Some(layout) = cache.load() {
            return Ok((layout, Some(cache.path().to_path_buf())));
        }
    }
    let layout = {
        let btf = kernel_offsets::load_vmlinux_btf()?;
        startup_trace("kernel BTF opened");
        kernel_offsets::resolve(&btf)
    };
    if let Some(cache) = cache {
        if let Err(err) = cache.store(&layout) {
            tracing::debug!(
                "cannot keep the kernel layout in {}: {err:#}",
                cache.path().display()
            );
        }
    }
    Ok((layout, None))
}

/// Prints the milliseconds since the process started and `what` on stderr
/// when `OOM_PROBE_STARTUP_TRACE` is set: the start-up profile README's
/// figures were read from.
pub fn startup_trace(what: &str) {
    static STARTED: std::sync::OnceLock<Option<std::time::Instant>> = std::sync::OnceLock::new();
    let started = STARTED.get_or_init(|| {
        std::env::var_os("OOM_PROBE_STARTUP_TRACE").map(|_| std::time::Instant::now())
    });
    if let Some(started) = started {
        // Not eprintln!: it panics when stderr is a closed pipe.
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!(
                "startup {:8.2} ms {what}\n",
                started.elapsed().as_secs_f64() * 1000.0
            ),
        );
    }
}

/// aya's parse of the kernel's BTF, made the first time a tp_btf hook is
/// tried and kept until the hooks are attached.
#[derive(Default)]
struct AyaBtf(Option<Btf>);

impl AyaBtf {
    fn get(&mut self) -> Result<&Btf> {
        if self.0.is_none() {
            let bytes: BtfBytes = kernel_offsets::read_vmlinux_btf()?;
            let btf = Btf::parse(&bytes, aya::Endianness::default())
                .context("cannot parse the kernel's BTF for tp_btf")?;
            self.0 = Some(btf);
        }
        Ok(self.0.as_ref().expect("parsed above"))
    }
}

/// Attaches the first of `hooks` that works; the error lists why each failed.
fn attach_first<H: Copy + Into<Hook>>(
    ebpf: &mut Ebpf,
    btf: &mut AyaBtf,
    layout: &KernelLayout,
    hooks: &[H],
) -> Result<H, String> {
    let mut failures = Vec::new();
    for &hook in hooks {
        match attach_hook(ebpf, btf, layout, hook.into()) {
            Ok(()) => return Ok(hook),
            Err(err) => failures.push(format!("{}: {err:#}", hook.into())),
        }
    }
    Err(failures.join("; "))
}

/// Sets the one-entry array `name` to 1: [`SIGNAL_HOOKED_MAP`] tells
/// `mark_victim` that `signal_generate` runs, so that a mark no SIGKILL
/// preceded is sent as a mark ([`oom_probe_common::RECORD_OOM_MARK`]);
/// [`EXIT_HOOKED_MAP`] tells `signal_generate` that killers' SIGTERMs can
/// be judged. Errors: the map is missing or the kernel refused the write.
fn set_flag(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let map = ebpf.map_mut(name).ok_or_else(|| anyhow!("no {name} map"))?;
    let mut hooked: aya::maps::Array<_, u32> = aya::maps::Array::try_from(map)?;
    hooked.set(0, 1, 0)?;
    Ok(())
}

/// Tells the signal hook the names whose SIGKILLs may be reported (comm,
/// as the kernel truncates it to 15 bytes).
fn set_killers(ebpf: &mut Ebpf, killers: &Killers) -> Result<()> {
    let map = ebpf
        .map_mut(KILLERS_MAP)
        .ok_or_else(|| anyhow!("no {KILLERS_MAP} map"))?;
    let mut names: BpfHashMap<_, [u8; TASK_COMM_LEN], u8> = BpfHashMap::try_from(map)?;
    for comm in &killers.comms {
        names.insert(*comm, 1, 0)?;
    }
    Ok(())
}

/// Fills the killers' cgroups and starts keeping them current.
fn watch_killers(ebpf: &mut Ebpf, killers: &Killers) -> Result<KillerWatch> {
    let take =
        |ebpf: &mut Ebpf, name: &str| ebpf.take_map(name).ok_or_else(|| anyhow!("no {name} map"));
    let allowed = BpfHashMap::try_from(take(ebpf, KILLER_CGROUPS_MAP)?)?;
    let impostors = PerCpuArray::try_from(take(ebpf, KILLER_IMPOSTORS_MAP)?)?;
    KillerWatch::start(killers, allowed, impostors)
}

/// Loads and attaches one hook; the link lives as long as `ebpf`.
fn attach_hook(ebpf: &mut Ebpf, btf: &mut AyaBtf, layout: &KernelLayout, hook: Hook) -> Result<()> {
    let program = ebpf
        .program_mut(hook.program())
        .ok_or_else(|| anyhow!("program {} missing from the object", hook.program()))?;
    match hook {
        Hook::Victim(VictimHook::TpBtf) => {
            let p: &mut BtfTracePoint = program.try_into()?;
            p.load(MARK_VICTIM, btf.get()?)?;
            p.attach()?;
        }
        Hook::Victim(VictimHook::RawTracepoint) => {
            let p: &mut RawTracePoint = program.try_into()?;
            p.load()?;
            p.attach(MARK_VICTIM)?;
        }
        Hook::Decision(DecisionHook::Fentry) => {
            let p: &mut FEntry = program.try_into()?;
            let id = layout
                .oom_kill_process_btf_id
                .ok_or_else(|| anyhow!("no function {OOM_KILL_PROCESS} in the kernel's BTF"))?;
            p.load_by_btf_id(id)?;
            p.attach()?;
        }
        Hook::Decision(DecisionHook::Kprobe) => {
            let p: &mut KProbe = program.try_into()?;
            p.load()?;
            p.attach(OOM_KILL_PROCESS, 0)?;
        }
        Hook::Signal(SignalHook::TpBtf) => {
            let p: &mut BtfTracePoint = program.try_into()?;
            p.load(SIGNAL_GENERATE, btf.get()?)?;
            p.attach()?;
        }
        Hook::Signal(SignalHook::RawTracepoint) => {
            let p: &mut RawTracePoint = program.try_into()?;
            p.load()?;
            p.attach(SIGNAL_GENERATE)?;
        }
        Hook::Exit(ExitHook::TpBtf) => {
            let p: &mut BtfTracePoint = program.try_into()?;
            p.load(SCHED_PROCESS_EXIT, btf.get()?)?;
            p.attach()?;
        }
        Hook::Exit(ExitHook::RawTracepoint) => {
            let p: &mut RawTracePoint = program.try_into()?;
            p.load()?;
            p.attach(SCHED_PROCESS_EXIT)?;
        }
    }
    Ok(())
}

/// Result of trying every hook, for `oom-probe check` (the kernel's BTF
/// parsed afresh: no cache).
pub fn probe_all_hooks() -> Result<Vec<(Hook, Result<(), String>)>> {
    let (mut ebpf, layout, _) = load(4096, None)?;
    let mut btf = AyaBtf::default();
    Ok(Hook::all()
        .map(|hook| {
            (
                hook,
                attach_hook(&mut ebpf, &mut btf, &layout, hook).map_err(|e| format!("{e:#}")),
            )
        })
        .collect())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK. Failure is fine
/// on newer kernels, and on older ones the load error says what is wrong.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// Adds what to do when loading failed for lack of privilege.
fn privilege_hint(err: anyhow::Error) -> anyhow::Error {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        err.context(
            "oom-probe must run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE \
             (CAP_SYS_ADMIN on kernels before 5.8)",
        )
    } else {
        err
    }
}
