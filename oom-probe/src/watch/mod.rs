//! The event loop behind `oom-probe watch` and its wiring: the probes'
//! ring buffer -> decode -> enrich -> naming -> the [`Publisher`], a
//! once-a-second check of the kernel's lost-record count, and a slower
//! reconciliation with the kernel's own per-cgroup kill counters.

use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use anyhow::Result;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use oom_probe_cgroupfs::{counters, CgroupResolver, Hierarchies};

use crate::{
    enrich::Enricher,
    event::Event,
    kill_trace,
    kube::{
        names::{self as kubernetes, SourceOptions},
        naming::{Naming, NamingSources, Update},
    },
    pressure::{Change, PressureOptions, PressureWatcher},
    probes::{DecisionHook, Probes, VictimHook},
    sink::{
        fault::Fault,
        history::HistoryLimits,
        history_slot::HistorySlot,
        http, http_thread,
        ledger::KillLedger,
        metrics::Metrics,
        output::{Output, OutputFormat},
        publish::Publisher,
    },
};

mod pump;

use pump::Pump;

/// `--namespace`, `--pod`, `--container`: part of [`WatchOptions`].
pub use crate::sink::filter::Filter;

/// What `watch` was asked to do.
#[derive(Debug)]
pub struct WatchOptions {
    /// JSON lines or a table.
    pub output: OutputFormat,
    /// Size of the eBPF ring buffer, in bytes.
    pub ring_buffer_bytes: u32,
    /// Where the kernel's layout is cached between runs of one boot
    /// ([`crate::probes::layout_cache`]); `None`: parse the BTF every time.
    pub layout_cache: Option<PathBuf>,
    /// Victim hooks to try, in order.
    pub hooks: Vec<VictimHook>,
    /// OOM-decision hooks to try, in order.
    pub decision_hooks: Vec<DecisionHook>,
    /// The node name every event carries.
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
    /// `memory_pressure` watching; `None` with `--no-pressure`.
    pub pressure: Option<PressureOptions>,
}

/// Runs until SIGINT/SIGTERM (or `max_events`), then drains what is left.
pub async fn watch(mut options: WatchOptions) -> Result<()> {
    let metrics = Arc::new(Metrics::new(options.metrics_series_ttl));
    // A history store that cannot be opened (a missing or read-only state
    // directory, a full disk, a corrupt file) must not stop the reporting:
    // say so, go on, count every event it could not keep, and try again.
    let history = options
        .history
        .as_ref()
        .map(|path| HistorySlot::open(path.clone(), options.history_limits));
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = options.listen {
        let shared = http::Shared {
            metrics: metrics.clone(),
            ready: ready.clone(),
        };
        // Its own thread: a burst on the kill path does not delay scrapes
        // and liveness probes, nor they the kill path.
        http_thread::spawn(addr, shared)?;
        tracing::info!("serving /metrics, /healthz and /readyz on {addr}");
    }
    let mut probes = Probes::attach(
        options.ring_buffer_bytes,
        &options.hooks,
        &options.decision_hooks,
        &options.userspace_killers,
        options
            .layout_cache
            .as_ref()
            .map(crate::probes::layout_cache::LayoutCache::new)
            .as_ref(),
    )?;
    crate::probes::startup_trace("probes attached");
    let hierarchies = match &options.cgroupfs {
        Some(dir) => Hierarchies::under(dir),
        None => Hierarchies::discover()?,
    };
    let memcg_paths = hierarchies.memory_root().map(CgroupResolver::new);
    // The naming sources (API server, container runtime) connect off the
    // critical path: the ready line follows the probes, and the first kill
    // that needs names waits for them (their calls are bounded).
    let naming = Naming::start(NamingSources {
        sources: std::mem::take(&mut options.sources),
        events: options.events,
        node: options.node.clone(),
        metrics: metrics.clone(),
    });
    // Ready once the probes are attached (kills from now on wait in the
    // ring buffer), and before the ready line: the listener has its own
    // thread, so whoever read that line may ask /readyz at once.
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    announce(&probes, memcg_paths.as_ref(), &options.node);
    // Memory pressure watching starts after the ready line: its first walk
    // of the hierarchy is not on the start-up path.
    let pressure = start_pressure(&options, &hierarchies);
    let mut enricher = Enricher::new(
        options.node.clone(),
        memcg_paths,
        probes.layout.constraint_names.clone(),
    );
    if let Some(procfs) = &options.procfs {
        if let Some(why) = crate::enrich::tasks::pid_namespace_mismatch(procfs) {
            tracing::warn!("{why}");
        }
        enricher.set_procfs(procfs.clone());
    }
    // SAFETY: the ring buffer owns its map fd and keeps it open and
    // unchanged for as long as it lives, which is as long as the AsyncFd.
    let mut ring = unsafe { AsyncFd::register(probes.take_ring_buffer()?) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?;
    let mut lost = probes.take_lost_counter()?;
    release_start_up_heap();
    let ledger = KillLedger::load(options.state_file.clone());
    let publisher = Publisher::new(
        Output::new(options.output, io::stdout().lock()),
        metrics,
        options.filter,
        ledger,
        history,
        options.node.clone(),
    )
    .with_fault(Fault::from_env());
    let mut pump = Pump::new(enricher, naming, pressure, publisher);
    pump.publisher.replay()?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut lost_tick = tokio::time::interval(Duration::from_secs(1));
    let mut reconcile_tick = tokio::time::interval(options.reconcile_interval);
    let done = |pump: &Pump<_>| {
        options
            .max_events
            .is_some_and(|max| pump.publisher.kills() >= max)
    };
    while !done(&pump) {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                kill_trace::wake();
                let (events, more) = pump.drain(guard.get_inner_mut());
                // Records left for the next turn keep the ring ready.
                if !more {
                    guard.clear_ready();
                }
                pump.emit_all(events).await?;
                kill_trace::end();
                if more {
                    // A turn of at most DRAIN_TURN records, then signals,
                    // ticks and the tasks of this runtime (Event posts) get
                    // theirs before the next.
                    tokio::task::yield_now().await;
                }
            }
            update = pump.naming.next() => match update {
                Update::Connected(connected) => pump.naming.finish(connected),
                Update::Eviction(eviction) => {
                    let event = kubernetes::eviction_event(eviction, &options.node);
                    pump.publisher.emit(&[Event::Eviction(Box::new(event))])?;
                }
            },
            changes = next_pressure(&mut pump.pressure) => pump.emit_pressure(changes).await?,
            _ = lost_tick.tick() => {
                pump.report_lost(&lost);
                pump.drain_lost(&mut lost)?;
                let mut changes = Vec::new();
                if let Some(pressure) = &mut pump.pressure {
                    changes.extend(pressure.tick());
                    changes.extend(pressure.rescan_if_due());
                }
                pump.emit_pressure(changes).await?;
            }
            _ = reconcile_tick.tick() => {
                let node_kills = || counters::node_oom_kills().ok();
                pump.reconcile(ring.get_mut(), &mut lost, node_kills).await?;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    pump.report_lost(&lost);
    if !pump.flush(ring.get_mut(), &mut lost).await? {
        tracing::warn!(
            "stopping with records still in the ring buffer (a burst); the next start reports \
             their kills from the kernel's counters"
        );
    }
    tracing::info!(
        "stopped after {} kill(s); {} record(s) lost, {} undecodable",
        pump.publisher.kills(),
        pump.lost_reported,
        pump.undecodable
    );
    Ok(())
}

/// Starts watching memory pressure, unless `--no-pressure` or no memory
/// hierarchy; a watcher that cannot start is said, and reporting goes on.
fn start_pressure(options: &WatchOptions, hierarchies: &Hierarchies) -> Option<PressureWatcher> {
    match (&options.pressure, hierarchies.memory_root()) {
        (Some(pressure), Some(root)) => {
            let procfs = options.procfs.clone().unwrap_or_else(|| "/proc".into());
            let v2 = crate::pressure::memory_hierarchy(root);
            match PressureWatcher::new(
                pressure.clone(),
                options.node.clone(),
                root.to_path_buf(),
                v2,
                procfs,
            ) {
                Ok(watcher) => {
                    let node = watcher.node_watched();
                    tracing::info!(
                        "watching memory pressure of {} cgroup(s) and {} (cgroup {})",
                        watcher.watched() - usize::from(node),
                        if node { "the node" } else { "not the node" },
                        if v2 {
                            "v2, PSI triggers"
                        } else {
                            "v1, memory.pressure_level"
                        }
                    );
                    Some(watcher)
                }
                Err(err) => {
                    tracing::warn!("memory pressure is not watched ({err})");
                    None
                }
            }
        }
        _ => None,
    }
}

/// How long a reconciliation that found a kill unaccounted for waits for
/// records in flight before it reports the kill as unobserved: the kernel
/// counts a kill (`memcg_memory_event_mm`) just before it sends the SIGKILL
/// and marks the victim (`mark_victim`, which writes the record), all under
/// the victim's task lock, so microseconds; 10 ms is a thousand times that,
/// and the wait only happens when something looks missed.
const SETTLE: Duration = Duration::from_millis(10);

/// CPU time of the calling thread so far (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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

/// The next pressure notifications, or never when pressure is not watched.
async fn next_pressure(pressure: &mut Option<PressureWatcher>) -> Vec<Change> {
    match pressure {
        Some(watcher) => watcher.next().await,
        None => std::future::pending().await,
    }
}

/// Says, once the probes are attached, what this kernel lets oom-probe see
/// and how (the ready line).
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
    let userspace = match (&probes.signal_hook, &probes.exit_hook) {
        (Ok(hook), Ok(exit)) => format!(
            "userspace OOM killers are seen via {hook}, the ends of their SIGTERMs via {exit}"
        ),
        (Ok(hook), Err(why)) => {
            format!("userspace OOM killers are seen via {hook}, SIGKILLs only ({why})")
        }
        (Err(why), _) => format!("userspace OOM killers are not seen ({why})"),
    };
    tracing::info!(
        "watching OOM kills on {node} via {}; {decision}; {userspace}",
        probes.victim_hook,
    );
    crate::probes::startup_trace("ready line");
    match &probes.layout_cached_in {
        Some(path) => tracing::debug!("kernel layout from {} (no BTF parse)", path.display()),
        None => tracing::debug!("kernel layout from the kernel's BTF"),
    }
}

#[cfg(test)]
mod tests {
    use super::pump::{LostRecords, Records, DRAIN_TURN, FLUSH_TURNS};
    use super::*;
    use crate::sink::ledger::LostByCgroup;
    use std::{
        collections::{HashMap, VecDeque},
        os::unix::fs::MetadataExt,
        path::Path,
    };

    use oom_probe_common::{MemcgLevel, VictimRecord, RECORD_VICTIM};

    use crate::{
        kube::naming::{Connect, Names, Timing},
        sink::publish::tests::{temp_dir, FakeLostMap, Printed},
    };

    impl Records for VecDeque<Vec<u8>> {
        fn drain_into(&mut self, max: usize, mut each: impl FnMut(&[u8])) -> bool {
            for _ in 0..max {
                match self.pop_front() {
                    Some(bytes) => each(&bytes),
                    None => return false,
                }
            }
            true
        }
    }

    /// The probes' lost-record counts, in memory.
    #[derive(Default)]
    struct FakeLost {
        map: FakeLostMap,
        total: u64,
        without_cgroup: u64,
    }

    impl LostByCgroup for FakeLost {
        fn by_cgroup(&self) -> Vec<(u64, u64)> {
            self.map.by_cgroup()
        }
        fn of_cgroup(&self, id: u64) -> u64 {
            self.map.of_cgroup(id)
        }
        fn forget(&mut self, id: u64) -> Result<()> {
            self.map.forget(id)
        }
    }

    impl LostRecords for FakeLost {
        fn total(&self) -> Result<u64> {
            Ok(self.total)
        }
        fn without_cgroup(&self) -> Result<u64> {
            Ok(self.without_cgroup)
        }
    }

    /// A cgroup of a fake v1 memory hierarchy with `kills` in its own
    /// `memory.oom_control`; returns its id (the directory's inode).
    fn set_kills(root: &Path, cgroup: &str, kills: u64) -> u64 {
        let dir = root.join(cgroup);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("memory.oom_control"),
            format!("oom_kill_disable 0\nunder_oom 0\noom_kill {kills}\n"),
        )
        .unwrap();
        std::fs::metadata(&dir).unwrap().ino()
    }

    /// The bytes of a victim record in memory cgroup `cgroup_id`, as the
    /// eBPF side writes them.
    fn victim(cgroup_id: u64, kernel_time_ns: u64) -> Vec<u8> {
        let mut memcg_levels = [MemcgLevel::default(); oom_probe_common::MEMCG_LEVELS];
        memcg_levels[0].cgroup_id = cgroup_id;
        let record = VictimRecord {
            kind: RECORD_VICTIM,
            features: oom_probe_common::feature::MEMCG,
            kernel_time_ns,
            tgid: 300,
            tid: 300,
            comm: *b"hog\0\0\0\0\0\0\0\0\0\0\0\0\0",
            memcg_levels,
            ..Default::default()
        };
        // SAFETY: VictimRecord is plain data; reading its bytes is valid.
        unsafe {
            std::slice::from_raw_parts(
                (&record as *const VictimRecord).cast::<u8>(),
                size_of::<VictimRecord>(),
            )
        }
        .to_vec()
    }

    /// A pump over a fake memory hierarchy at `dir/cgroups` (none when
    /// `cgroups` is false), a state file in `dir`, no history, and naming
    /// sources that never connect.
    fn pump(dir: &Path, cgroups: bool) -> (Pump<Printed>, Printed) {
        let metrics = Arc::new(Metrics::new(Duration::from_secs(60)));
        let printed = Printed::default();
        let publisher = Publisher::new(
            Output::new(OutputFormat::Json, printed.clone()),
            metrics.clone(),
            Filter::default(),
            KillLedger::load(Some(dir.join("state.json"))),
            None,
            "node-a".into(),
        );
        let root = dir.join("cgroups");
        std::fs::create_dir_all(&root).unwrap();
        let enricher = Enricher::new(
            "node-a".into(),
            cgroups.then(|| CgroupResolver::new(&root)),
            HashMap::new(),
        );
        let connect: Connect<Names> =
            Arc::new(|| Box::pin(async { Err(anyhow::anyhow!("no naming sources in tests")) }));
        let timing = Timing {
            wait: Duration::from_secs(5),
            retry: Duration::from_secs(3600),
        };
        let naming = Naming::new(connect, metrics, timing);
        (Pump::new(enricher, naming, None, publisher), printed)
    }

    #[tokio::test]
    async fn drain_decodes_and_enriches_and_counts_what_it_cannot_decode() {
        let dir = temp_dir("watch-drain");
        let (mut pump, _) = pump(&dir, false);
        let mut ring = VecDeque::from([vec![1, 2, 3], victim(77, 5_000), vec![9; 8]]);
        let (events, more) = pump.drain(&mut ring);
        assert!(ring.is_empty());
        assert!(!more);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].as_kill().unwrap().1.victim.cgroup_id, Some(77));
        assert_eq!(pump.undecodable, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn flush_publishes_the_ring_then_the_lost_records() {
        let dir = temp_dir("watch-flush");
        let (mut pump, printed) = pump(&dir, false);
        let mut ring = VecDeque::from([victim(77, 5_000)]);
        let mut lost = FakeLost::default();
        lost.map.0.insert(78, 2);
        pump.flush(&mut ring, &mut lost).await.unwrap();
        let lines = printed.lines();
        let types: Vec<_> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["oom_kill", "oom_kill_unobserved"]);
        assert_eq!(lines[0]["kubernetes"], serde_json::Value::Null, "unnamed");
        assert_eq!(lines[1]["reason"], "ring_buffer_full");
        assert_eq!(pump.publisher.kills(), 1);
        pump.flush(&mut ring, &mut lost).await.unwrap();
        assert_eq!(printed.lines().len(), 2, "nothing twice");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn every_kill_the_kernel_counted_is_reported_once_as_a_kill_or_unobserved() {
        let dir = temp_dir("watch-reconcile");
        let root = dir.join("cgroups");
        let pod = set_kills(&root, "pod", 0);
        let (mut pump, printed) = pump(&dir, true);
        let (mut ring, mut lost) = (VecDeque::new(), FakeLost::default());
        // The first tick walks: the baseline, nothing reported.
        pump.reconcile(&mut ring, &mut lost, || Some(0))
            .await
            .unwrap();
        assert!(printed.lines().is_empty());
        // Three kills counted by the kernel: one record in the ring, one
        // lost by the ring (counted by the eBPF side), one missed.
        set_kills(&root, "pod", 3);
        ring.push_back(victim(pod, oom_probe_cgroupfs::clock::monotonic_ns()));
        lost.map.0.insert(pod, 1);
        // The node counted 3, 2 were seen: a walk.
        pump.reconcile(&mut ring, &mut lost, || Some(3))
            .await
            .unwrap();
        let lines = printed.lines();
        let kinds: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l["type"].as_str().unwrap(),
                    l["count"].as_u64(),
                    l["reason"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("oom_kill", None, None),
                ("oom_kill_unobserved", Some(1), Some("ring_buffer_full")),
                ("oom_kill_unobserved", Some(1), Some("counter_ahead")),
            ]
        );
        // Nothing new on the node: no walk; a forced one finds nothing more.
        pump.reconcile(&mut ring, &mut lost, || Some(3))
            .await
            .unwrap();
        pump.publisher.ledger_mut().force_walk();
        pump.reconcile(&mut ring, &mut lost, || Some(3))
            .await
            .unwrap();
        assert_eq!(printed.lines().len(), 3, "never twice");
        let metrics = pump.publisher.metrics().encode();
        assert!(
            metrics.contains("oom_probe_reconcile_walks_total 3"),
            "4 ticks, 3 walks: {metrics}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A ring whose producer never stops: a record of cgroup `id` every
    /// time one is taken.
    struct Endless {
        id: u64,
        taken: usize,
    }

    impl Records for Endless {
        fn drain_into(&mut self, max: usize, mut each: impl FnMut(&[u8])) -> bool {
            for _ in 0..max {
                self.taken += 1;
                each(&victim(self.id, oom_probe_cgroupfs::clock::monotonic_ns()));
            }
            true
        }
    }

    #[tokio::test]
    async fn a_burst_is_taken_in_bounded_turns_and_a_busy_ring_defers_the_comparison() {
        let dir = temp_dir("watch-burst");
        let root = dir.join("cgroups");
        let pod = set_kills(&root, "pod", 0);
        let (mut pump, printed) = pump(&dir, true);
        let mut ring: VecDeque<Vec<u8>> = (0..600).map(|i| victim(pod, 1_000 + i)).collect();
        let (events, more) = pump.drain(&mut ring);
        assert_eq!((events.len(), more, ring.len()), (DRAIN_TURN, true, 344));
        // A producer that never stops: the flush gives up after its turns,
        // and the walk (the first one, due) waits: nothing compared while
        // the ring is busy, so nothing reported twice.
        set_kills(&root, "pod", 1_000_000);
        let mut endless = Endless { id: pod, taken: 0 };
        let mut lost = FakeLost::default();
        pump.reconcile(&mut endless, &mut lost, || Some(1_000_000))
            .await
            .unwrap();
        assert_eq!(endless.taken, DRAIN_TURN * FLUSH_TURNS);
        let lines = printed.lines();
        assert_eq!(lines.len(), DRAIN_TURN * FLUSH_TURNS);
        assert!(lines.iter().all(|l| l["type"] == "oom_kill"));
        let metrics = pump.publisher.metrics().encode();
        assert!(
            metrics.contains("oom_probe_reconcile_walks_total 0"),
            "{metrics}"
        );
        // The burst over (the ring empties), the deferred walk happens.
        pump.reconcile(&mut ring, &mut lost, || Some(1_000_000))
            .await
            .unwrap();
        let metrics = pump.publisher.metrics().encode();
        assert!(
            metrics.contains("oom_probe_reconcile_walks_total 1"),
            "{metrics}"
        );
        assert!(ring.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn lost_records_are_counted_once_and_those_without_cgroup_force_a_walk() {
        let dir = temp_dir("watch-lost");
        let (mut pump, _) = pump(&dir, false);
        pump.publisher.ledger_mut().walking(Some(5));
        assert!(!pump.publisher.ledger_mut().walk_needed(Some(5)));
        let lost = FakeLost {
            total: 3,
            without_cgroup: 1,
            ..Default::default()
        };
        pump.report_lost(&lost);
        pump.report_lost(&lost);
        let metrics = pump.publisher.metrics().encode();
        assert!(
            metrics.contains("oom_probe_lost_events_total 3"),
            "{metrics}"
        );
        assert!(pump.publisher.ledger_mut().walk_needed(Some(5)), "forced");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
