//! The idle footprint phase: oom-probe's RSS (and its anonymous and
//! file-backed parts) and CPU time after sitting idle, as `watch` runs it.

use std::{sync::mpsc, thread, time::Duration};

use anyhow::Result;
use serde::Serialize;

use super::{
    measure::{process_stats, stop},
    sightings::{start_oom_probe, DEFAULT_RING},
};

/// The phase's figures (`idle` in the JSON).
#[derive(Debug, Serialize)]
pub(crate) struct Idle {
    /// How long it sat idle.
    pub(crate) seconds: u64,
    /// RSS at the end.
    pub(crate) rss_kib: u64,
    /// Its anonymous part (RssAnon).
    pub(crate) anon_kib: u64,
    /// Its file-backed part (RssFile).
    pub(crate) file_kib: u64,
    /// CPU over the idle window (start-up excluded).
    pub(crate) cpu_ms: u64,
}

/// oom-probe idle for `seconds` after its ready line.
pub(crate) fn idle(seconds: u64) -> Result<Idle> {
    let (tx, _rx) = mpsc::channel();
    let mut tool = start_oom_probe(&tx, "oom-probe", DEFAULT_RING, &[])?;
    let before = process_stats(tool.child.id());
    thread::sleep(Duration::from_secs(seconds));
    let after = process_stats(tool.child.id());
    stop(&mut tool.child);
    Ok(Idle {
        seconds,
        rss_kib: after.rss_kib,
        anon_kib: after.anon_kib,
        file_kib: after.file_kib,
        cpu_ms: after.cpu_ms.saturating_sub(before.cpu_ms),
    })
}
