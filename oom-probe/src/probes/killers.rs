//! Who may send a `userspace_kill`: the userspace OOM killers' names *and*
//! the cgroups they must run in (docs/security.md, "Userspace kills").
//!
//! A `--userspace-killers` entry is `COMM` or `COMM@CGROUP`: the process
//! name (as the kernel keeps it, 15 bytes) and the cgroup, from the
//! hierarchy root, its SIGKILLs must come from; a bare `COMM` means its
//! systemd unit, `/system.slice/COMM.service`. The kernel (the
//! `signal_generate` program) reports a SIGKILL only when its sender has
//! one of the names, runs in the host's pid namespace and sits in one of
//! the cgroups; a sender with the name alone is an impostor, dropped in the
//! kernel and counted.
//!
//! This module parses the entries (pure), resolves the cgroups to ids (one
//! `stat` each), and runs a small thread that keeps the kernel's allow-list
//! current (a unit that starts after oom-probe, or restarts, gets a new
//! cgroup id) and logs the impostors the kernel counted.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{mpsc, OnceLock},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use oom_probe_cgroupfs::Hierarchies;
use oom_probe_common::{KILLERS_ENTRIES, KILLER_CGROUP_MEMORY_V1, KILLER_CGROUP_V2, TASK_COMM_LEN};

/// `--userspace-killers`' default: the usual killers in their systemd
/// units, and Talos' OOM controller in machined (its PID 1, cgroup `/init`).
pub const DEFAULT_KILLERS: &str = "systemd-oomd,earlyoom,oomd,nohang,\
                                   nohang@/system.slice/nohang-desktop.service,machined@/init";

/// How often the allow-list is re-resolved and the impostor count read.
const REFRESH: Duration = Duration::from_secs(1);
/// At most one impostor warning this often (the first one at once).
const IMPOSTOR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// One `--userspace-killers` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillerSpec {
    /// The process name, truncated to 15 bytes as the kernel keeps it.
    pub comm: String,
    /// The cgroup its SIGKILLs must come from, from the hierarchy root,
    /// starting with `/` (`/` itself is the root cgroup).
    pub cgroup: String,
}

impl KillerSpec {
    /// `COMM` (then `/system.slice/COMM.service`) or `COMM@CGROUP`.
    /// Errors: an empty name, a name with `/` or NUL, a cgroup that is not
    /// an absolute path or that holds a `.`/`..` element.
    pub fn parse(spec: &str) -> Result<Self> {
        let (comm, cgroup) = match spec.split_once('@') {
            Some((comm, cgroup)) => (comm, cgroup.to_string()),
            None => (spec, format!("/system.slice/{spec}.service")),
        };
        if comm.is_empty() || comm.contains(['/', '\0']) {
            bail!("userspace killer {spec:?}: the name must be a process name (comm)");
        }
        let relative = cgroup.strip_prefix('/').ok_or_else(|| {
            anyhow!("userspace killer {spec:?}: the cgroup must start with / (the hierarchy root)")
        })?;
        if relative
            .split('/')
            .any(|part| part == "." || part == ".." || part.contains('\0'))
        {
            bail!("userspace killer {spec:?}: the cgroup must not hold . or .. elements");
        }
        let mut end = comm.len().min(TASK_COMM_LEN - 1);
        while !comm.is_char_boundary(end) {
            end -= 1;
        }
        Ok(Self {
            comm: comm[..end].to_string(),
            cgroup: format!("/{}", relative.trim_end_matches('/')),
        })
    }
}

/// Every killer name and cgroup of `--userspace-killers`, checked against
/// the kernel maps' sizes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Killers {
    /// Distinct names, as the kernel map keys them (zero-padded).
    pub comms: BTreeSet<[u8; TASK_COMM_LEN]>,
    /// Distinct cgroups, from the hierarchy root.
    pub cgroups: BTreeSet<String>,
}

impl Killers {
    /// Parses every entry (empty ones are skipped). Errors: a bad entry, or
    /// more than 32 distinct names or cgroups (the kernel maps' size: a
    /// 33rd would fail the signal hook's set-up).
    pub fn parse(specs: &[String]) -> Result<Self> {
        let mut killers = Self::default();
        for spec in specs.iter().filter(|s| !s.is_empty()) {
            let spec = KillerSpec::parse(spec)?;
            let mut comm = [0u8; TASK_COMM_LEN];
            comm[..spec.comm.len()].copy_from_slice(spec.comm.as_bytes());
            killers.comms.insert(comm);
            killers.cgroups.insert(spec.cgroup);
        }
        let limit = KILLERS_ENTRIES as usize;
        if killers.comms.len() > limit || killers.cgroups.len() > limit {
            bail!(
                "--userspace-killers names {} processes and {} cgroups: at most {limit} of each",
                killers.comms.len(),
                killers.cgroups.len()
            );
        }
        Ok(killers)
    }

    /// True when no killer is named (userspace kills are off).
    pub fn is_empty(&self) -> bool {
        self.comms.is_empty()
    }
}

/// The cgroupfs tree the killers' cgroups are looked up in: set once by
/// the command line (`--cgroupfs`, a DaemonSet's `/host/sys/fs/cgroup`),
/// else this mount namespace's own cgroup mounts.
static CGROUPFS: OnceLock<PathBuf> = OnceLock::new();

/// Says where the host's cgroupfs is mounted when it is not at the usual
/// place (`--cgroupfs`); call before the probes are attached. Only the first
/// call counts.
pub fn use_cgroupfs(dir: Option<PathBuf>) {
    if let Some(dir) = dir {
        let _ = CGROUPFS.set(dir);
    }
}

fn hierarchies() -> Hierarchies {
    match CGROUPFS.get() {
        Some(dir) => Hierarchies::under(dir),
        None => Hierarchies::discover().unwrap_or_default(),
    }
}

/// The kernel allow-list for `cgroups`: each one's id (its directory's
/// inode number) in the unified hierarchy and in the v1 memory hierarchy,
/// tagged with the hierarchy; cgroups that do not exist (yet) are left out.
pub fn resolve(cgroups: &BTreeSet<String>, hierarchies: &Hierarchies) -> BTreeMap<u64, u8> {
    let mut ids = BTreeMap::new();
    let roots = [
        (hierarchies.v2.as_deref(), KILLER_CGROUP_V2),
        (hierarchies.memory_v1.as_deref(), KILLER_CGROUP_MEMORY_V1),
    ];
    for (root, bit) in roots {
        let Some(root) = root else { continue };
        for cgroup in cgroups {
            if let Some(id) = cgroup_id(root, cgroup) {
                *ids.entry(id).or_insert(0) |= bit;
            }
        }
    }
    ids
}

fn cgroup_id(root: &Path, cgroup: &str) -> Option<u64> {
    let dir = root.join(cgroup.trim_start_matches('/'));
    let meta = std::fs::symlink_metadata(dir).ok()?;
    meta.is_dir().then(|| meta.ino())
}

/// What to write to make the kernel's allow-list `now` equal `wanted`:
/// (entries to insert or update, ids to remove).
pub fn changes(now: &BTreeMap<u64, u8>, wanted: &BTreeMap<u64, u8>) -> (Vec<(u64, u8)>, Vec<u64>) {
    let upserts = wanted
        .iter()
        .filter(|(id, bits)| now.get(id) != Some(bits))
        .map(|(&id, &bits)| (id, bits))
        .collect();
    let removals = now
        .keys()
        .filter(|id| !wanted.contains_key(id))
        .copied()
        .collect();
    (upserts, removals)
}

/// Decides when to say that impostors were dropped: the first time at
/// once, then at most once per [`IMPOSTOR_LOG_INTERVAL`] with what came
/// since the last warning.
#[derive(Debug, Default)]
pub struct ImpostorLog {
    reported: u64,
    last: Option<Instant>,
}

impl ImpostorLog {
    /// Given the kernel's running total at `now`, the warning to log, if any.
    pub fn observe(&mut self, total: u64, now: Instant) -> Option<String> {
        if total <= self.reported {
            return None;
        }
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < IMPOSTOR_LOG_INTERVAL)
        {
            return None;
        }
        let new = total - self.reported;
        self.reported = total;
        self.last = Some(now);
        Some(format!(
            "{new} SIGKILL(s) from processes named like a userspace OOM killer but not \
             running as one (outside the host pid namespace or the killers' cgroups) were \
             dropped, not reported as kills: userspace kill impostors total {total}"
        ))
    }
}

/// The thread that keeps the kernel's allow-list current and logs
/// impostors; stops when dropped.
pub struct KillerWatch {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl KillerWatch {
    /// Fills `allowed` for `killers` now, then starts the thread. Errors:
    /// the kernel refused an update, or the thread could not start.
    pub fn start(
        killers: &Killers,
        mut allowed: BpfHashMap<MapData, u64, u8>,
        impostors: PerCpuArray<MapData, u64>,
    ) -> Result<Self> {
        let cgroups = killers.cgroups.clone();
        let mut now = BTreeMap::new();
        update(&mut allowed, &mut now, &resolve(&cgroups, &hierarchies()))?;
        tracing::debug!(
            "userspace kills accepted from {} of {} killer cgroup(s)",
            now.len(),
            cgroups.len()
        );
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("oom-probe-killers".into())
            .spawn(move || {
                let mut log = ImpostorLog::default();
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH) {
                    let wanted = resolve(&cgroups, &hierarchies());
                    if let Err(err) = update(&mut allowed, &mut now, &wanted) {
                        tracing::debug!("cannot update the userspace killers' cgroups: {err:#}");
                    }
                    let total = impostors
                        .get(&0, 0)
                        .map(|per_cpu| per_cpu.iter().sum())
                        .unwrap_or(0);
                    if let Some(message) = log.observe(total, Instant::now()) {
                        tracing::warn!("{message}");
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for KillerWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes the [`changes`] from `now` to `wanted` into the kernel map and
/// records them in `now`.
fn update(
    map: &mut BpfHashMap<MapData, u64, u8>,
    now: &mut BTreeMap<u64, u8>,
    wanted: &BTreeMap<u64, u8>,
) -> Result<()> {
    let (upserts, removals) = changes(now, wanted);
    for (id, bits) in upserts {
        map.insert(id, bits, 0)?;
        now.insert(id, bits);
    }
    for id in removals {
        map.remove(&id)?;
        now.remove(&id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(list: &str) -> Vec<String> {
        list.split(',').map(String::from).collect()
    }

    #[test]
    fn a_bare_name_means_its_systemd_unit() {
        let spec = KillerSpec::parse("earlyoom").unwrap();
        assert_eq!(spec.comm, "earlyoom");
        assert_eq!(spec.cgroup, "/system.slice/earlyoom.service");
        let spec = KillerSpec::parse("machined@/init/").unwrap();
        assert_eq!(
            (spec.comm.as_str(), spec.cgroup.as_str()),
            ("machined", "/init")
        );
        assert_eq!(KillerSpec::parse("x@/").unwrap().cgroup, "/");
    }

    #[test]
    fn names_are_cut_as_the_kernel_cuts_comm() {
        let spec = KillerSpec::parse("a-very-long-killer-name@/k").unwrap();
        assert_eq!(spec.comm, "a-very-long-kil");
        let spec = KillerSpec::parse("ééééééééé@/k").unwrap();
        assert_eq!(spec.comm.len(), 14, "cut at a char boundary");
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "@/x",
            "a/b",
            "k@system.slice/k.service",
            "k@/a/../b",
            "k@/./b",
        ] {
            assert!(KillerSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_parses_with_machined_in_init() {
        let killers = Killers::parse(&specs(DEFAULT_KILLERS)).unwrap();
        assert_eq!(killers.comms.len(), 5);
        assert!(killers.cgroups.contains("/init"));
        assert!(killers
            .cgroups
            .contains("/system.slice/nohang-desktop.service"));
        assert!(killers
            .cgroups
            .contains("/system.slice/systemd-oomd.service"));
    }

    #[test]
    fn more_than_the_kernel_maps_hold_is_refused() {
        let fits: Vec<String> = (0..32).map(|i| format!("k{i}")).collect();
        assert_eq!(Killers::parse(&fits).unwrap().comms.len(), 32);
        let names: Vec<String> = (0..33).map(|i| format!("k{i}")).collect();
        let err = Killers::parse(&names).unwrap_err().to_string();
        assert!(
            err.contains("33 processes") && err.contains("at most 32"),
            "{err}"
        );
        let cgroups: Vec<String> = (0..33).map(|i| format!("k@/c{i}")).collect();
        assert!(Killers::parse(&cgroups).is_err());
        assert!(Killers::parse(&specs("")).unwrap().is_empty());
    }

    #[test]
    fn cgroups_resolve_to_their_inode_per_hierarchy() {
        let root = std::env::temp_dir().join(format!("oom-probe-killers-{}", std::process::id()));
        let unit = root.join("v2/system.slice/earlyoom.service");
        std::fs::create_dir_all(&unit).unwrap();
        std::fs::create_dir_all(root.join("memory/system.slice/earlyoom.service")).unwrap();
        let hierarchies = Hierarchies {
            v2: Some(root.join("v2")),
            memory_v1: Some(root.join("memory")),
        };
        let cgroups = Killers::parse(&specs("earlyoom,oomd")).unwrap().cgroups;
        let ids = resolve(&cgroups, &hierarchies);
        let v2 = std::fs::metadata(&unit).unwrap().ino();
        let v1 = std::fs::metadata(root.join("memory/system.slice/earlyoom.service"))
            .unwrap()
            .ino();
        assert_eq!(
            ids,
            BTreeMap::from([(v2, KILLER_CGROUP_V2), (v1, KILLER_CGROUP_MEMORY_V1)]),
            "oomd's unit does not exist: left out"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn changes_insert_new_ids_and_remove_gone_ones() {
        let now = BTreeMap::from([(10, 1), (11, 2), (12, 1)]);
        let wanted = BTreeMap::from([(10, 1), (11, 3), (13, 2)]);
        let (upserts, removals) = changes(&now, &wanted);
        assert_eq!(upserts, vec![(11, 3), (13, 2)]);
        assert_eq!(removals, vec![12]);
        assert_eq!(changes(&wanted, &wanted), (vec![], vec![]));
    }

    #[test]
    fn impostors_are_said_at_once_then_at_most_once_a_minute() {
        let mut log = ImpostorLog::default();
        let t0 = Instant::now();
        assert_eq!(log.observe(0, t0), None);
        let first = log.observe(20, t0).unwrap();
        assert!(
            first.starts_with("20 SIGKILL(s)") && first.ends_with("total 20"),
            "{first}"
        );
        assert_eq!(log.observe(20, t0 + Duration::from_secs(10)), None);
        assert_eq!(log.observe(25, t0 + Duration::from_secs(30)), None);
        let next = log.observe(26, t0 + Duration::from_secs(61)).unwrap();
        assert!(
            next.starts_with("6 SIGKILL(s)") && next.ends_with("total 26"),
            "{next}"
        );
    }
}
