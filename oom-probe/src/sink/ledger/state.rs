//! The state file, the ledger's write-ahead log on disk: its format (the
//! boot it belongs to, the kill counts accounted for per cgroup, the batch
//! committed and maybe not printed) and its atomic rewrite.

use std::{collections::HashMap, fs, path::Path};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::event::Event;

/// The state file's content (JSON).
#[derive(Default, Serialize, Deserialize)]
pub(super) struct State {
    /// Counters reset at reboot; a state from another boot is discarded.
    pub(super) boot_id: String,
    /// Kernel kills accounted for, per memory cgroup id.
    pub(super) accounted: HashMap<u64, u64>,
    /// Events committed and not yet known to be printed, in order.
    #[serde(default)]
    pub(super) pending: Vec<Event>,
    /// The node's count of OOM kills (`oom_kill` in `/proc/vmstat`) read
    /// before the last completed walk: every kill it counts was published
    /// (see [`super::node`]). `None`: no walk completed yet.
    #[serde(default)]
    pub(super) node_kills: Option<u64>,
    /// Kernel kills published since that walk began (`oom_kill` lines and
    /// `ring_buffer_full` counts).
    #[serde(default)]
    pub(super) published_since: u64,
}

/// Reads the state file; `None` when there is none. Errors: unreadable, or
/// not a state file.
pub(super) fn read_state(path: &Path) -> Result<Option<State>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(parse_state(&bytes)?)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

pub(super) fn parse_state(bytes: &[u8]) -> Result<State> {
    serde_json::from_slice(bytes).context("not an oom-probe state file")
}

/// Writes atomically (temp file + rename) so a crash never leaves half a
/// file; a temp file that could not be written whole is removed.
pub(super) fn write_state(path: &Path, state: &State) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("oom-probe-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_state_is_read_back_as_written() {
        let dir = dir("round-trip");
        let path = dir.join("sub/state.json");
        assert!(read_state(&path).unwrap().is_none(), "no file yet");
        let state = State {
            boot_id: "b".into(),
            accounted: HashMap::from([(7, 2), (u64::MAX, 1)]),
            pending: Vec::new(),
            node_kills: Some(106),
            published_since: 3,
        };
        write_state(&path, &state).unwrap();
        let read = read_state(&path).unwrap().unwrap();
        assert_eq!(read.boot_id, "b");
        assert_eq!(read.accounted, state.accounted);
        assert_eq!((read.node_kills, read.published_since), (Some(106), 3));
        // A file of an older oom-probe, without them, reads as unknown.
        let old = parse_state(br#"{"boot_id":"b","accounted":{}}"#).unwrap();
        assert_eq!((old.node_kills, old.published_since), (None, 0));
        assert!(!path.with_extension("tmp").exists(), "renamed into place");
        fs::write(&path, "{").unwrap();
        assert!(read_state(&path).is_err(), "garbage is an error");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp_file() {
        let dir = dir("failed");
        let path = dir.join("state.json");
        let old = State {
            boot_id: "old".into(),
            ..Default::default()
        };
        write_state(&path, &old).unwrap();
        // A directory where the temp file goes: it cannot be written.
        fs::create_dir_all(path.with_extension("tmp").join("x")).unwrap();
        let err = write_state(&path, &State::default()).unwrap_err();
        assert!(format!("{err:#}").contains("cannot write it"), "{err:#}");
        assert_eq!(read_state(&path).unwrap().unwrap().boot_id, "old");
        let _ = fs::remove_dir_all(&dir);
    }
}
