//! The pump of the loop: records from the ring buffer, in bounded turns,
//! through decode, enrichment and naming to the [`Publisher`], and the
//! probes' lost-record counts to the ledger; the sources are traits so that
//! tests feed bytes from memory.

use std::io::Write;

use anyhow::Result;
use aya::maps::{MapData, RingBuf};

use crate::{
    decode,
    enrich::Enricher,
    event::Event,
    kill_trace::{self, Stage},
    kube::naming::Naming,
    pressure::{Change, PressureWatcher},
    probes::LostCounter,
    sink::{
        ledger::{KillLedger, LostByCgroup},
        publish::Publisher,
    },
};

use super::{thread_cpu_time, SETTLE};

/// Records taken from the ring buffer per turn of the loop: a sustained
/// burst then never keeps the loop in one drain (aya's `next()` follows the
/// producer for as long as it writes), each batch committed, stored and
/// printed is at most this many records, and SIGTERM, the ticks and the
/// runtime's other tasks get a turn between batches. What the ring cannot
/// hold meanwhile the kernel counts (`ring_buffer_full`), the designed
/// loss path.
pub(super) const DRAIN_TURN: usize = 256;

/// Turns of [`DRAIN_TURN`] records a flush takes at most (4,096 records):
/// a flush that does not empty the ring by then gives up (the stop exits
/// anyway, a reconciliation waits for the next tick) rather than follow a
/// producer that never stops.
pub(super) const FLUSH_TURNS: usize = 16;

/// Where kernel records come from: the probes' ring buffer, or the bytes a
/// test feeds.
pub(super) trait Records {
    /// Hands at most `max` of the records now available to `each`, oldest
    /// first; returns true when it stopped at `max` (more may be waiting).
    fn drain_into(&mut self, max: usize, each: impl FnMut(&[u8])) -> bool;
}

impl Records for RingBuf<MapData> {
    fn drain_into(&mut self, max: usize, mut each: impl FnMut(&[u8])) -> bool {
        for _ in 0..max {
            match self.next() {
                Some(item) => each(&item),
                None => return false,
            }
        }
        true
    }
}

/// The probes' counts of records the ring buffer had no room for.
pub(super) trait LostRecords: LostByCgroup {
    /// Records lost since start, all kinds. Errors: the map read failed.
    fn total(&self) -> Result<u64>;
    /// Kill records lost without their cgroup (the lost-kill map was full).
    fn without_cgroup(&self) -> Result<u64>;
}

impl LostRecords for LostCounter {
    fn total(&self) -> Result<u64> {
        LostCounter::total(self)
    }
    fn without_cgroup(&self) -> Result<u64> {
        LostCounter::without_cgroup(self)
    }
}

impl LostByCgroup for LostCounter {
    fn by_cgroup(&self) -> Vec<(u64, u64)> {
        LostCounter::by_cgroup(self)
    }
    fn of_cgroup(&self, id: u64) -> u64 {
        LostCounter::of_cgroup(self, id)
    }
    fn forget(&mut self, id: u64) -> Result<()> {
        LostCounter::forget(self, id)
    }
}

/// Moves records from the ring buffer through enrichment and naming to the
/// publisher, counting what it could not handle.
pub(super) struct Pump<W: Write> {
    pub(super) enricher: Enricher,
    pub(super) naming: Naming,
    pub(super) pressure: Option<PressureWatcher>,
    pub(super) publisher: Publisher<W>,
    pub(super) undecodable: u64,
    /// Records lost, as last said.
    pub(super) lost_reported: u64,
    /// Kill records lost without their cgroup (lost-kill map full), said.
    pub(super) lost_without_cgroup: u64,
}

impl<W: Write> Pump<W> {
    pub(super) fn new(
        enricher: Enricher,
        naming: Naming,
        pressure: Option<PressureWatcher>,
        publisher: Publisher<W>,
    ) -> Self {
        Self {
            enricher,
            naming,
            pressure,
            publisher,
            undecodable: 0,
            lost_reported: 0,
            lost_without_cgroup: 0,
        }
    }

    /// At most [`DRAIN_TURN`] records of the ring buffer, decoded and
    /// enriched (no waiting: the records are taken before anything slow
    /// happens), and whether more may be waiting.
    pub(super) fn drain(&mut self, ring: &mut impl Records) -> (Vec<Event>, bool) {
        let mut events = Vec::new();
        let more = ring.drain_into(DRAIN_TURN, |bytes| match decode::decode(bytes) {
            Ok(record) => events.extend(self.enricher.on_record(record)),
            Err(err) => {
                self.undecodable += 1;
                tracing::error!("undecodable record ({err})");
            }
        });
        (events, more)
    }

    /// Drains the ring buffer (at most [`FLUSH_TURNS`] turns, yielding
    /// between them), publishes what it held, then the kills whose records
    /// it had no room for. Returns true when the ring was emptied: then
    /// every kill the kernel had counted before the call is published.
    pub(super) async fn flush(
        &mut self,
        ring: &mut impl Records,
        lost: &mut impl LostRecords,
    ) -> Result<bool> {
        let mut emptied = false;
        for turn in 0..FLUSH_TURNS {
            if turn > 0 {
                tokio::task::yield_now().await;
            }
            let (events, more) = self.drain(ring);
            self.emit_all(events).await?;
            if !more {
                emptied = true;
                break;
            }
        }
        self.drain_lost(lost)?;
        Ok(emptied)
    }

    /// Names pods (bounded waits), then publishes the batch.
    pub(super) async fn emit_all(&mut self, mut events: Vec<Event>) -> Result<()> {
        for event in &mut events {
            if let Some((kind, kill)) = event.as_kill_mut() {
                if let Some(pressure) = &self.pressure {
                    let path = kill
                        .oom_memcg
                        .as_ref()
                        .and_then(|m| m.path.as_deref())
                        .or(kill.victim.cgroup_path.as_deref());
                    let at = std::time::Instant::now()
                        .checked_sub(crate::clock::age(kill.kernel_time_ns))
                        .unwrap_or_else(std::time::Instant::now);
                    kill.pressure_before = path.and_then(|p| pressure.before_kill(p, at));
                }
                let Some(names) = self.naming.ready().await else {
                    continue;
                };
                names.namer.name(kill).await;
                if let Some(poster) = &names.poster {
                    poster.post(kind, kill);
                }
            }
        }
        kill_trace::mark(Stage::Naming);
        self.publisher.publish(&events)
    }

    /// Names, stores and writes `memory_pressure` and `memory_pressure_end`.
    pub(super) async fn emit_pressure(&mut self, changes: Vec<Change>) -> Result<()> {
        let mut events = Vec::with_capacity(changes.len());
        for change in changes {
            events.push(match change {
                Change::Pressure(mut event) => {
                    if let Some(k8s) = event.target.kubernetes.as_mut() {
                        self.name_kubernetes(k8s).await;
                    }
                    for stalling in event.stalling.iter_mut().flatten() {
                        if let Some(k8s) = stalling.target.kubernetes.as_mut() {
                            self.name_kubernetes(k8s).await;
                        }
                    }
                    event.explanation = crate::pressure::explain_pressure(&event);
                    Event::MemoryPressure(event)
                }
                Change::End(mut event) => {
                    if let Some(k8s) = event.target.kubernetes.as_mut() {
                        self.name_kubernetes(k8s).await;
                    }
                    Event::MemoryPressureEnd(event)
                }
            });
        }
        self.publisher.emit(&events)
    }

    /// Names the pod and container of a pressure event, after waiting for
    /// the naming sources if they are still connecting.
    pub(super) async fn name_kubernetes(&mut self, k8s: &mut crate::event::Kubernetes) {
        if let Some(names) = self.naming.ready().await {
            names.namer.name_kubernetes(k8s).await;
        }
    }

    /// One reconciliation with the kernel's per-cgroup kill counters, when
    /// the node's count of OOM kills (`node_kills` reads it: `oom_kill` in
    /// `/proc/vmstat`) says a kill may be unaccounted for: every kill the
    /// kernel counted is published, as a kill or as `oom_kill_unobserved`,
    /// exactly once.
    pub(super) async fn reconcile(
        &mut self,
        ring: &mut impl Records,
        lost: &mut impl LostRecords,
        node_kills: impl Fn() -> Option<u64>,
    ) -> Result<()> {
        let cpu = thread_cpu_time();
        // The node's count first, then drain: a kill it counted is then
        // reported, or drained as lost, before comparing. Every comparison
        // needs the ring emptied first; while a burst keeps it full
        // (`emptied` false), the walk waits for a later tick.
        let node_kills_now = node_kills();
        let mut emptied = self.flush(ring, lost).await?;
        let walk = emptied
            && self.enricher.cgroups().is_some()
            && self.publisher.ledger_mut().walk_needed(node_kills_now);
        if walk {
            // The node's count, then what the kernel had counted by then
            // drained *before* the count of kills seen restarts: a kill
            // counted before the read but reported after it would be seen
            // twice over and hide a missed one from the next ticks (a kill
            // after the read that this drain takes only costs one more walk).
            let node_at_walk = node_kills();
            emptied = self.flush(ring, lost).await?;
            if emptied {
                self.publisher.ledger_mut().walking(node_at_walk);
                // Counters first, then drain: every kill the kernel had
                // counted is then in the buffer, and seen before comparing;
                // then the kills whose records the ring had no room for:
                // the kernel counted them in `counts`, they are not missed.
                let counts = self.enricher.cgroups().map(KillLedger::snapshot);
                emptied = self.flush(ring, lost).await?;
                if let Some(counts) = counts.filter(|_| emptied) {
                    if self.publisher.ledger().has_unaccounted(&counts) {
                        // The kernel bumps the counters a few instructions
                        // before the victim's record (under the victim's
                        // task lock): let a kill counted in the snapshot
                        // but still in flight land first.
                        tokio::time::sleep(SETTLE).await;
                        emptied = self.flush(ring, lost).await?;
                    }
                    if emptied {
                        self.publisher.reconcile(counts)?;
                    }
                }
            }
        }
        if !emptied {
            // A kill counted in a snapshot with its record still in the
            // ring would be reported twice: compare at a later tick.
            tracing::debug!("the ring buffer is still busy; the comparison waits");
            self.publisher.ledger_mut().force_walk();
        }
        let metrics = self.publisher.metrics();
        metrics.add_reconcile_tick(thread_cpu_time().saturating_sub(cpu), walk);
        metrics.expire_idle_series();
        Ok(())
    }

    /// Publishes the kills whose records the ring buffer had no room for.
    pub(super) fn drain_lost(&mut self, lost: &mut impl LostRecords) -> Result<()> {
        self.publisher.drain_lost(lost, self.enricher.cgroups())
    }

    /// Says, and counts, the records lost since the last call; records
    /// lost without their cgroup make the next reconciliation walk.
    pub(super) fn report_lost(&mut self, lost: &impl LostRecords) {
        match lost.without_cgroup() {
            Ok(total) if total > self.lost_without_cgroup => {
                tracing::error!(
                    "{} OOM-kill record(s) lost without their cgroup (the lost-kill map was \
                     full); the kernel's counters report them if their cgroups still exist",
                    total - self.lost_without_cgroup
                );
                self.lost_without_cgroup = total;
                self.publisher.ledger_mut().force_walk();
            }
            _ => {}
        }
        match lost.total() {
            Ok(total) if total > self.lost_reported => {
                tracing::error!(
                    "{} OOM record(s) lost because the ring buffer was full \
                     ({total} in all); raise --ring-buffer-size",
                    total - self.lost_reported
                );
                self.publisher
                    .metrics()
                    .add_lost(total - self.lost_reported);
                self.lost_reported = total;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("cannot read the lost-record counter: {err}"),
        }
    }
}
