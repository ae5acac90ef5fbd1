//! Where the time of one kill goes, from the kernel's timestamp to the
//! printed line: with `OOM_PROBE_KILL_TRACE` set, every batch of the ring
//! buffer prints one line on stderr,
//!
//! ```text
//! kill trace: 1 event(s), wake 212 us after the kernel's stamp; decode+path 4, memcg_stat 21, tasks 96, explain 3, naming 0, state 0, history 0, print 9, state_printed 0 (us); line out 345 us after the stamp, batch done 346 us after
//! ```
//!
//! `wake` is the ring buffer's readable wake-up minus the first record's
//! `kernel_time_ns` (both CLOCK_MONOTONIC); every stage is wall time in
//! microseconds, summed over the batch; `line out` is the first record's
//! age when the batch's lines were flushed, `batch done` when the state
//! file was written again after them (the history store's commit comes
//! before the lines). The figures README's
//! latency breakdown was read from. Off (one relaxed load per mark) when
//! the variable is unset.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, OnceLock,
    },
    time::Instant,
};

use oom_probe_cgroupfs::clock::monotonic_ns;

/// The stages in the order they run.
const STAGES: [&str; 9] = [
    "decode+path",
    "memcg_stat",
    "tasks",
    "explain",
    "naming",
    "state",
    "history",
    "print",
    "state_printed",
];

/// A stage of the per-kill path, an index into the trace's table.
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    /// Ring buffer read, record decoded, cgroup ids named, event built.
    DecodePath = 0,
    /// The memcg's `memory.stat` read.
    MemcgStat = 1,
    /// The cgroup's processes read from /proc.
    Tasks = 2,
    /// The explanation written.
    Explain = 3,
    /// Pod and container names, pressure history, Kubernetes Event queued.
    Naming = 4,
    /// The state file's write-ahead commit.
    State = 5,
    /// The history store's commit (before the line).
    History = 6,
    /// The lines written and flushed.
    Print = 7,
    /// The state file written again without the printed batch.
    StatePrinted = 8,
}

struct Batch {
    wake_ns: u64,
    first_kernel_ns: Option<u64>,
    events: usize,
    /// CLOCK_MONOTONIC when the batch's lines were flushed.
    printed_ns: Option<u64>,
    last: Instant,
    micros: [u64; STAGES.len()],
}

static ENABLED: OnceLock<bool> = OnceLock::new();
static ACTIVE: AtomicBool = AtomicBool::new(false);
static BATCH: Mutex<Option<Batch>> = Mutex::new(None);

fn enabled() -> bool {
    *ENABLED.get_or_init(|| std::env::var_os("OOM_PROBE_KILL_TRACE").is_some())
}

/// The ring buffer woke the agent: a batch starts.
pub fn wake() {
    if !enabled() {
        return;
    }
    ACTIVE.store(true, Ordering::Relaxed);
    *BATCH.lock().unwrap_or_else(|e| e.into_inner()) = Some(Batch {
        wake_ns: monotonic_ns(),
        first_kernel_ns: None,
        events: 0,
        printed_ns: None,
        last: Instant::now(),
        micros: [0; STAGES.len()],
    });
}

/// A kill record with the kernel's `kernel_time_ns` is in the batch.
pub fn record(kernel_time_ns: u64) {
    with_batch(|batch| {
        batch.first_kernel_ns.get_or_insert(kernel_time_ns);
        batch.events += 1;
    });
}

/// The time since the previous mark goes to `stage`.
pub fn mark(stage: Stage) {
    with_batch(|batch| {
        let now = Instant::now();
        batch.micros[stage as usize] += now.duration_since(batch.last).as_micros() as u64;
        batch.last = now;
        if matches!(stage, Stage::Print) {
            batch.printed_ns = Some(monotonic_ns());
        }
    });
}

/// The batch is printed: its line goes to stderr (nothing for a batch
/// without kill records).
pub fn end() {
    if !ACTIVE.swap(false, Ordering::Relaxed) {
        return;
    }
    let Some(batch) = BATCH.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let Some(kernel) = batch.first_kernel_ns else {
        return;
    };
    let stages: Vec<String> = STAGES
        .iter()
        .zip(batch.micros)
        .map(|(name, us)| format!("{name} {us}"))
        .collect();
    // Not eprintln!: it panics when stderr is a closed pipe.
    let _ = writeln!(
        std::io::stderr(),
        "kill trace: {} event(s), wake {} us after the kernel's stamp; {} (us); line out {} us after the stamp, batch done {} us after",
        batch.events,
        batch.wake_ns.saturating_sub(kernel) / 1000,
        stages.join(", "),
        batch.printed_ns.unwrap_or(0).saturating_sub(kernel) / 1000,
        monotonic_ns().saturating_sub(kernel) / 1000,
    );
}

fn with_batch(f: impl FnOnce(&mut Batch)) {
    if !ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    if let Some(batch) = BATCH.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        f(batch);
    }
}
