//! No kill lost, none counted twice: compares the kernel's own per-cgroup
//! OOM-kill counters with the kills oom-probe reported, and reports the
//! difference as `oom_kill_unobserved` (oom-probe was down, or the ring
//! buffer overflowed).
//!
//! The counters are local to each cgroup (`memory.events.local` on v2,
//! `memory.oom_control` on v1). The kernel bumps a counter only after the
//! victim's record is in the ring buffer, so reconciling right after a drain
//! never mistakes an in-flight kill for a missed one. What has been accounted
//! for is kept in a state file, so a restart never replays or doubles a kill.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use oom_probe_cgroupfs::{
    counters::{self, Scope},
    CgroupResolver,
};

use crate::event::UnobservedKills;

/// Kernel kill counts already accounted for, per cgroup id.
pub struct KillLedger {
    state_file: Option<PathBuf>,
    state: State,
    /// False until a baseline exists: the first reconcile of a first run
    /// only records the counts, because nothing says when those kills were.
    has_baseline: bool,
    /// Kills accounted for since the state file was last written.
    dirty: bool,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    /// Counters reset at reboot; a state from another boot is discarded.
    boot_id: String,
    accounted: HashMap<u64, u64>,
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
                    tracing::warn!("ignoring state file {}: {err:#}", path.display());
                    None
                }
            });
        let has_baseline = loaded.is_some();
        let state = loaded.unwrap_or(State {
            boot_id,
            accounted: HashMap::new(),
        });
        Self {
            state_file,
            state,
            has_baseline,
            dirty: false,
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
        })
    }

    /// The cgroup ids the ledger accounts for (the fuzzer and tests).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn cgroup_ids(&self) -> Vec<u64> {
        self.state.accounted.keys().copied().collect()
    }

    /// Accounts for a kill oom-probe reported in cgroup `id`; [`save`]
    /// after each batch makes it survive a restart.
    ///
    /// [`save`]: KillLedger::save
    pub fn observed(&mut self, cgroup_id: u64) {
        *self.state.accounted.entry(cgroup_id).or_default() += 1;
        self.dirty = true;
    }

    /// Reads every cgroup's counter and reports kills nobody accounted for.
    pub fn reconcile(
        &mut self,
        cgroups: &mut CgroupResolver,
        time: &str,
        node: &str,
    ) -> Vec<UnobservedKills> {
        cgroups.refresh();
        let root = cgroups.root().to_path_buf();
        let mut unobserved = Vec::new();
        let mut seen = HashMap::new();
        for (id, path) in cgroups.known() {
            let Some(count) = kernel_oom_kills(&root.join(path.trim_start_matches('/'))) else {
                continue;
            };
            seen.insert(id, count);
            let accounted = self.state.accounted.get(&id).copied().unwrap_or(0);
            if self.has_baseline && count > accounted {
                unobserved.push(UnobservedKills {
                    time: time.to_string(),
                    node: node.to_string(),
                    cgroup_id: id,
                    cgroup_path: Some(path.to_string()),
                    count: count - accounted,
                });
            }
        }
        // Keep the larger of the two: a kill reported but not yet counted by
        // the kernel stays accounted for. Removed cgroups are forgotten.
        self.state.accounted = seen
            .into_iter()
            .map(|(id, count)| {
                (
                    id,
                    count.max(self.state.accounted.get(&id).copied().unwrap_or(0)),
                )
            })
            .collect();
        self.has_baseline = true;
        self.dirty = true;
        self.save();
        unobserved
    }

    /// Writes the state file if anything changed since the last write: once
    /// per drained batch, not once per kill (a burst of 500 is one write).
    pub fn save(&mut self) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let Some(path) = &self.state_file else { return };
        if let Err(err) = write_state(path, &self.state) {
            tracing::warn!("cannot write state file {}: {err:#}", path.display());
        }
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

/// Writes atomically (temp file + rename) so a crash never leaves half a file.
fn write_state(path: &Path, state: &State) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let temp = path.with_extension("tmp");
    fs::write(&temp, serde_json::to_vec(state)?)?;
    fs::rename(&temp, path)?;
    Ok(())
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
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

    #[test]
    fn reports_each_missed_kill_once_across_restarts() {
        let cgroups = FakeCgroups::new("restarts");
        let state = cgroups.0.join("state/ledger.json");
        let pod = cgroups.set_kills("pod", 2);
        let mut resolver = CgroupResolver::new(&cgroups.0);

        // First run ever: history before it is not reported.
        let mut ledger = KillLedger::load(Some(state.clone()));
        assert!(ledger.reconcile(&mut resolver, "t", "n").is_empty());
        // One kill seen, then one while "down".
        ledger.observed(pod);
        ledger.save();
        cgroups.set_kills("pod", 3);
        drop(ledger);
        cgroups.set_kills("pod", 4);

        let mut ledger = KillLedger::load(Some(state.clone()));
        let missed = ledger.reconcile(&mut resolver, "t", "n");
        assert_eq!(missed.len(), 1);
        assert_eq!((missed[0].cgroup_id, missed[0].count), (pod, 1));
        assert_eq!(missed[0].cgroup_path.as_deref(), Some("/pod"));
        drop(ledger);

        let mut ledger = KillLedger::load(Some(state));
        assert!(
            ledger.reconcile(&mut resolver, "t", "n").is_empty(),
            "never twice"
        );
    }

    #[test]
    fn a_kill_reported_before_the_kernel_counts_it_is_not_missed() {
        let cgroups = FakeCgroups::new("race");
        let pod = cgroups.set_kills("pod", 0);
        let mut resolver = CgroupResolver::new(&cgroups.0);
        let mut ledger = KillLedger::load(None);
        ledger.reconcile(&mut resolver, "t", "n");
        ledger.observed(pod);
        assert!(ledger.reconcile(&mut resolver, "t", "n").is_empty());
        cgroups.set_kills("pod", 1);
        assert!(ledger.reconcile(&mut resolver, "t", "n").is_empty());
    }

    #[test]
    fn a_corrupt_state_file_starts_fresh() {
        let cgroups = FakeCgroups::new("corrupt");
        let state = cgroups.0.join("state.json");
        fs::write(&state, "{not json").unwrap();
        cgroups.set_kills("pod", 5);
        let mut resolver = CgroupResolver::new(&cgroups.0);
        let mut ledger = KillLedger::load(Some(state.clone()));
        assert!(ledger.reconcile(&mut resolver, "t", "n").is_empty());
        assert!(read_state(&state).unwrap().is_some(), "rewritten");
    }
}
