//! No kill lost, none counted twice: compares the kernel's own per-cgroup
//! OOM-kill counters with the kills oom-probe reported, and reports the
//! difference as `oom_kill_unobserved` (oom-probe was down, or the ring
//! buffer overflowed).
//!
//! The counters are local to each cgroup (`memory.events.local` on v2,
//! `memory.oom_control` on v1). The kernel bumps a counter (and the node's
//! `oom_kill` in `/proc/vmstat`) a few instructions before it marks the
//! victim, which writes the record (`__oom_kill_process`: the counters, the
//! SIGKILL, `mark_oom_victim`, all under the victim's task lock). So the
//! counters are read first ([`KillLedger::snapshot`]), the ring buffer and
//! the lost-record map ([`LostKills`]) drained after, and only then compared
//! ([`KillLedger::reconcile`]); when the comparison would report a kill, the
//! agent drains once more a few milliseconds later, so a record still in
//! flight at the snapshot is seen and not mistaken for a missed kill.
//!
//! A record the ring buffer had no room for is counted by the eBPF side
//! under the victim's memory cgroup id, and reported from there
//! ([`KillLedger::lost`]), even when the cgroup, and its counter, are gone
//! before the next comparison (v1 counters do not propagate to the parent).
//!
//! Reading every cgroup's counter costs one directory and one file read per
//! cgroup; it is done only when the node's count says a kill may be
//! unaccounted for ([`KillLedger::walk_needed`]).
//!
//! The state file is the commit point of the event stream (a write-ahead
//! log): before a batch of events is printed, the counts it accounts for and
//! the batch itself are written together ([`KillLedger::commit`]); once it
//! is printed the batch is dropped ([`KillLedger::printed`]). A crash before
//! the commit loses nothing (the kernel's counters report those kills as
//! unobserved); a crash after it leaves the batch in the file, and the next
//! run prints it again marked `replayed` ([`KillLedger::pending`]), with the
//! same event ids. So every kill is counted once: reported or unobserved.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use oom_probe_cgroupfs::{
    clock::monotonic_ns,
    counters::{self, Scope},
    CgroupResolver,
};

use crate::event::{Event, UnobservedKills, UnobservedReason};

/// Kernel kill counts already accounted for, per cgroup id, and the batch of
/// events committed but maybe not printed.
pub struct KillLedger {
    state_file: Option<PathBuf>,
    state: State,
    /// False until a baseline exists: the first reconcile of a first run
    /// only records the counts, because nothing says when those kills were.
    has_baseline: bool,
    /// Kills accounted for since the state file was last written.
    dirty: bool,
    boot: String,
    /// Cgroups with a kill accounted for since the last reconcile: kept even
    /// when the snapshot does not know them yet (made after it was taken).
    recent: std::collections::HashSet<u64>,
    /// The node's kill count (`/proc/vmstat`) read just before the last
    /// walk of every cgroup's counter; `None`: walk at the next tick.
    node_kills_at_walk: Option<u64>,
    /// Kernel kills reported, or drained as lost records, since then.
    seen_since_walk: u64,
    /// Cgroups accounted for right after the last walk: the ledger only
    /// forgets removed cgroups at a walk, so it walks again when the count
    /// has grown well past this ([`walk_needed`]).
    ///
    /// [`walk_needed`]: KillLedger::walk_needed
    accounted_at_walk: usize,
    /// When the last walk started.
    last_walk: Option<std::time::Instant>,
    /// While a walk is under way (from [`walking`] to [`reconcile`]): the
    /// cgroup id and kernel stamp (`kernel_time_ns`) of every kill
    /// accounted for, so the comparison can leave out those its snapshot
    /// read the counter before (see [`reconcile`]).
    ///
    /// [`walking`]: KillLedger::walking
    /// [`reconcile`]: KillLedger::reconcile
    during_walk: Option<Vec<(u64, u64)>>,
}

/// The longest time between two walks, whatever the node's count says: a
/// net under the node-count shortcut, so a kill missed in a way nobody
/// foresaw is still reported, late. At 5,000 cgroups a walk costs about
/// 250 ms of CPU, 0.4 ms a second spread over this period.
const WALK_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Cgroups the ledger may add past twice the count after the last walk
/// before a walk prunes the removed ones: bounds the ledger and the state
/// file under churn when no kill is ever missed.
const PRUNE_SLACK: usize = 1024;

#[derive(Default, Serialize, Deserialize)]
struct State {
    /// Counters reset at reboot; a state from another boot is discarded.
    boot_id: String,
    accounted: HashMap<u64, u64>,
    /// Events committed and not yet known to be printed, in order.
    #[serde(default)]
    pending: Vec<Event>,
}

/// The kernel's per-cgroup kill counters, one [`CounterRead`] for every
/// memory cgroup whose counter could be read.
pub struct Counts(Vec<CounterRead>);

/// One cgroup's kill counter as [`KillLedger::snapshot`] read it.
struct CounterRead {
    id: u64,
    path: String,
    count: u64,
    /// CLOCK_MONOTONIC in ns (the clock of `kernel_time_ns`) just before and
    /// just after the read: the kernel read the counter in between.
    start: u64,
    end: u64,
}

/// Kills accounted for during a walk in one cgroup, by where their stamps
/// fall against the read of its counter.
#[derive(Default)]
struct SinceRead {
    /// Stamped after the read: not in the count.
    after: u64,
    /// Stamped while the read was under way: maybe in the count.
    unsure: u64,
}

impl KillLedger {
    /// Loads the state file; a missing, corrupt or other-boot file starts a
    /// fresh ledger (said once on stderr when it was there but unusable).
    pub fn load(state_file: Option<PathBuf>) -> Self {
        let boot_id = boot_id();
        let loaded = state_file
            .as_deref()
            .and_then(|path| match read_state(path) {
                Ok(Some(state)) if state.boot_id == boot_id => Some(state),
                Ok(Some(_)) => {
                    tracing::info!(
                        "state file {} is from another boot; starting fresh",
                        path.display()
                    );
                    None
                }
                Ok(None) => None,
                Err(err) => {
                    tracing::error!(
                        "ignoring state file {}: {err:#}; starting fresh (kills made while \
                         oom-probe was down are not reported this time)",
                        path.display()
                    );
                    None
                }
            });
        let has_baseline = loaded.is_some();
        let state = loaded.unwrap_or(State {
            boot_id,
            accounted: HashMap::new(),
            pending: Vec::new(),
        });
        Self {
            state_file,
            state,
            has_baseline,
            dirty: false,
            boot: short_boot_id(),
            recent: Default::default(),
            node_kills_at_walk: None,
            seen_since_walk: 0,
            accounted_at_walk: 0,
            last_walk: None,
            during_walk: None,
        }
    }

    /// A ledger from a state file's bytes, not tied to a file (the fuzzer
    /// and tests); the boot is not checked.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_state_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self {
            state_file: None,
            state: parse_state(bytes)?,
            has_baseline: true,
            dirty: false,
            boot: short_boot_id(),
            recent: Default::default(),
            node_kills_at_walk: None,
            seen_since_walk: 0,
            accounted_at_walk: 0,
            last_walk: None,
            during_walk: None,
        })
    }

    /// The cgroup ids the ledger accounts for (the fuzzer and tests).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn cgroup_ids(&self) -> Vec<u64> {
        self.state.accounted.keys().copied().collect()
    }

    /// The events the previous run committed and may not have printed
    /// (it crashed in between), in order; empty after a clean stop.
    pub fn pending(&self) -> &[Event] {
        &self.state.pending
    }

    /// Accounts for a kill oom-probe is about to report in cgroup `id`;
    /// [`commit`] makes it survive a restart.
    ///
    /// [`commit`]: KillLedger::commit
    pub fn observed(&mut self, cgroup_id: u64) {
        *self.state.accounted.entry(cgroup_id).or_default() += 1;
        self.recent.insert(cgroup_id);
        self.dirty = true;
    }

    /// [`observed`] for a kill the kernel stamped at `kernel_time_ns`
    /// (CLOCK_MONOTONIC): during a walk the stamp tells [`reconcile`]
    /// whether the snapshot's counter can include the kill.
    ///
    /// [`observed`]: KillLedger::observed
    /// [`reconcile`]: KillLedger::reconcile
    pub fn observed_at(&mut self, cgroup_id: u64, kernel_time_ns: u64) {
        self.observed(cgroup_id);
        if let Some(during) = &mut self.during_walk {
            during.push((cgroup_id, kernel_time_ns));
        }
    }

    /// Per cgroup, the kills accounted for during the walk that the kernel
    /// stamped after the snapshot began to read that cgroup's counter. The
    /// kernel bumps the counter before it stamps the victim's record (a
    /// few instructions apart, under the victim's task lock), so a kill
    /// stamped before the read began is in the count, one stamped after it
    /// ended is taken as not, and one stamped while it was under way (an
    /// open and a read, milliseconds on a loaded machine) may be either.
    fn since_read(&self, counts: &Counts) -> HashMap<u64, SinceRead> {
        let Some(during) = self.during_walk.as_ref().filter(|d| !d.is_empty()) else {
            return HashMap::new();
        };
        let reads: HashMap<u64, (u64, u64)> =
            counts.0.iter().map(|c| (c.id, (c.start, c.end))).collect();
        let mut since = HashMap::<u64, SinceRead>::new();
        for (id, stamp) in during {
            match reads.get(id) {
                Some((_, end)) if stamp > end => since.entry(*id).or_default().after += 1,
                Some((start, _)) if stamp >= start => since.entry(*id).or_default().unsure += 1,
                _ => {}
            }
        }
        since
    }

    /// One kill of the kernel OOM killer reported with its cgroup (an
    /// `oom_kill`), for [`walk_needed`]. A kill reported without its cgroup
    /// is not counted: the walk it causes reports it in its cgroup.
    ///
    /// [`walk_needed`]: KillLedger::walk_needed
    pub fn kernel_kill_reported(&mut self) {
        self.seen_since_walk += 1;
    }

    /// Whether this tick must read every cgroup's counter ([`snapshot`]),
    /// given `node_kills`, the node's count of OOM kills (`oom_kill` in
    /// `/proc/vmstat`) read before this tick's drain: yes at the first tick,
    /// when the count is unknown, after [`force_walk`], and when the node
    /// counted more kills since the last walk than were reported or drained
    /// as lost records since; when the ledger has grown past twice its
    /// size after the last walk plus [`PRUNE_SLACK`] cgroups (a walk forgets
    /// the removed ones); and [`WALK_AT_LEAST_EVERY`] after the last walk. Otherwise no kill can be unaccounted for (the
    /// kernel bumps the node count next to the cgroup's, before the
    /// victim's record), and the tick costs one read of `/proc/vmstat`,
    /// whatever the number of cgroups.
    ///
    /// [`snapshot`]: KillLedger::snapshot
    /// [`force_walk`]: KillLedger::force_walk
    pub fn walk_needed(&self, node_kills: Option<u64>) -> bool {
        if self.state.accounted.len() > self.accounted_at_walk * 2 + PRUNE_SLACK
            || self
                .last_walk
                .is_none_or(|at| at.elapsed() >= WALK_AT_LEAST_EVERY)
        {
            return true;
        }
        let needed = match (node_kills, self.node_kills_at_walk) {
            (Some(now), Some(then)) => now.saturating_sub(then) > self.seen_since_walk,
            _ => true,
        };
        tracing::debug!(
            "node count {node_kills:?}, at the last walk {:?}, kills seen since {}: walk {needed}",
            self.node_kills_at_walk,
            self.seen_since_walk
        );
        needed
    }

    /// A walk starts: `node_kills` is the node's count read before its
    /// [`snapshot`], and the ring buffer and lost map must have been drained
    /// between that read and this call, so no kill the count includes is
    /// counted again from here for [`walk_needed`] (which would hide a
    /// missed kill until the next forced walk).
    ///
    /// [`snapshot`]: KillLedger::snapshot
    /// [`walk_needed`]: KillLedger::walk_needed
    pub fn walking(&mut self, node_kills: Option<u64>) {
        self.node_kills_at_walk = node_kills;
        self.seen_since_walk = 0;
        self.last_walk = Some(std::time::Instant::now());
        self.during_walk = Some(Vec::new());
        // A cgroup with a kill before the snapshot is in it unless it was
        // removed: only those after it need keeping at the comparison.
        self.recent.clear();
    }

    /// Makes the next tick walk (records were lost without their cgroup).
    pub fn force_walk(&mut self) {
        self.node_kills_at_walk = None;
    }

    /// Writes the counts accounted for so far together with `events`, the
    /// batch about to be printed: once per batch, not once per kill (a
    /// burst of 500 is a few writes). Nothing is written when nothing
    /// changed. Returns whether the file was written. Errors: the state
    /// file could not be written (the events are still printed; the caller
    /// counts the failure).
    pub fn commit(&mut self, events: &[Event]) -> Result<bool> {
        if !self.dirty && events.is_empty() {
            return Ok(false);
        }
        self.state.pending = events.to_vec();
        self.dirty = false;
        self.write()
    }

    /// The committed batch has been printed: drops it from the state file.
    /// Returns whether the file was written.
    pub fn printed(&mut self) -> Result<bool> {
        if self.state.pending.is_empty() {
            return Ok(false);
        }
        self.state.pending.clear();
        self.write()
    }

    fn write(&mut self) -> Result<bool> {
        let Some(path) = &self.state_file else {
            return Ok(false);
        };
        write_state(path, &self.state).with_context(|| format!("state file {}", path.display()))?;
        Ok(true)
    }

    /// Accounts for `count` kills in cgroup `cgroup_id` whose records the
    /// ring buffer had no room for (from [`LostKills::drain`]) and returns
    /// the `oom_kill_unobserved` event that reports them; a later
    /// [`reconcile`] does not count them again. Cgroup id 0 (the victim's
    /// cgroup could not be read) is not accounted in any cgroup.
    ///
    /// [`reconcile`]: KillLedger::reconcile
    pub fn lost(
        &mut self,
        lost: &LostKill,
        cgroup_path: Option<String>,
        time: &str,
        node: &str,
    ) -> UnobservedKills {
        if lost.cgroup_id != 0 {
            self.seen_since_walk += lost.count;
        }
        let event_id = if lost.cgroup_id == 0 {
            format!(
                "{}-lost-0-{}-{}-{}",
                self.boot,
                lost.run,
                lost.first,
                lost.first + lost.count - 1
            )
        } else {
            let accounted = self
                .state
                .accounted
                .get(&lost.cgroup_id)
                .copied()
                .unwrap_or(0);
            for _ in 0..lost.count {
                self.observed(lost.cgroup_id);
            }
            format!(
                "{}-unobserved-{}-{}-{}",
                self.boot,
                lost.cgroup_id,
                accounted + 1,
                accounted + lost.count
            )
        };
        UnobservedKills {
            time: time.to_string(),
            node: node.to_string(),
            cgroup_id: lost.cgroup_id,
            cgroup_path,
            count: lost.count,
            event_id,
            replayed: false,
            reason: UnobservedReason::RingBufferFull,
        }
    }

    /// Reads every cgroup's kill counter (refreshing the cgroup names first).
    pub fn snapshot(cgroups: &mut CgroupResolver) -> Counts {
        cgroups.refresh();
        let root = cgroups.root().to_path_buf();
        let counts = Counts(
            cgroups
                .known()
                .filter_map(|(id, path)| {
                    let start = monotonic_ns();
                    let count = kernel_oom_kills(&root.join(path.trim_start_matches('/')))?;
                    Some(CounterRead {
                        id,
                        path: path.to_string(),
                        count,
                        start,
                        end: monotonic_ns(),
                    })
                })
                .collect(),
        );
        tracing::debug!(
            "snapshot: {} cgroup(s) known, {} counter(s) read",
            cgroups.known().count(),
            counts.0.len()
        );
        counts
    }

    /// Whether [`reconcile`] would report kills from `counts` now: some
    /// cgroup's counter is above what is accounted for.
    ///
    /// [`reconcile`]: KillLedger::reconcile
    pub fn has_unaccounted(&self, counts: &Counts) -> bool {
        let since = self.since_read(counts);
        self.has_baseline
            && counts.0.iter().any(|read| {
                let since = since.get(&read.id);
                since.is_none_or(|s| s.unsure == 0)
                    && read.count > self.accounted_at_read(read.id, since.map_or(0, |s| s.after))
            })
    }

    /// What was accounted for in cgroup `id` when its counter was read:
    /// now, less the `after` kills stamped after the read.
    fn accounted_at_read(&self, id: u64, after: u64) -> u64 {
        self.state
            .accounted
            .get(&id)
            .copied()
            .unwrap_or(0)
            .saturating_sub(after)
    }

    /// Compares a [`snapshot`] taken before the last drain with the kills
    /// accounted for, and returns the kills nobody accounted for. The new
    /// counts are written at the next [`commit`].
    ///
    /// [`snapshot`]: KillLedger::snapshot
    /// [`commit`]: KillLedger::commit
    pub fn reconcile(&mut self, counts: Counts, time: &str, node: &str) -> Vec<UnobservedKills> {
        let mut unobserved = Vec::new();
        let mut seen = HashMap::new();
        let since_read = self.since_read(&counts);
        self.during_walk = None;
        for CounterRead {
            id, path, count, ..
        } in counts.0
        {
            // Compared with what was accounted for when the counter was
            // read: a kill accounted for since, in the drains that follow
            // the snapshot, is not in `count`, and must not hide one that
            // is (a kill missed while the agent was down, then a kill the
            // restarted agent reported after the read: same totals).
            let since = since_read.get(&id);
            if self.has_baseline && since.is_some_and(|s| s.unsure > 0) {
                // A kill stamped during the read may or may not be in the
                // count: judge this cgroup at the next tick's walk, when
                // that kill is long in the count. Nothing is forgotten.
                tracing::debug!("cgroup {id} ({path}): a kill stamped during the read; walk again");
                let kept = self.state.accounted.get(&id).copied().unwrap_or(0);
                seen.insert(id, kept);
                self.node_kills_at_walk = None;
                continue;
            }
            let after = since.map_or(0, |s| s.after);
            let accounted = self.accounted_at_read(id, after);
            seen.insert(id, count + after);
            if count != accounted {
                tracing::debug!("cgroup {id} ({path}): kernel {count}, accounted {accounted}");
            }
            if self.has_baseline && count > accounted {
                unobserved.push(UnobservedKills {
                    time: time.to_string(),
                    node: node.to_string(),
                    cgroup_id: id,
                    cgroup_path: Some(path),
                    count: count - accounted,
                    event_id: format!("{}-unobserved-{id}-{}-{count}", self.boot, accounted + 1),
                    replayed: false,
                    reason: UnobservedReason::CounterAhead,
                });
            }
        }
        // Keep the larger of the two: a kill reported but not yet counted by
        // the kernel stays accounted for. Removed cgroups are forgotten, but
        // not one with a kill since the last reconcile that the snapshot
        // missed (made between the snapshot and the drain).
        let mut accounted: HashMap<u64, u64> = seen
            .into_iter()
            .map(|(id, count)| {
                (
                    id,
                    count.max(self.state.accounted.get(&id).copied().unwrap_or(0)),
                )
            })
            .collect();
        for id in self.recent.drain() {
            if let Some(&kept) = self.state.accounted.get(&id) {
                accounted.entry(id).or_insert(kept);
            }
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            for (id, kept) in &self.state.accounted {
                if !accounted.contains_key(id) {
                    tracing::debug!(
                        "cgroup {id}: forgotten (accounted {kept}, not in the snapshot)"
                    );
                }
            }
        }
        self.state.accounted = accounted;
        self.accounted_at_walk = self.state.accounted.len();
        self.has_baseline = true;
        self.dirty = true;
        unobserved
    }
}

/// The eBPF side's count of kernel OOM-kill records the ring buffer had no
/// room for, per victim memory cgroup id (the `LOST_BY_CGROUP` map).
pub trait LostByCgroup {
    /// Every `(cgroup id, count)` in the map now.
    fn by_cgroup(&self) -> Vec<(u64, u64)>;
    /// One cgroup's count now (0 when it has no entry).
    fn of_cgroup(&self, id: u64) -> u64;
    /// Removes a cgroup's entry. Errors: the kernel refused.
    fn forget(&mut self, id: u64) -> Result<()>;
}

/// New lost kill records of one cgroup, from [`LostKills::drain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostKill {
    /// The victim's memory cgroup id; 0 when the eBPF side could not read it.
    pub cgroup_id: u64,
    /// Kills lost since the last drain.
    pub count: u64,
    /// Position of the first of them in the map's count for this cgroup
    /// (1-based), for the event id of cgroup 0.
    pub first: u64,
    /// This agent run (its start time, ns since the epoch), for the event
    /// id of cgroup 0, whose map count restarts at every run.
    pub run: u128,
}

/// Drains the lost-kill map: what each entry gained since the last drain.
/// The map is only read, never reset, so a kill counted while userspace
/// reads is never missed; an entry is removed (room made) only after its
/// cgroup is gone, when no kill can be counted in it any more.
pub struct LostKills {
    drained: HashMap<u64, u64>,
    run: u128,
    /// Lost kills drained since start.
    total: u64,
}

impl Default for LostKills {
    fn default() -> Self {
        Self::new()
    }
}

impl LostKills {
    /// Nothing drained yet.
    pub fn new() -> Self {
        Self {
            drained: HashMap::new(),
            run: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            total: 0,
        }
    }

    /// Lost kill records drained since start, every cgroup.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kills `map` counted since the last drain, per cgroup. `exists`
    /// says whether a cgroup exists now; it is asked before the final read
    /// of a cgroup's entry, which is then removed.
    pub fn drain(
        &mut self,
        map: &mut impl LostByCgroup,
        mut exists: impl FnMut(u64) -> bool,
    ) -> Vec<LostKill> {
        let mut new = Vec::new();
        for (id, mut count) in map.by_cgroup() {
            // Gone first, then read: nothing can be counted in it after.
            let gone = id != 0 && !exists(id);
            if gone {
                count = map.of_cgroup(id).max(count);
            }
            let before = self.drained.get(&id).copied().unwrap_or(0);
            if count > before {
                new.push(LostKill {
                    cgroup_id: id,
                    count: count - before,
                    first: before + 1,
                    run: self.run,
                });
                self.total += count - before;
            }
            if gone {
                match map.forget(id) {
                    Ok(()) => {
                        self.drained.remove(&id);
                    }
                    Err(err) => {
                        tracing::warn!("cannot remove cgroup {id} from the lost-kill map: {err:#}");
                        self.drained.insert(id, count);
                    }
                }
            } else {
                self.drained.insert(id, count);
            }
        }
        new
    }
}

fn read_state(path: &Path) -> Result<Option<State>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(parse_state(&bytes)?)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

fn parse_state(bytes: &[u8]) -> Result<State> {
    serde_json::from_slice(bytes).context("not an oom-probe state file")
}

/// Writes atomically (temp file + rename) so a crash never leaves half a
/// file; a temp file that could not be written whole is removed.
fn write_state(path: &Path, state: &State) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).context("cannot create its directory")?;
    }
    let temp = path.with_extension("tmp");
    let written = fs::write(&temp, serde_json::to_vec(state)?)
        .and_then(|()| fs::rename(&temp, path))
        .context("cannot write it");
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The first 8 hex digits of this boot's id (`/proc/sys/kernel/random/boot_id`),
/// the first part of every event id; `00000000` when it cannot be read.
pub fn short_boot_id() -> String {
    let id: String = boot_id()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    if id.len() == 8 {
        id
    } else {
        "00000000".into()
    }
}

/// The kernel's count of OOM kills in this one cgroup (not its children).
fn kernel_oom_kills(dir: &Path) -> Option<u64> {
    counters::oom_kills(dir, Scope::Local).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_state_file_is_read_as_written_and_garbage_is_refused() {
        let ledger = KillLedger::from_state_bytes(
            br#"{"boot_id":"b","accounted":{"7":2,"18446744073709551615":1}}"#,
        )
        .unwrap();
        let mut ids = ledger.cgroup_ids();
        ids.sort();
        assert_eq!(ids, [7, u64::MAX]);
        for garbage in [
            &b""[..],
            b"{",
            b"\xff\xfe",
            br#"{"boot_id":1}"#,
            br#"{"accounted":{"x":1}}"#,
        ] {
            assert!(
                KillLedger::from_state_bytes(garbage).is_err(),
                "{garbage:?}"
            );
        }
    }

    /// A fake cgroupfs: directories with `memory.oom_control` files.
    struct FakeCgroups(PathBuf);

    impl FakeCgroups {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir()
                .join(format!("oom-probe-ledger-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            Self(root)
        }
        fn set_kills(&self, cgroup: &str, kills: u64) -> u64 {
            let dir = self.0.join(cgroup);
            fs::create_dir_all(&dir).unwrap();
            fs::write(
                dir.join("memory.oom_control"),
                format!("oom_kill_disable 0\nunder_oom 0\noom_kill {kills}\n"),
            )
            .unwrap();
            fs::metadata(&dir).unwrap().ino()
        }
    }

    impl Drop for FakeCgroups {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Snapshot, compare and commit, as the agent does after a drain.
    fn reconcile(ledger: &mut KillLedger, resolver: &mut CgroupResolver) -> Vec<UnobservedKills> {
        let counts = KillLedger::snapshot(resolver);
        let missed = ledger.reconcile(counts, "t", "n");
        let events: Vec<Event> = missed
            .iter()
            .cloned()
            .map(Event::OomKillUnobserved)
            .collect();
        ledger.commit(&events).unwrap();
        ledger.printed().unwrap();
        missed
    }

    #[test]
    fn a_batch_committed_but_not_printed_is_pending_after_a_crash() {
        let cgroups = FakeCgroups::new("pending");
        let state = cgroups.0.join("state/ledger.json");
        let pod = cgroups.set_kills("pod", 0);
        let mut resolver = CgroupResolver::new(&cgroups.0);
        let mut ledger = KillLedger::load(Some(state.clone()));
        reconcile(&mut ledger, &mut resolver);
        let batch = vec![Event::OomKillUnobserved(UnobservedKills {
            time: "t".into(),
            node: "n".into(),
            cgroup_id: pod,
            cgroup_path: None,
            count: 1,
            event_id: "x-1".into(),
            replayed: false,
            reason: UnobservedReason::CounterAhead,
        })];
        ledger.observed(pod);
        ledger.commit(&batch).unwrap();
        // A crash here: committed, maybe not printed.
        drop(ledger);
        cgroups.set_kills("pod", 1);
        let mut ledger = KillLedger::load(Some(state.clone()));
        assert_eq!(ledger.pending(), batch.as_slice());
        // Accounted for already: the kernel's count is not a missed kill.
        assert!(reconcile(&mut ledger, &mut resolver).is_empty());
        ledger.printed().unwrap();
        assert!(KillLedger::load(Some(state)).pending().is_empty());
    }

    #[test]
    fn an_unwritable_state_file_is_an_error_and_the_counts_go_on() {
        let cgroups = FakeCgroups::new("unwritable");
        // A directory where the file should be: it cannot be replaced.
        let state = cgroups.0.join("state.json");
        fs::create_dir_all(state.join("x")).unwrap();
        let pod = cgroups.set_kills("pod", 0);
        let mut resolver = CgroupResolver::new(&cgroups.0);
        let mut ledger = KillLedger::load(Some(state));
        let counts = KillLedger::snapshot(&mut resolver);
        assert!(ledger.reconcile(counts, "t", "n").is_empty());
        let err = ledger.commit(&[]).unwrap_err();
        assert!(format!("{err:#}").contains("state.json"), "{err:#}");
        ledger.observed(pod);
        cgroups.set_kills("pod", 1);
        let counts = KillLedger::snapshot(&mut resolver);
        assert!(
            ledger.reconcile(counts, "t", "n").is_empty(),
            "kept in memory"
        );
    }

    #[test]
    fn missed_kills_have_a_stable_id_naming_the_counter_range() {
        let cgroups = FakeCgroups::new("ids");
        let pod = cgroups.set_kills("pod", 2);
        let mut resolver = CgroupResolver::new(&cgroups.0);
        let mut ledger = KillLedger::load(None);
        reconcile(&mut ledger, &mut resolver);
        cgroups.set_kills("pod", 5);
        let missed = reconcile(&mut ledger, &mut resolver);
        assert_eq!(
            missed[0].event_id,
            format!("{}-unobserved-{pod}-3-5", short_boot_id())
        );
    }

    #[test]
    fn a_kill_in_a_cgroup_made_after_the_snapshot_is_not_counted_twice() {
        let cgroups = FakeCgroups::new("late");
        cgroups.set_kills("old", 0);
        let mut resolver = CgroupResolver::new(&cgroups.0);
        let mut ledger = KillLedger::load(None);
        reconcile(&mut ledger, &mut resolver);
        let counts = KillLedger::snapshot(&mut resolver);
        // Made, and its kill drained, after the snapshot.
        let new = cgroups.set_kills("new", 1);
        ledger.observed(new);
        assert!(ledger.reconcile(counts, "t", "n").is_empty());
        assert!(
            reconcile(&mut ledger, &mut resolver).is_empty(),
            "never twice"
        );
    }

    #[test]
    fn reports_each_missed_kill_once_across_restarts() {
        let cgroups = FakeCgroups::new("restarts");
        let state = cgroups.0.join("state/ledger.json");
        let pod = cgroups.set_kills("pod", 2);
        let mut resolver = CgroupResolver::new(&cgroups.0);

        // First run ever: history before it is not reported.
        let mut ledger = KillLedger::load(Some(state.clone()));
        assert!(reconcile(&mut ledger, &mut resolver).is_empty());
        // One kill seen, then one while "down".
        ledger.observed(pod);
        ledger.commit(&[]).unwrap();
        cgroups.set_kills("pod", 3);
        drop(ledger);
        cgroups.set_kills("pod", 4);

        let mut ledger = KillLedger::load(Some(state.clone()));
        let missed = reconcile(&mut ledger, &mut resolver);
        assert_eq!(missed.len(), 1);
        assert_eq!((missed[0].cgroup_id, missed[0].count), (pod, 1));
        assert_eq!(missed[0].cgroup_path.as_deref(), Some("/pod"));
        drop(ledger);

        let mut ledger = KillLedger::load(Some(state));
        assert!(
            reconcile(&mut ledger, &mut resolver).is_empty(),
            "never twice"
        );
    }

    #[test]
    fn a_kill_reported_before_the_kernel_counts_it_is_not_missed() {
        let cgroups = FakeCgroups::new("race");
        let pod = cgroups.set_kills("pod", 0);
        let mut resolver = CgroupResolver::new(&cgroups.0);
        let mut ledger = KillLedger::load(None);
        reconcile(&mut ledger, &mut resolver);
        ledger.observed(pod);
        assert!(reconcile(&mut ledger, &mut resolver).is_empty());
        cgroups.set_kills("pod", 1);
        assert!(reconcile(&mut ledger, &mut resolver).is_empty());
    }

    #[test]
    fn a_kill_reported_after_the_snapshot_hides_no_missed_kill() {
        let cgroups = FakeCgroups::new("masked");
        let pod = cgroups.set_kills("pod", 1);
        let mut resolver = CgroupResolver::new(&cgroups.0);
        let mut ledger = KillLedger::load(None);
        ledger.walking(Some(1));
        assert!(reconcile(&mut ledger, &mut resolver).is_empty(), "baseline");
        // A kill while the agent was down: counted 2, accounted 1.
        cgroups.set_kills("pod", 2);
        ledger.walking(Some(2));
        let counts = KillLedger::snapshot(&mut resolver);
        // A kill after the counter was read, reported by the drains that
        // follow the snapshot: 2 accounted, as many as the snapshot counted.
        cgroups.set_kills("pod", 3);
        ledger.observed_at(pod, monotonic_ns());
        assert!(ledger.has_unaccounted(&counts));
        let missed = ledger.reconcile(counts, "t", "n");
        assert_eq!(missed.len(), 1, "the kill made while down is reported");
        assert_eq!((missed[0].cgroup_id, missed[0].count), (pod, 1));
        assert!(missed[0].event_id.ends_with(&format!("-{pod}-2-2")));
        ledger.walking(Some(3));
        assert!(
            reconcile(&mut ledger, &mut resolver).is_empty(),
            "never twice"
        );
        // A kill stamped before the read but drained after it is in the
        // count: not missed.
        let stamp = monotonic_ns();
        cgroups.set_kills("pod", 4);
        ledger.walking(Some(4));
        let counts = KillLedger::snapshot(&mut resolver);
        ledger.observed_at(pod, stamp);
        assert!(!ledger.has_unaccounted(&counts));
        assert!(ledger.reconcile(counts, "t", "n").is_empty());
        ledger.walking(Some(4));
        assert!(
            reconcile(&mut ledger, &mut resolver).is_empty(),
            "never twice"
        );
        // One kill missed, and one reported that the kernel stamped while
        // the counter was being read: maybe in the count, maybe not. Not
        // judged now; the next tick walks again and reports the missed one.
        cgroups.set_kills("pod", 6);
        ledger.walking(Some(6));
        let counts = KillLedger::snapshot(&mut resolver);
        let read = counts.0.iter().find(|r| r.id == pod).unwrap();
        ledger.observed_at(pod, read.start + (read.end - read.start) / 2);
        assert!(!ledger.has_unaccounted(&counts));
        assert!(ledger.reconcile(counts, "t", "n").is_empty(), "not yet");
        assert!(ledger.walk_needed(Some(6)), "the next tick walks again");
        ledger.walking(Some(6));
        let missed = reconcile(&mut ledger, &mut resolver);
        assert_eq!(missed.len(), 1);
        assert_eq!((missed[0].cgroup_id, missed[0].count), (pod, 1));
        ledger.walking(Some(6));
        assert!(
            reconcile(&mut ledger, &mut resolver).is_empty(),
            "never twice"
        );
    }

    /// The eBPF map, in memory.
    #[derive(Default)]
    struct FakeLostMap(HashMap<u64, u64>);

    impl LostByCgroup for FakeLostMap {
        fn by_cgroup(&self) -> Vec<(u64, u64)> {
            let mut entries: Vec<_> = self.0.iter().map(|(&k, &v)| (k, v)).collect();
            entries.sort();
            entries
        }
        fn of_cgroup(&self, id: u64) -> u64 {
            self.0.get(&id).copied().unwrap_or(0)
        }
        fn forget(&mut self, id: u64) -> Result<()> {
            self.0.remove(&id);
            Ok(())
        }
    }

    #[test]
    fn lost_kills_are_reported_once_and_never_again_by_the_counters() {
        let cgroups = FakeCgroups::new("lost");
        let pod = cgroups.set_kills("pod", 0);
        let gone = cgroups.set_kills("gone", 0);
        let mut resolver = CgroupResolver::new(&cgroups.0);
        let mut ledger = KillLedger::load(None);
        reconcile(&mut ledger, &mut resolver);
        let mut map = FakeLostMap::default();
        let mut lost = LostKills::new();
        // Two kills lost in pod, one in a cgroup removed before the drain.
        map.0.insert(pod, 2);
        map.0.insert(gone, 1);
        cgroups.set_kills("pod", 2);
        let drained = lost.drain(&mut map, |id| id != gone);
        assert_eq!(
            drained
                .iter()
                .map(|l| (l.cgroup_id, l.count))
                .collect::<Vec<_>>(),
            {
                let mut want = vec![(pod, 2), (gone, 1)];
                want.sort();
                want
            }
        );
        assert!(!map.0.contains_key(&gone), "room made once it is gone");
        let events: Vec<_> = drained
            .iter()
            .map(|l| ledger.lost(l, None, "t", "n"))
            .collect();
        let pod_event = events.iter().find(|e| e.cgroup_id == pod).unwrap();
        assert_eq!(pod_event.reason, UnobservedReason::RingBufferFull);
        assert_eq!(
            pod_event.event_id,
            format!("{}-unobserved-{pod}-1-2", short_boot_id())
        );
        // Counted by the kernel too: not missed a second time.
        assert!(reconcile(&mut ledger, &mut resolver).is_empty());
        // Nothing new in the map: nothing drained again; one more is.
        assert!(lost.drain(&mut map, |_| true).is_empty());
        map.0.insert(pod, 3);
        let again = lost.drain(&mut map, |_| true);
        assert_eq!(
            (again[0].cgroup_id, again[0].count, again[0].first),
            (pod, 1, 3)
        );
        assert_eq!(lost.total(), 4);
    }

    /// One tick as the agent runs it: node count, drain, and a walk only
    /// when the node count says a kill may be unaccounted for.
    fn tick(
        ledger: &mut KillLedger,
        resolver: &mut CgroupResolver,
        node_kills: u64,
        reported: &[u64],
    ) -> Option<Vec<UnobservedKills>> {
        for &id in reported {
            ledger.observed(id);
            ledger.kernel_kill_reported();
        }
        if !ledger.walk_needed(Some(node_kills)) {
            return None;
        }
        ledger.walking(Some(node_kills));
        Some(reconcile(ledger, resolver))
    }

    #[test]
    fn the_node_count_spares_the_walk_until_a_kill_is_unaccounted() {
        let cgroups = FakeCgroups::new("node-count");
        let pod = cgroups.set_kills("pod", 0);
        let mut resolver = CgroupResolver::new(&cgroups.0);
        let mut ledger = KillLedger::load(None);
        // Start-up: always a walk (the baseline).
        assert_eq!(tick(&mut ledger, &mut resolver, 100, &[]), Some(vec![]));
        // One kill reported, one counted by the node: no walk, so a
        // counter the walk would have read is not even looked at.
        cgroups.set_kills("pod", 5);
        assert_eq!(tick(&mut ledger, &mut resolver, 101, &[pod]), None);
        assert_eq!(tick(&mut ledger, &mut resolver, 101, &[]), None);
        // The node counted one more than was reported: walk, and the pod's
        // counter tells which (5 counted, 1 reported).
        let missed = tick(&mut ledger, &mut resolver, 102, &[]).unwrap();
        assert_eq!((missed[0].cgroup_id, missed[0].count), (pod, 4));
        // A lost record drained counts as seen: no walk for it.
        let lost = LostKill {
            cgroup_id: pod,
            count: 1,
            first: 1,
            run: 0,
        };
        ledger.lost(&lost, None, "t", "n");
        cgroups.set_kills("pod", 6);
        assert_eq!(tick(&mut ledger, &mut resolver, 103, &[]), None);
        // Forced (records lost without their cgroup): a walk, nothing new.
        ledger.force_walk();
        assert_eq!(tick(&mut ledger, &mut resolver, 103, &[]), Some(vec![]));
        // Churn: kills in many cgroups removed since, none missed. The
        // ledger grows until a walk forgets the removed ones.
        let mut node = 103;
        let mut walked = false;
        for id in 1..=(2 * 2 + PRUNE_SLACK as u64 + 1) {
            node += 1;
            walked |= tick(&mut ledger, &mut resolver, node, &[u64::MAX - id]).is_some();
        }
        assert!(walked, "a walk pruned the ledger");
        assert!(ledger.cgroup_ids().len() <= 2 * 2 + PRUNE_SLACK + 1);
    }

    #[test]
    fn a_corrupt_state_file_starts_fresh() {
        let cgroups = FakeCgroups::new("corrupt");
        let state = cgroups.0.join("state.json");
        fs::write(&state, "{not json").unwrap();
        cgroups.set_kills("pod", 5);
        let mut resolver = CgroupResolver::new(&cgroups.0);
        let mut ledger = KillLedger::load(Some(state.clone()));
        assert!(reconcile(&mut ledger, &mut resolver).is_empty());
        assert!(read_state(&state).unwrap().is_some(), "rewritten");
    }
}
