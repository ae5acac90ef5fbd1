//! The event loop behind `oom-probe watch`: ring buffer -> decode -> enrich
//! -> output, a once-a-second check of the kernel's lost-record count, and a
//! slower reconciliation with the kernel's own per-cgroup kill counters.

use std::{
    io::{self, Write},
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, SystemTime},
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use oom_probe_cgroupfs::{CgroupResolver, Hierarchies};

use crate::{
    decode,
    enrich::{unobserved::KillLedger, Enricher},
    event::{Event, KillKind},
    kube::{
        events::EventPoster,
        names::{self as kubernetes, Namer, SourceOptions},
    },
    probes::{DecisionHook, LostCounter, Probes, VictimHook},
    sink::{
        history::{History, HistoryLimits},
        http,
        metrics::Metrics,
        output::{Output, OutputFormat},
    },
};

/// What `watch` was asked to do.
#[derive(Debug)]
pub struct WatchOptions {
    pub output: OutputFormat,
    pub ring_buffer_bytes: u32,
    /// Victim hooks to try, in order.
    pub hooks: Vec<VictimHook>,
    /// OOM-decision hooks to try, in order.
    pub decision_hooks: Vec<DecisionHook>,
    pub node: String,
    /// Stop after this many kills (scripts, tests); run forever if `None`.
    pub max_events: Option<u64>,
    /// Process names whose SIGKILLs are userspace OOM kills.
    pub userspace_killers: Vec<String>,
    /// Where accounted kill counts survive restarts.
    pub state_file: Option<PathBuf>,
    /// How often to compare with the kernel's per-cgroup kill counters.
    pub reconcile_interval: Duration,
    /// Where to serve /metrics, /healthz and /readyz (the agent); none for
    /// a person's `watch`.
    pub listen: Option<SocketAddr>,
    /// Kill series idle this long leave /metrics.
    pub metrics_series_ttl: Duration,
    /// A cgroupfs tree to use instead of this mount namespace's own.
    pub cgroupfs: Option<PathBuf>,
    /// The host's `/proc` when it is mounted elsewhere (the tasks of a kill).
    pub procfs: Option<PathBuf>,
    /// Where pod and container names come from.
    pub sources: SourceOptions,
    /// Post Kubernetes Events when an API server is configured.
    pub events: bool,
    /// Print only the kills of these pods.
    pub filter: Filter,
    /// Where every emitted event is kept (the agent's history store); none
    /// for a person's `watch` unless asked.
    pub history: Option<PathBuf>,
    /// How much the history store keeps.
    pub history_limits: HistoryLimits,
}

/// `--namespace`, `--pod`, `--container`: which kills a person wants to see,
/// decided after enrichment. Metrics, Events and the ledger still see all.
#[derive(Debug, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
}

impl Filter {
    /// True when the event should be printed.
    pub fn matches(&self, event: &Event) -> bool {
        if self.namespace.is_none() && self.pod.is_none() && self.container.is_none() {
            return true;
        }
        let k8s = match event {
            Event::OomKill(kill) | Event::UserspaceKill(kill) => kill.kubernetes.as_ref(),
            Event::Eviction(eviction) => Some(&eviction.kubernetes),
            Event::OomKillUnobserved(_) => None,
        };
        let Some(k8s) = k8s else { return false };
        let wanted = |filter: &Option<String>, value: &Option<String>| {
            filter.as_ref().is_none_or(|f| value.as_ref() == Some(f))
        };
        wanted(&self.namespace, &k8s.namespace)
            && wanted(&self.pod, &k8s.pod)
            && wanted(&self.container, &k8s.container)
    }
}

/// Runs until SIGINT/SIGTERM (or `max_events`), then drains what is left.
pub async fn watch(mut options: WatchOptions) -> Result<()> {
    let metrics = Arc::new(Metrics::new(options.metrics_series_ttl));
    // A history store that cannot be opened (a missing or read-only state
    // directory, a full disk, a corrupt file) must not stop the reporting:
    // say so, go on, and count every event it could not keep.
    let history = match &options.history {
        Some(path) => match History::open(path, options.history_limits) {
            Ok(history) => {
                tracing::info!("keeping every event in {}", path.display());
                Some(Ok(history))
            }
            Err(err) => {
                tracing::error!(
                    "cannot open the history store {}: {err:#}; events are still reported, \
                     and counted in oom_probe_history_write_failures_total",
                    path.display()
                );
                Some(Err(()))
            }
        },
        None => None,
    };
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = options.listen {
        let listener = http::bind(addr).await?;
        let shared = http::Shared {
            metrics: metrics.clone(),
            ready: ready.clone(),
        };
        tokio::spawn(http::serve(listener, shared));
        tracing::info!("serving /metrics, /healthz and /readyz on {addr}");
    }
    let mut probes = Probes::attach(
        options.ring_buffer_bytes,
        &options.hooks,
        &options.decision_hooks,
        &options.userspace_killers,
    )?;
    let hierarchies = match &options.cgroupfs {
        Some(dir) => Hierarchies::under(dir),
        None => Hierarchies::discover()?,
    };
    let memcg_paths = hierarchies.memory_root().map(CgroupResolver::new);
    // The naming sources (API server, container runtime) connect off the
    // critical path: the ready line follows the probes, and the first kill
    // that needs names waits for them (their calls are bounded).
    let naming = tokio::spawn(connect_naming(
        std::mem::take(&mut options.sources),
        options.events,
        options.node.clone(),
        metrics.clone(),
    ));
    let mut evictions = None;
    announce(&probes, memcg_paths.as_ref(), &options.node);
    let mut enricher = Enricher::new(
        options.node.clone(),
        memcg_paths,
        probes.layout.constraint_names.clone(),
    );
    if let Some(procfs) = &options.procfs {
        enricher.set_procfs(procfs.clone());
    }
    // SAFETY: the ring buffer owns its map fd and keeps it open and
    // unchanged for as long as it lives, which is as long as the AsyncFd.
    let mut ring = unsafe { AsyncFd::register(probes.take_ring_buffer()?) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?;
    let lost = probes.take_lost_counter()?;
    release_start_up_heap();
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut pump = Pump {
        output: Output::new(options.output, io::stdout().lock()),
        metrics,
        filter: options.filter,
        naming: Naming::Connecting(naming),
        late_evictions: None,
        enricher,
        ledger: KillLedger::load(options.state_file.clone()),
        history,
        kills: 0,
        undecodable: 0,
        lost_reported: 0,
        lost_at_reconcile: 0,
    };
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut lost_tick = tokio::time::interval(Duration::from_secs(1));
    let mut reconcile_tick = tokio::time::interval(options.reconcile_interval);
    let done = |pump: &Pump<_>| options.max_events.is_some_and(|max| pump.kills >= max);
    while !done(&pump) {
        if let Some(late) = pump.late_evictions.take() {
            evictions = Some(late);
        }
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let events = pump.drain(guard.get_inner_mut());
                guard.clear_ready();
                pump.emit_all(events).await?;
            }
            connected = pump.naming.connected(), if pump.naming.is_connecting() => {
                evictions = pump.naming.finish(connected)?;
            }
            Some(eviction) = next_eviction(&mut evictions) => {
                let event = Event::Eviction(Box::new(kubernetes::eviction_event(eviction, &options.node)));
                pump.emit(&event)?;
            }
            _ = lost_tick.tick() => pump.report_lost(&lost),
            _ = reconcile_tick.tick() => {
                // The node's count first, then the drain: a kill the kernel
                // has counted is already in the buffer.
                let node_kills = pump.node_kills();
                let events = pump.drain(ring.get_mut());
                pump.emit_all(events).await?;
                pump.reconcile(node_kills)?;
                pump.metrics.expire_idle_series();
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    let events = pump.drain(ring.get_mut());
    pump.emit_all(events).await?;
    pump.report_lost(&lost);
    tracing::info!(
        "stopped after {} kill(s); {} record(s) lost, {} undecodable",
        pump.kills,
        pump.lost_reported,
        pump.undecodable
    );
    Ok(())
}

/// Hands the heap freed after start-up (the parsed kernel BTF, tens of MiB)
/// back to the kernel: glibc keeps freed memory for reuse, so without this
/// the idle RSS would stay at the start-up's peak. musl returns it by itself.
fn release_start_up_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The next eviction, or never when no API server is in use.
async fn next_eviction(
    evictions: &mut Option<tokio::sync::mpsc::Receiver<crate::kube::pod::Eviction>>,
) -> Option<crate::kube::pod::Eviction> {
    match evictions {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// The naming sources and the Event poster, connected.
type Connected = Result<(Namer, Option<EventPoster>)>;

async fn connect_naming(
    sources: SourceOptions,
    events: bool,
    node: String,
    metrics: Arc<Metrics>,
) -> Connected {
    let api = kubernetes::api_client(&sources).await;
    let poster = api
        .clone()
        .filter(|_| events)
        .map(|client| EventPoster::start(client, &node, metrics.clone()));
    let namer = Namer::connect(&sources, api, &node, metrics).await?;
    Ok((namer, poster))
}

/// Pod and container naming: connecting at first, then ready.
enum Naming {
    Connecting(tokio::task::JoinHandle<Connected>),
    Ready {
        namer: Box<Namer>,
        poster: Option<EventPoster>,
    },
}

impl Naming {
    fn is_connecting(&self) -> bool {
        matches!(self, Self::Connecting(_))
    }

    /// Waits for the connection (immediately ready once connected).
    async fn connected(&mut self) -> Connected {
        match self {
            Self::Connecting(task) => task
                .await
                .map_err(|e| anyhow::anyhow!("naming sources failed: {e}"))?,
            Self::Ready { .. } => Err(anyhow::anyhow!("already connected")),
        }
    }

    /// Keeps what connected and says which sources name pods; an error
    /// (an explicit `--cri-socket` that does not work) stops oom-probe.
    /// Returns the evictions, when an API server is in use.
    fn finish(
        &mut self,
        connected: Connected,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<crate::kube::pod::Eviction>>> {
        let (namer, poster) = connected?;
        tracing::info!("{}", namer.describe());
        let evictions = namer.take_evictions();
        *self = Self::Ready {
            namer: Box::new(namer),
            poster,
        };
        Ok(evictions)
    }

    /// The namer and poster, after waiting for them if they are still
    /// connecting.
    async fn ready(
        &mut self,
    ) -> Result<(
        &mut Namer,
        Option<&EventPoster>,
        Option<tokio::sync::mpsc::Receiver<crate::kube::pod::Eviction>>,
    )> {
        let mut evictions = None;
        if self.is_connecting() {
            let connected = self.connected().await;
            evictions = self.finish(connected)?;
        }
        match self {
            Self::Ready { namer, poster } => Ok((namer, poster.as_ref(), evictions)),
            Self::Connecting(_) => unreachable!("finished above"),
        }
    }
}

fn announce(probes: &Probes, memcg_paths: Option<&CgroupResolver>, node: &str) {
    for missing in &probes.layout.missing {
        tracing::warn!("this kernel's BTF lacks {missing}; those fields will be null");
    }
    if probes.layout.victim_task_from_signal() {
        match &probes.signal_hook {
            Ok(_) => tracing::info!("victim task: {}", probes.layout.victim_task_source()),
            Err(why) => tracing::warn!(
                "mark_victim passes only the pid and signal_generate cannot be hooked ({why}); \
                 victims' comm, uid, RSS, oom_score_adj, ns_pid, cgroup and silent will be null"
            ),
        }
    }
    if memcg_paths.is_none() {
        tracing::warn!("no memory cgroup hierarchy mounted; cgroup paths will be null");
    }
    let decision = match &probes.context_hook {
        Ok(hook) => format!("the OOM decision comes from {hook}"),
        Err(why) => format!(
            "no OOM decision hook ({why}), so constraint and oom_memcg are inferred from page \
             counters and oom_id from memory.oom.group"
        ),
    };
    let userspace = match &probes.signal_hook {
        Ok(hook) => format!("userspace OOM killers are seen via {hook}"),
        Err(why) => format!("userspace OOM killers are not seen ({why})"),
    };
    tracing::info!(
        "watching OOM kills on {node} via {}; {decision}; {userspace}",
        probes.victim_hook,
    );
}

/// Moves records from the ring buffer to the output, counting what it could
/// not handle.
struct Pump<W: Write> {
    output: Output<W>,
    metrics: Arc<Metrics>,
    filter: Filter,
    naming: Naming,
    /// Evictions, once the naming sources connected while an event waited.
    late_evictions: Option<tokio::sync::mpsc::Receiver<crate::kube::pod::Eviction>>,
    enricher: Enricher,
    ledger: KillLedger,
    /// `None`: no history wanted; `Some(Err)`: wanted, but it could not be
    /// opened (every event is then counted as not kept).
    history: Option<Result<History, ()>>,
    kills: u64,
    undecodable: u64,
    lost_reported: u64,
    /// `lost_reported` as of the last reconciliation.
    lost_at_reconcile: u64,
}

impl<W: Write> Pump<W> {
    /// Everything in the ring buffer, decoded and enriched (no waiting:
    /// the buffer is emptied before anything slow happens).
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            match decode::decode(&item) {
                Ok(record) => events.extend(self.enricher.on_record(record)),
                Err(err) => {
                    self.undecodable += 1;
                    tracing::error!("undecodable record ({err})");
                }
            }
        }
        events
    }

    /// Names pods (bounded waits), stores the events in one commit and
    /// writes them.
    async fn emit_all(&mut self, mut events: Vec<Event>) -> Result<()> {
        for event in &mut events {
            if let Some((kind, kill)) = event.as_kill_mut() {
                let (namer, poster, evictions) = self.naming.ready().await?;
                namer.name(kill).await;
                if let Some(poster) = poster {
                    poster.post(kind, kill);
                }
                if evictions.is_some() {
                    self.late_evictions = evictions;
                }
            }
        }
        self.keep(&events);
        for event in &events {
            self.write(event)?;
        }
        self.ledger.save();
        Ok(())
    }

    /// Stores and writes one event.
    fn emit(&mut self, event: &Event) -> Result<()> {
        self.keep(std::slice::from_ref(event));
        self.write(event)
    }

    /// Commits events to the history store before they are printed, so
    /// that what the stream showed is in the store. A failed commit is
    /// logged and the events are still printed: the stream comes first.
    fn keep(&mut self, events: &[Event]) {
        let Some(history) = &self.history else { return };
        if events.is_empty() {
            return;
        }
        let not_kept = events.len() as u64;
        match history {
            Ok(history) => {
                if let Err(err) = history.append(events) {
                    tracing::error!("{not_kept} event(s) not kept in the history store: {err}");
                    self.metrics.add_history_write_failures(not_kept);
                }
            }
            Err(()) => self.metrics.add_history_write_failures(not_kept),
        }
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        if let Some((kind, kill)) = event.as_kill() {
            if kind == KillKind::OomKill {
                if let Some(id) = kill.victim.cgroup_id {
                    self.ledger.observed(id);
                }
            }
            self.kills += 1;
        }
        self.metrics.record(event);
        if !self.filter.matches(event) {
            return Ok(());
        }
        self.output
            .write(event)
            .map_err(|e| anyhow::anyhow!("cannot write event: {e}"))
    }

    /// The node's kill count for the next reconciliation, or `None` to
    /// force a walk of every cgroup's counter: records were lost since the
    /// last one, or the count cannot be read.
    fn node_kills(&mut self) -> Option<u64> {
        let lost_since = self.lost_reported != self.lost_at_reconcile;
        self.lost_at_reconcile = self.lost_reported;
        if lost_since {
            return None;
        }
        oom_probe_cgroupfs::counters::node_oom_kills().ok()
    }

    fn reconcile(&mut self, node_kills: Option<u64>) -> Result<()> {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let node = self.enricher.node().to_string();
        let Some(cgroups) = self.enricher.cgroups() else {
            return Ok(());
        };
        for missed in self.ledger.reconcile(cgroups, node_kills, &time, &node) {
            self.emit(&Event::OomKillUnobserved(missed))?;
        }
        Ok(())
    }

    fn report_lost(&mut self, lost: &LostCounter) {
        match lost.total() {
            Ok(total) if total > self.lost_reported => {
                tracing::error!(
                    "{} OOM record(s) lost because the ring buffer was full \
                     ({total} in all); raise --ring-buffer-size",
                    total - self.lost_reported
                );
                self.metrics.add_lost(total - self.lost_reported);
                self.lost_reported = total;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("cannot read the lost-record counter: {err}"),
        }
    }
}
