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
//!
//! The parts, one file each: [`state`] (the file), [`walk`] (when to read
//! every counter), [`reconcile`] (the comparison), [`lost`] (the records the
//! ring buffer had no room for), [`node`] (kills the node counted while the
//! agent was down in cgroups gone since). This file holds the ledger and
//! its commit protocol.

mod lost;
mod node;
mod reconcile;
mod state;
mod walk;

use std::{collections::HashSet, path::PathBuf, time::Instant};

use anyhow::{Context, Result};

use crate::{boot, event::Event};

pub use lost::{LostByCgroup, LostKill, LostKills};
pub use reconcile::Counts;
use state::{read_state, write_state, State};
use walk::WalkSchedule;

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
    /// The first 8 hex digits of this boot's id, for event ids.
    boot: String,
    /// Cgroups with a kill accounted for since the last reconcile: kept even
    /// when the snapshot does not know them yet (made after it was taken).
    recent: HashSet<u64>,
    /// When the next tick must walk every cgroup's counter.
    walk: WalkSchedule,
    /// While a walk is under way (from [`walking`] to [`reconcile`]): the
    /// cgroup id and kernel stamp (`kernel_time_ns`) of every kill
    /// accounted for, so the comparison can leave out those its snapshot
    /// read the counter before (see [`reconcile`]).
    ///
    /// [`walking`]: KillLedger::walking
    /// [`reconcile`]: KillLedger::reconcile
    during_walk: Option<Vec<(u64, u64)>>,
    /// The node's count of OOM kills of the state file loaded at start,
    /// until the first walk compares it ([`node`]).
    start_node_kills: Option<u64>,
    /// The node's count read for the walk under way, and
    /// `published_since` when it began ([`node`]).
    at_walking: Option<(Option<u64>, u64)>,
}

impl KillLedger {
    /// Loads the state file; a missing, corrupt or other-boot file starts a
    /// fresh ledger (said once on stderr when it was there but unusable).
    pub fn load(state_file: Option<PathBuf>) -> Self {
        let boot_id = boot::boot_id().unwrap_or_default();
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
            ..State::default()
        });
        let mut ledger = Self::new(state_file, state, has_baseline);
        ledger.start_node_kills = ledger.state.node_kills.filter(|_| has_baseline);
        ledger
    }

    /// A ledger of `state`, written to `state_file`.
    fn new(state_file: Option<PathBuf>, state: State, has_baseline: bool) -> Self {
        Self {
            state_file,
            state,
            has_baseline,
            dirty: false,
            boot: boot::short_boot_id(),
            recent: HashSet::new(),
            walk: WalkSchedule::default(),
            during_walk: None,
            start_node_kills: None,
            at_walking: None,
        }
    }

    /// A ledger from a state file's bytes, not tied to a file (the fuzzer
    /// and tests); the boot is not checked.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_state_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self::new(None, state::parse_state(bytes)?, true))
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

    /// One kill of the kernel OOM killer reported with its cgroup (an
    /// `oom_kill`), for [`walk_needed`]. A kill reported without its cgroup
    /// is not counted: the walk it causes reports it in its cgroup.
    ///
    /// [`walk_needed`]: KillLedger::walk_needed
    pub fn kernel_kill_reported(&mut self) {
        self.walk.seen(1);
    }

    /// Whether this tick must read every cgroup's counter ([`snapshot`]),
    /// given `node_kills`, the node's count of OOM kills (`oom_kill` in
    /// `/proc/vmstat`) read before this tick's drain: see
    /// [`WalkSchedule::needed`]. When no kill can be unaccounted for (the
    /// kernel bumps the node count next to the cgroup's, before the
    /// victim's record), the tick costs one read of `/proc/vmstat`,
    /// whatever the number of cgroups.
    ///
    /// [`snapshot`]: KillLedger::snapshot
    pub fn walk_needed(&self, node_kills: Option<u64>) -> bool {
        self.walk
            .needed(self.state.accounted.len(), node_kills, Instant::now())
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
        self.walk.started(node_kills, Instant::now());
        self.at_walking = Some((node_kills, self.state.published_since));
        self.during_walk = Some(Vec::new());
        // A cgroup with a kill before the snapshot is in it unless it was
        // removed: only those after it need keeping at the comparison.
        self.recent.clear();
    }

    /// Makes the next tick walk (records were lost without their cgroup).
    pub fn force_walk(&mut self) {
        self.walk.force();
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
        self.count_published(events);
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::{collections::HashMap, fs, os::unix::fs::MetadataExt};

    use oom_probe_cgroupfs::{clock::monotonic_ns, CgroupResolver};

    use crate::{
        boot::short_boot_id,
        event::{UnobservedKills, UnobservedReason},
    };
    use walk::PRUNE_SLACK;

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

    /// M9: kills the node counted while the agent was down, in cgroups
    /// removed before it started again, are reported once from the node's
    /// count; kills published before the stop or found by the walk are not.
    #[test]
    fn kills_in_cgroups_removed_while_down_are_reported_from_the_node_count() {
        let cgroups = FakeCgroups::new("node-residual");
        let state = cgroups.0.join("state/ledger.json");
        let pod = cgroups.set_kills("pod", 0);
        let mut resolver = CgroupResolver::new(&cgroups.0);
        let mut ledger = KillLedger::load(Some(state.clone()));
        ledger.walking(Some(100));
        assert!(reconcile(&mut ledger, &mut resolver).is_empty(), "baseline");
        // One kill reported (elsewhere) after the walk: node count 101.
        let kill = crate::sink::publish::tests::golden().remove(0);
        ledger.commit(std::slice::from_ref(&kill)).unwrap();
        ledger.printed().unwrap();
        drop(ledger);
        // Down: 2 kills in the pod, 3 in cgroups made and removed: 106.
        cgroups.set_kills("pod", 2);
        let mut ledger = KillLedger::load(Some(state.clone()));
        ledger.walking(Some(106));
        let missed = reconcile(&mut ledger, &mut resolver);
        let seen: Vec<_> = missed
            .iter()
            .map(|u| (u.cgroup_id, u.cgroup_path.is_some(), u.count, u.reason))
            .collect();
        assert_eq!(
            seen,
            [
                (pod, true, 2, UnobservedReason::CounterAhead),
                (0, false, 3, UnobservedReason::NodeCounterAhead),
            ]
        );
        assert_eq!(
            missed[1].event_id,
            format!("{}-unobserved-node-100-106", short_boot_id())
        );
        // Once: a later walk, or a restart, finds nothing more.
        ledger.walking(Some(106));
        assert!(reconcile(&mut ledger, &mut resolver).is_empty());
        drop(ledger);
        let mut ledger = KillLedger::load(Some(state));
        ledger.walking(Some(106));
        assert!(reconcile(&mut ledger, &mut resolver).is_empty());
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
    /// The probes' per-cgroup lost-kill map, in memory (also the
    /// publisher's and the loop's tests').
    #[derive(Default)]
    pub(crate) struct FakeLostMap(pub(crate) HashMap<u64, u64>);

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
