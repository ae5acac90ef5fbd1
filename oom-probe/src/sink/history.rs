//! The node's memory of kills: every event the agent emits, kept in an
//! embedded [redb](https://www.redb.org) database in its state directory and
//! read back by `oom-probe history`, also while the agent runs.
//!
//! One table maps a sequence number (the order of emission) to the time the
//! event was stored (Unix milliseconds) and its JSON line, byte for byte as
//! the stream printed it. Each batch is one write transaction, committed
//! (fsync'd) before the events are printed, so an event on stdout is in the
//! store; a crash mid-commit leaves the previous commit intact (redb's
//! checksummed two-phase commit). The agent opens the file in redb's
//! `SingleWriter` mode: it alone writes, and any number of other processes
//! open it read-only and see every commit made before their read.
//! The oldest events go first when the store holds more than
//! [`HistoryLimits::max_events`] or they are older than
//! [`HistoryLimits::max_age`].

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redb::{
    Builder, ConcurrencyMode, Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};

use crate::event::Event;

/// Sequence number -> (Unix milliseconds when stored, the event's JSON line
/// without its newline).
const EVENTS: TableDefinition<u64, (u64, &str)> = TableDefinition::new("events");

/// Bytes of database pages the agent's handle keeps in memory (redb's read
/// cache and write buffer together). redb's default is 1 GiB, so its cache
/// grew with the store until the store was full: 10,000 kills added about
/// 23 MiB to the agent's RSS that never went back. An append touches a few
/// B-tree pages (the last leaf, the first one when the oldest event goes,
/// their parents and the allocator's): 256 KiB holds them many times over,
/// and every other page is read through the kernel's page cache.
pub const CACHE_BYTES: usize = 256 * 1024;

/// Errors of the history store.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The database file could not be opened or created (missing, not a
    /// redb file, another writer holds it, no permission).
    #[error("cannot open the history store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    /// A transaction, table or storage operation failed.
    #[error("history store {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    /// redb panicked inside on this file (it does on some corrupted
    /// files: fuzzing found an `unreachable!` in its B-tree code); the
    /// panic is caught and the store treated as unreadable.
    #[error("history store {path} is corrupted (the database failed inside while reading it)")]
    Corrupt { path: PathBuf },
    /// An event could not be turned into JSON (never expected).
    #[error("cannot serialize an event: {0}")]
    Json(#[from] serde_json::Error),
}

/// How much history is kept: whichever bound is reached first removes the
/// oldest events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// At most this many events (the newest).
    pub max_events: u64,
    /// Events stored longer ago than this are removed at the next write.
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    /// 10 000 events and 30 days (`--history-max-events`, `--history-max-age`).
    fn default() -> Self {
        Self {
            max_events: 10_000,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The agent's writable handle on the store.
pub struct History {
    db: Database,
    path: PathBuf,
    limits: HistoryLimits,
    /// Set when redb panicked in a write: the store is not touched again.
    broken: std::sync::atomic::AtomicBool,
}

impl History {
    /// Opens the store at `path`, creating the file and its directory if
    /// they do not exist. Fails when another process has it open for
    /// writing.
    pub fn open(path: &Path, limits: HistoryLimits) -> Result<Self, HistoryError> {
        guarded(path, || Self::open_unguarded(path, limits))
    }

    fn open_unguarded(path: &Path, limits: HistoryLimits) -> Result<Self, HistoryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| HistoryError::Open {
                path: path.into(),
                source: e.into(),
            })?;
        }
        let db = Builder::new()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|source| HistoryError::Open {
                path: path.into(),
                source,
            })?;
        let history = Self {
            db,
            path: path.into(),
            limits,
            broken: false.into(),
        };
        // Create the table now, so that a reader finds it before the first kill.
        history.append_at(&[], SystemTime::now())?;
        Ok(history)
    }

    /// Where the store is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `events` in one durable transaction, in order, then removes
    /// what the limits no longer allow.
    pub fn append(&self, events: &[Event]) -> Result<(), HistoryError> {
        self.append_at(events, SystemTime::now())
    }

    /// [`History::append`] with the clock given (tests).
    pub fn append_at(&self, events: &[Event], now: SystemTime) -> Result<(), HistoryError> {
        use std::sync::atomic::Ordering;
        let corrupt = || HistoryError::Corrupt {
            path: self.path.clone(),
        };
        if self.broken.load(Ordering::Relaxed) {
            return Err(corrupt());
        }
        let result = guarded(&self.path, || self.append_unguarded(events, now));
        if matches!(result, Err(HistoryError::Corrupt { .. })) {
            self.broken.store(true, Ordering::Relaxed);
        }
        result
    }

    fn append_unguarded(&self, events: &[Event], now: SystemTime) -> Result<(), HistoryError> {
        let lines = events
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        let now_ms = unix_ms(now);
        let cutoff = unix_ms(now.checked_sub(self.limits.max_age).unwrap_or(UNIX_EPOCH));
        let storage = |source: redb::Error| HistoryError::Storage {
            path: self.path.clone(),
            source,
        };
        let txn = self.db.begin_write().map_err(|e| storage(e.into()))?;
        {
            let mut table = txn.open_table(EVENTS).map_err(|e| storage(e.into()))?;
            let first = match table.last().map_err(|e| storage(e.into()))? {
                Some((seq, _)) => seq.value() + 1,
                None => 1,
            };
            for (seq, line) in (first..).zip(&lines) {
                table
                    .insert(seq, (now_ms, line.as_str()))
                    .map_err(|e| storage(e.into()))?;
            }
            loop {
                let too_old = match table.first().map_err(|e| storage(e.into()))? {
                    Some((_, value)) => value.value().0 < cutoff,
                    None => false,
                };
                let too_many = table.len().map_err(|e| storage(e.into()))? > self.limits.max_events;
                if !(too_old || too_many) {
                    break;
                }
                table.pop_first().map_err(|e| storage(e.into()))?;
            }
        }
        txn.commit().map_err(|e| storage(e.into()))?;
        Ok(())
    }
}

impl History {
    /// Which of `ids` (stable event ids) the store already holds, looking
    /// from the newest event back until all are found: the agent asks this
    /// at start for the events a crashed run committed, so that printing
    /// them again does not store them twice.
    pub fn stored_ids(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, HistoryError> {
        let storage = |source: redb::Error| HistoryError::Storage {
            path: self.path.clone(),
            source,
        };
        let mut found = std::collections::HashSet::new();
        if ids.is_empty() {
            return Ok(found);
        }
        let txn = self.db.begin_read().map_err(|e| storage(e.into()))?;
        let table = match txn.open_table(EVENTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(found),
            Err(e) => return Err(storage(e.into())),
        };
        for entry in table.iter().map_err(|e| storage(e.into()))?.rev() {
            let (_, value) = entry.map_err(|e| storage(e.into()))?;
            let (_, json) = value.value();
            for id in ids {
                if json.contains(&format!("\"event_id\":\"{id}\"")) {
                    found.insert(id.to_string());
                }
            }
            if found.len() == ids.len() {
                break;
            }
        }
        Ok(found)
    }
}

/// One stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Order of emission, from 1, never reused.
    pub seq: u64,
    /// When the agent stored it, Unix milliseconds (within milliseconds of
    /// its emission).
    pub stored_unix_ms: u64,
    /// The JSON line as the stream printed it, without the newline.
    pub json: String,
}

/// A read-only handle, for `oom-probe history`; the agent may be writing.
pub struct HistoryReader {
    db: ReadOnlyDatabase,
    path: PathBuf,
}

impl HistoryReader {
    /// Opens an existing store read-only; fails when the file is missing
    /// or not a history store.
    ///
    /// A store whose writer died without closing it (the agent SIGKILLed,
    /// OOM-killed, the node reset) needs redb's recovery, which a read-only
    /// open refuses while no writer lives to do it. Then the file is copied
    /// to the temporary directory, the copy recovered (back to its last
    /// commit: every event the agent printed) and read; the store itself is
    /// left for the agent to recover at its next start, so `history` never
    /// writes it and works on a read-only mount too.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        guarded(path, || Self::open_unguarded(path))
    }

    fn open_unguarded(path: &Path) -> Result<Self, HistoryError> {
        let open_error = |source| HistoryError::Open {
            path: path.into(),
            source,
        };
        let builder = || {
            let mut builder = Builder::new();
            builder.set_concurrency_mode(ConcurrencyMode::SingleWriter);
            builder
        };
        let db = match builder().open_read_only(path) {
            Err(redb::DatabaseError::RepairAborted) => {
                Self::open_recovered_copy(path).map_err(open_error)?
            }
            other => other.map_err(open_error)?,
        };
        Ok(Self {
            db,
            path: path.into(),
        })
    }

    /// Copies the store at `path` to the temporary directory, lets redb
    /// recover the copy, opens it read-only and unlinks it (the open file
    /// stays readable until dropped).
    fn open_recovered_copy(path: &Path) -> Result<ReadOnlyDatabase, redb::DatabaseError> {
        tracing::warn!(
            "the history store {} was not closed (its writer stopped without closing it); \
             reading a recovered copy: every committed event is in it",
            path.display()
        );
        let copy = std::env::temp_dir().join(format!(
            "oom-probe-history-recovered-{}.redb",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&copy);
        let opened = (|| {
            std::fs::copy(path, &copy)?;
            let mut builder = Builder::new();
            builder.set_concurrency_mode(ConcurrencyMode::SingleWriter);
            // Opening for writing recovers the copy; closing it marks it clean.
            drop(builder.open(&copy)?);
            builder.open_read_only(&copy)
        })();
        let _ = std::fs::remove_file(&copy);
        opened
    }

    /// Every event stored at or after `since` (all with `None`), oldest
    /// first, as of the last commit.
    pub fn read(&self, since: Option<SystemTime>) -> Result<Vec<StoredEvent>, HistoryError> {
        guarded(&self.path, || self.read_unguarded(since))
    }

    fn read_unguarded(&self, since: Option<SystemTime>) -> Result<Vec<StoredEvent>, HistoryError> {
        let storage = |source: redb::Error| HistoryError::Storage {
            path: self.path.clone(),
            source,
        };
        let since_ms = since.map_or(0, unix_ms);
        let txn = self.db.begin_read().map_err(|e| storage(e.into()))?;
        let table = match txn.open_table(EVENTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(storage(e.into())),
        };
        let mut events = Vec::new();
        for entry in table.iter().map_err(|e| storage(e.into()))? {
            let (seq, value) = entry.map_err(|e| storage(e.into()))?;
            let (stored_unix_ms, json) = value.value();
            if stored_unix_ms >= since_ms {
                events.push(StoredEvent {
                    seq: seq.value(),
                    stored_unix_ms,
                    json: json.to_string(),
                });
            }
        }
        Ok(events)
    }
}

/// Runs `operation` on the store at `path`, turning a panic inside redb
/// into [`HistoryError::Corrupt`]; nothing of the failed operation is used
/// afterwards.
fn guarded<T>(
    path: &Path,
    operation: impl FnOnce() -> Result<T, HistoryError>,
) -> Result<T, HistoryError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(operation)).unwrap_or_else(|_| {
        Err(HistoryError::Corrupt {
            path: path.to_path_buf(),
        })
    })
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::UnobservedKills;

    fn event(count: u64) -> Event {
        Event::OomKillUnobserved(UnobservedKills {
            time: "2026-11-23T12:11:00.000Z".into(),
            node: "n".into(),
            cgroup_id: 7,
            cgroup_path: Some("/x".into()),
            count,
            event_id: format!("e{count}"),
            replayed: false,
            reason: Default::default(),
        })
    }

    fn counts(reader: &HistoryReader, since: Option<SystemTime>) -> Vec<u64> {
        reader
            .read(since)
            .unwrap()
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
                v["count"].as_u64().unwrap()
            })
            .collect()
    }

    struct TempFile(PathBuf);
    impl TempFile {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "oom-probe-history-{name}-{}.redb",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&path);
            Self(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn lines_are_kept_byte_for_byte_in_order_and_readable_while_open() {
        let file = TempFile::new("order");
        let history = History::open(&file.0, HistoryLimits::default()).unwrap();
        let reader = HistoryReader::open(&file.0).unwrap();
        assert!(reader.read(None).unwrap().is_empty());
        history.append(&[event(1), event(2)]).unwrap();
        history.append(&[event(3)]).unwrap();
        let stored = HistoryReader::open(&file.0).unwrap().read(None).unwrap();
        assert_eq!(
            stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(stored[0].json, serde_json::to_string(&event(1)).unwrap());
        // The reader opened before the writes sees them too.
        assert_eq!(counts(&reader, None), vec![1, 2, 3]);
    }

    #[test]
    fn the_oldest_go_beyond_the_count() {
        let file = TempFile::new("count");
        let limits = HistoryLimits {
            max_events: 3,
            ..HistoryLimits::default()
        };
        let history = History::open(&file.0, limits).unwrap();
        for i in 1..=5 {
            history.append(&[event(i)]).unwrap();
        }
        let reader = HistoryReader::open(&file.0).unwrap();
        assert_eq!(counts(&reader, None), vec![3, 4, 5]);
        assert_eq!(
            reader.read(None).unwrap()[0].seq,
            3,
            "numbers are not reused"
        );
    }

    #[test]
    fn events_older_than_the_age_go_and_since_selects_by_time() {
        let file = TempFile::new("age");
        let limits = HistoryLimits {
            max_age: Duration::from_secs(3600),
            ..HistoryLimits::default()
        };
        let history = History::open(&file.0, limits).unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(5000);
        history.append_at(&[event(1)], t0).unwrap();
        history
            .append_at(&[event(2)], t0 + Duration::from_secs(1800))
            .unwrap();
        let reader = HistoryReader::open(&file.0).unwrap();
        assert_eq!(counts(&reader, None), vec![1, 2]);
        assert_eq!(counts(&reader, Some(t0 + Duration::from_secs(60))), vec![2]);
        // Now event 1 is 83 minutes old, event 2 53: 1 goes at the next write.
        history.append(&[event(3)]).unwrap();
        assert_eq!(counts(&reader, None), vec![2, 3]);
    }

    #[test]
    fn a_second_writer_is_refused_and_the_store_survives_reopening() {
        let file = TempFile::new("reopen");
        let history = History::open(&file.0, HistoryLimits::default()).unwrap();
        history.append(&[event(1)]).unwrap();
        let second = History::open(&file.0, HistoryLimits::default());
        assert!(second.is_err(), "two writers on one store");
        drop(history);
        let history = History::open(&file.0, HistoryLimits::default()).unwrap();
        history.append(&[event(2)]).unwrap();
        let stored = HistoryReader::open(&file.0).unwrap().read(None).unwrap();
        assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    }

    /// Not a test on its own: the writer that dies without closing the
    /// store, run in its own process by the test below.
    #[test]
    #[ignore = "run by a_store_left_unclosed_is_read_from_a_recovered_copy"]
    fn writer_that_dies_without_closing() {
        let Some(path) = std::env::var_os("OOM_PROBE_TEST_DYING_WRITER") else {
            return;
        };
        let history = History::open(Path::new(&path), HistoryLimits::default()).unwrap();
        history.append(&[event(1), event(2)]).unwrap();
        history.append(&[event(3)]).unwrap();
        // Like a SIGKILL: no destructor runs, the store is never closed.
        std::process::exit(0);
    }

    #[test]
    fn a_store_left_unclosed_is_read_from_a_recovered_copy() {
        let file = TempFile::new("unclosed");
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "sink::history::tests::writer_that_dies_without_closing",
            ])
            .env("OOM_PROBE_TEST_DYING_WRITER", &file.0)
            .status()
            .unwrap();
        assert!(status.success());
        let before = std::fs::read(&file.0).unwrap();
        // What a plain read-only open says of such a store.
        assert!(matches!(
            Builder::new()
                .set_concurrency_mode(ConcurrencyMode::SingleWriter)
                .open_read_only(&file.0),
            Err(redb::DatabaseError::RepairAborted)
        ));
        let reader = HistoryReader::open(&file.0).unwrap();
        assert_eq!(counts(&reader, None), vec![1, 2, 3], "every commit");
        assert_eq!(
            std::fs::read(&file.0).unwrap(),
            before,
            "the reader never writes the store"
        );
        // The next writer recovers it in place and carries on.
        drop(reader);
        let history = History::open(&file.0, HistoryLimits::default()).unwrap();
        history.append(&[event(4)]).unwrap();
        let reader = HistoryReader::open(&file.0).unwrap();
        assert_eq!(counts(&reader, None), vec![1, 2, 3, 4]);
    }

    /// Found by the history_file fuzz target: redb 4.6 hits an
    /// `unreachable!` in its B-tree code opening the table of this file.
    #[test]
    fn a_corrupted_store_is_an_error_not_a_panic() {
        let file = TempFile::new("corrupt");
        std::fs::write(
            &file.0,
            include_bytes!("../testdata/history-corrupt-fuzz.redb"),
        )
        .unwrap();
        let read = HistoryReader::open(&file.0).and_then(|r| r.read(None));
        assert!(
            matches!(read, Err(HistoryError::Corrupt { .. })),
            "{:?}",
            read.map(|e| e.len())
        );
        // The agent's writer: an error at open or at the first write, and
        // the store is not touched again.
        std::fs::write(
            &file.0,
            include_bytes!("../testdata/history-corrupt-fuzz.redb"),
        )
        .unwrap();
        if let Ok(history) = History::open(&file.0, HistoryLimits::default()) {
            assert!(history.append(&[event(1)]).is_err());
            assert!(matches!(
                history.append(&[event(2)]),
                Err(HistoryError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn stored_ids_finds_what_a_crashed_run_committed() {
        let file = TempFile::new("ids");
        let history = History::open(&file.0, HistoryLimits::default()).unwrap();
        history.append(&[event(1), event(2)]).unwrap();
        let found = history.stored_ids(&["e2", "e9"]).unwrap();
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            vec!["e2".to_string()]
        );
    }

    #[test]
    fn a_missing_store_is_an_error_for_the_reader() {
        let file = TempFile::new("missing");
        assert!(matches!(
            HistoryReader::open(&file.0),
            Err(HistoryError::Open { .. })
        ));
    }

    #[test]
    fn the_page_cache_in_memory_stays_bounded_as_the_store_fills() {
        // 2,000 events of ~1 KiB: a few MiB of pages, far over the bound
        // (redb's default cache would hold them all: this failed with it).
        let file = TempFile::new("cache");
        let limits = HistoryLimits {
            max_events: 1_000,
            ..HistoryLimits::default()
        };
        let history = History::open(&file.0, limits).unwrap();
        let big = |i: u64| match event(i) {
            Event::OomKillUnobserved(mut e) => {
                e.cgroup_path = Some(format!("/kubepods/{}", "p".repeat(1000)));
                Event::OomKillUnobserved(e)
            }
            _ => unreachable!(),
        };
        for batch in 0..100 {
            let events: Vec<Event> = (0..20).map(|i| big(batch * 20 + i)).collect();
            history.append(&events).unwrap();
        }
        let used = history.db.cache_stats().used_bytes();
        assert!(
            used > 0,
            "cache metrics are on in tests (redb cache_metrics)"
        );
        assert!(
            used <= CACHE_BYTES,
            "{used} bytes of pages cached, bound {CACHE_BYTES}"
        );
        let reader = HistoryReader::open(&file.0).unwrap();
        assert_eq!(reader.read(None).unwrap().len(), 1_000);
    }
}
