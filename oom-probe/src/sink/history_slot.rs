//! The history store as the agent holds it: open, or why not now. A store
//! that cannot be opened or whose commit failed must not stop the
//! reporting; it is said once, and opened again a while later.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    event::Event,
    sink::history::{History, HistoryLimits},
};

/// The history store, or why it is not there now. A store that failed (it
/// could not be opened, or a commit failed: redb then refuses every
/// transaction until reopened) is reopened at the next batch, at most every
/// [`HistorySlot::RETRY`]; the first failure of a streak is logged, and its
/// end.
pub struct HistorySlot {
    path: PathBuf,
    limits: HistoryLimits,
    store: Option<History>,
    failing: bool,
    last_try: Instant,
    /// How long after a failure the store is opened again ([`HistorySlot::RETRY`]).
    retry: Duration,
}

impl HistorySlot {
    /// How long after a failure the store is opened again.
    pub const RETRY: Duration = Duration::from_secs(5);

    /// Opens the store at `path`; a failure is said and the store is
    /// tried again at a later [`append`](Self::append).
    pub fn open(path: PathBuf, limits: HistoryLimits) -> Self {
        Self::with_retry(path, limits, Self::RETRY)
    }

    /// [`open`](Self::open), trying again `retry` after a failure.
    pub fn with_retry(path: PathBuf, limits: HistoryLimits, retry: Duration) -> Self {
        let mut slot = Self {
            path,
            limits,
            store: None,
            failing: false,
            last_try: Instant::now(),
            retry,
        };
        slot.try_open();
        if slot.store.is_some() {
            tracing::info!("keeping every event in {}", slot.path.display());
        }
        slot
    }

    /// The store, when it is open.
    pub fn store(&self) -> Option<&History> {
        self.store.as_ref()
    }

    fn try_open(&mut self) {
        self.last_try = Instant::now();
        match History::open(&self.path, self.limits) {
            Ok(store) => self.store = Some(store),
            Err(err) => self.failed(&err),
        }
    }

    fn failed(&mut self, err: &dyn std::fmt::Display) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::error!(
                "{err:#}; events are still reported, and counted in \
                 oom_probe_history_write_failures_total until the store works again"
            );
        }
    }

    /// Stores `events`; false when they could not be kept.
    pub fn append(&mut self, events: &[Event]) -> bool {
        if self.store.is_none() && self.last_try.elapsed() >= self.retry {
            self.try_open();
        }
        let Some(store) = &self.store else {
            return false;
        };
        match store.append(events) {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("the history store {} works again", self.path.display());
                }
                true
            }
            Err(err) => {
                // Closed now, reopened at a later batch.
                self.store = None;
                self.last_try = Instant::now();
                self.failed(&err);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{UnobservedKills, UnobservedReason};

    fn event(id: &str) -> Event {
        Event::OomKillUnobserved(UnobservedKills {
            time: "t".into(),
            node: "n".into(),
            cgroup_id: 1,
            cgroup_path: None,
            count: 1,
            event_id: id.into(),
            replayed: false,
            reason: UnobservedReason::CounterAhead,
        })
    }

    #[test]
    fn a_store_that_cannot_be_opened_is_opened_again_later() {
        let dir = std::env::temp_dir().join(format!("oom-probe-slot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A file where the store's directory should be: it cannot be made.
        let blocker = dir.join("blocker");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("history.redb");
        let mut slot =
            HistorySlot::with_retry(path.clone(), HistoryLimits::default(), Duration::ZERO);
        assert!(slot.store().is_none());
        assert!(!slot.append(&[event("a")]), "not kept");
        // The obstacle goes: the next batch opens the store and is kept.
        std::fs::remove_file(&blocker).unwrap();
        std::fs::create_dir_all(&blocker).unwrap();
        assert!(slot.append(&[event("b")]), "kept once it opens");
        let stored = slot.store().unwrap().stored_ids(&["a", "b"]).unwrap();
        assert!(stored.contains("b") && !stored.contains("a"), "{stored:?}");
        drop(slot);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_that_failed_waits_for_the_retry_period() {
        let dir = std::env::temp_dir().join(format!("oom-probe-slot-wait-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let blocker = dir.join("blocker");
        std::fs::write(&blocker, "").unwrap();
        let mut slot = HistorySlot::with_retry(
            blocker.join("history.redb"),
            HistoryLimits::default(),
            Duration::from_secs(3600),
        );
        std::fs::remove_file(&blocker).unwrap();
        std::fs::create_dir_all(&blocker).unwrap();
        assert!(!slot.append(&[event("a")]), "not tried again yet");
        assert!(slot.store().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
