//! Prometheus metrics, kept in oom-probe itself so counts survive container
//! restarts (cAdvisor's `container_oom_events_total` vanishes with the
//! container) and silent kills have a series of their own.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use crate::event::{Constraint, Event, Kubernetes, PressureScope};

mod process;

fn pressure_labels(
    scope: PressureScope,
    k8s: Option<&Kubernetes>,
    cgroup: &Option<String>,
) -> PressureLabels {
    let text = |value: Option<&String>| value.cloned().unwrap_or_default();
    PressureLabels {
        scope: scope_name(scope).into(),
        namespace: text(k8s.and_then(|k| k.namespace.as_ref())),
        pod: text(k8s.and_then(|k| k.pod.as_ref())),
        container: text(k8s.and_then(|k| k.container.as_ref())),
        cgroup: cgroup.clone().unwrap_or_default(),
    }
}

/// The `scope` label's value.
fn scope_name(scope: PressureScope) -> &'static str {
    match scope {
        PressureScope::Cgroup => "cgroup",
        PressureScope::Node => "node",
    }
}

/// What identifies a pressure episode across its events: the scope and the
/// memory cgroup's id (its path when the id is unknown; neither for the
/// node). Names are not part of it: they are looked up per event and may
/// fail for one and not the other.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct PressureEpisode {
    scope: &'static str,
    cgroup_id: Option<u64>,
    cgroup_path: Option<String>,
}

impl PressureEpisode {
    fn of(scope: PressureScope, target: &crate::event::PressureTarget) -> Self {
        Self {
            scope: scope_name(scope),
            cgroup_id: target.cgroup_id,
            cgroup_path: match target.cgroup_id {
                Some(_) => None,
                None => target.cgroup_path.clone(),
            },
        }
    }
}

/// Labels of `oom_probe_kills_total`: who was killed and how.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KillLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// `kernel` for an `oom_kill`; for a `userspace_kill`, the killer's
    /// name (`trigger.comm`, one of `--userspace-killers`).
    pub killer: String,
    /// The kernel's `constraint` (`memcg`, `global`, `cpuset`, `mempolicy`,
    /// `unknown` when the kernel did not say); `none` for a userspace kill.
    pub constraint: String,
    pub silent: String,
}

/// Labels of `oom_probe_kubernetes_event_post_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventPostFailureLabels {
    /// `api_error`: the API server refused the Event or could not be
    /// reached; `queue_full`: dropped before posting, the queue was full.
    pub reason: String,
}

/// Labels of `oom_probe_memory_pressure`: the cgroup under pressure and
/// its pod and container (empty outside Kubernetes; all empty, with
/// `scope="node"`, for the node).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PressureLabels {
    pub scope: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub cgroup: String,
}

/// Every metric oom-probe exports.
pub struct Metrics {
    registry: Registry,
    kills: Family<KillLabels, Counter>,
    unobserved: Counter,
    lost: Counter,
    enrichment_failures: Counter,
    event_post_failures: Family<EventPostFailureLabels, Counter>,
    history_write_failures: Counter,
    /// 1 while a cgroup (or the node) is under memory pressure; the series
    /// leaves when it clears.
    pressure: Family<PressureLabels, Gauge>,
    /// The labels each open pressure episode's first event set to 1: its
    /// end removes exactly that series, whatever its own names say.
    pressure_open: Mutex<HashMap<PressureEpisode, PressureLabels>>,
    state_write_failures: Counter,
    replayed: Counter,
    event_posts_dropped: Counter,
    reconcile_ticks: Counter,
    reconcile_walks: Counter,
    reconcile_cpu: Counter<f64, AtomicU64>,
    /// Unix time of each kill series' last kill: an alert on it fires for
    /// a container's first kill too, which `increase()` over a counter
    /// created at that kill cannot see.
    last_kill: Family<KillLabels, Gauge<f64, AtomicU64>>,
    /// When each kill series last moved; idle ones are dropped so deleted
    /// pods do not grow the series set forever.
    last_moved: Mutex<HashMap<KillLabels, Instant>>,
    series_ttl: Duration,
}

impl Metrics {
    /// Registers the metrics; kill series idle for `series_ttl` expire.
    pub fn new(series_ttl: Duration) -> Self {
        let mut root = Registry::default();
        // process_*, unprefixed as every client library exports them.
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("oom_probe");
        let kills = Family::<KillLabels, Counter>::default();
        registry.register(
            "kills",
            "Processes killed for memory (kernel and userspace OOM killers)",
            kills.clone(),
        );
        let unobserved = Counter::default();
        registry.register(
            "unobserved_kills",
            "Kills the kernel counted that oom-probe did not see (down, or ring buffer full)",
            unobserved.clone(),
        );
        let lost = Counter::default();
        registry.register(
            "lost_events",
            "Records the kernel dropped because the ring buffer was full",
            lost.clone(),
        );
        let enrichment_failures = Counter::default();
        registry.register(
            "enrichment_failures",
            "Lookups of pod or container names that failed (the container runtime, the API server, or naming sources still connecting)",
            enrichment_failures.clone(),
        );
        let event_post_failures = Family::<EventPostFailureLabels, Counter>::default();
        registry.register(
            "kubernetes_event_post_failures",
            "Kubernetes Events about kills that were not posted, by reason (api_error, queue_full)",
            event_post_failures.clone(),
        );
        // Both reasons from the start, at 0, so a rate over them has a start.
        for reason in ["api_error", "queue_full"] {
            drop(event_post_failures.get_or_create(&EventPostFailureLabels {
                reason: reason.into(),
            }));
        }
        let history_write_failures = Counter::default();
        registry.register(
            "history_write_failures",
            "Events the history store could not keep (it could not be opened, or a commit failed); they were still emitted",
            history_write_failures.clone(),
        );
        let pressure = Family::<PressureLabels, Gauge>::default();
        registry.register(
            "memory_pressure",
            "1 while the cgroup (or the node) is at its limit and struggling to reclaim (a memory_pressure event); gone when it clears",
            pressure.clone(),
        );
        let state_write_failures = Counter::default();
        registry.register(
            "state_write_failures",
            "Writes of the state file (kill counts and the batch about to be printed) that failed; the events were still emitted, but a restart may report their kills again as unobserved",
            state_write_failures.clone(),
        );
        let replayed = Counter::default();
        registry.register(
            "replayed_events",
            "Events a crashed run had committed and maybe printed, printed again at start with replayed: true (also counted in this run's oom_probe_kills_total: its counters started at zero)",
            replayed.clone(),
        );
        let event_posts_dropped = Counter::default();
        registry.register(
            "event_posts_dropped",
            "Kubernetes Event posts dropped by the rate limit (1/s per node, burst 10; one per 5 s per container, burst 3); the kills are still reported",
            event_posts_dropped.clone(),
        );
        let reconcile_ticks = Counter::default();
        registry.register(
            "reconcile_ticks",
            "Comparisons with the kernel's kill counters (every --reconcile-interval)",
            reconcile_ticks.clone(),
        );
        let reconcile_walks = Counter::default();
        registry.register(
            "reconcile_walks",
            "Comparisons that read every memory cgroup's kill counter: at start-up, and when the node's oom_kill count (/proc/vmstat) rose by more than the kills reported",
            reconcile_walks.clone(),
        );
        let reconcile_cpu = Counter::<f64, AtomicU64>::default();
        registry.register(
            "reconcile_cpu_seconds",
            "CPU time the comparisons with the kernel's kill counters took (thread CPU clock)",
            reconcile_cpu.clone(),
        );
        let last_kill = Family::<KillLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_kill_timestamp_seconds",
            "Unix time oom-probe saw the last kill of each oom_probe_kills_total series",
            last_kill.clone(),
        );
        let start_time = Gauge::<f64, AtomicU64>::default();
        start_time.set(unix_now());
        registry.register(
            "start_time_seconds",
            "Unix time this oom-probe started; its counters started at zero then",
            start_time,
        );
        let build = Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION")),
            ("revision", env!("OOM_PROBE_REVISION")),
        ]);
        registry.register(
            "build",
            "oom-probe build: its version and git revision (unknown when built without git)",
            build,
        );
        Self {
            registry: root,
            kills,
            unobserved,
            lost,
            enrichment_failures,
            event_post_failures,
            history_write_failures,
            pressure,
            pressure_open: Mutex::new(HashMap::new()),
            state_write_failures,
            replayed,
            event_posts_dropped,
            reconcile_ticks,
            reconcile_walks,
            reconcile_cpu,
            last_kill,
            last_moved: Mutex::new(HashMap::new()),
            series_ttl,
        }
    }

    /// Counts one emitted event.
    pub fn record(&self, event: &Event) {
        match event {
            Event::OomKill(kill) | Event::UserspaceKill(kill) => {
                let k8s = kill.kubernetes.as_ref();
                let text = |value: Option<&String>| value.cloned().unwrap_or_default();
                let (killer, constraint) = if matches!(event, Event::UserspaceKill(_)) {
                    (kill.trigger.comm.as_str(), "none")
                } else {
                    let constraint = kill.constraint.map_or("unknown", Constraint::as_str);
                    ("kernel", constraint)
                };
                let labels = KillLabels {
                    namespace: text(k8s.and_then(|k| k.namespace.as_ref())),
                    pod: text(k8s.and_then(|k| k.pod.as_ref())),
                    container: text(k8s.and_then(|k| k.container.as_ref())),
                    killer: killer.to_string(),
                    constraint: constraint.to_string(),
                    silent: kill
                        .silent
                        .map_or("unknown", |s| if s { "true" } else { "false" })
                        .to_string(),
                };
                self.kills.get_or_create(&labels).inc();
                self.last_kill.get_or_create(&labels).set(unix_now());
                self.last_moved
                    .lock()
                    .expect("metrics lock")
                    .insert(labels, Instant::now());
            }
            Event::OomKillUnobserved(missed) => {
                self.unobserved.inc_by(missed.count);
            }
            Event::Eviction(_) => {}
            Event::MemoryPressure(p) => {
                // The episode keeps its first event's series: later events
                // named otherwise (a lookup failed or recovered) do not
                // start a second one, nor reset an alert's `for:`.
                let mut open = self.pressure_open.lock().expect("metrics lock");
                let labels = open
                    .entry(PressureEpisode::of(p.scope, &p.target))
                    .or_insert_with(|| {
                        pressure_labels(
                            p.scope,
                            p.target.kubernetes.as_ref(),
                            &p.target.cgroup_path,
                        )
                    });
                self.pressure.get_or_create(labels).set(1);
            }
            Event::MemoryPressureEnd(p) => {
                let started = self
                    .pressure_open
                    .lock()
                    .expect("metrics lock")
                    .remove(&PressureEpisode::of(p.scope, &p.target));
                // No start seen (none recorded by this process): the end's
                // own labels, the best guess.
                let labels = started.unwrap_or_else(|| {
                    pressure_labels(p.scope, p.target.kubernetes.as_ref(), &p.target.cgroup_path)
                });
                self.pressure.remove(&labels);
            }
        }
    }

    /// Adds records the kernel dropped.
    pub fn add_lost(&self, records: u64) {
        self.lost.inc_by(records);
    }

    /// Counts one reconciliation tick that took `cpu` of thread CPU time,
    /// and whether it read every cgroup's counter (`walked`).
    pub fn add_reconcile_tick(&self, cpu: Duration, walked: bool) {
        self.reconcile_ticks.inc();
        if walked {
            self.reconcile_walks.inc();
        }
        self.reconcile_cpu.inc_by(cpu.as_secs_f64());
    }

    /// Counts a failed name lookup.
    pub fn add_enrichment_failure(&self) {
        self.enrichment_failures.inc();
    }

    /// Counts a Kubernetes Event the API server did not take (`queued`:
    /// it was posted and failed) or that was dropped before posting
    /// because the queue was full (`!queued`).
    pub fn add_event_post_failure(&self, queued: bool) {
        let reason = if queued { "api_error" } else { "queue_full" };
        self.event_post_failures
            .get_or_create(&EventPostFailureLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts events the history store could not keep.
    pub fn add_history_write_failures(&self, events: u64) {
        self.history_write_failures.inc_by(events);
    }

    /// Counts one failed write of the state file.
    pub fn add_state_write_failure(&self) {
        self.state_write_failures.inc();
    }

    /// Counts events printed again after a crash.
    pub fn add_replayed(&self, events: u64) {
        self.replayed.inc_by(events);
    }

    /// Counts Kubernetes Event posts the rate limit dropped.
    pub fn add_event_posts_dropped(&self, posts: u64) {
        self.event_posts_dropped.inc_by(posts);
    }

    /// Drops kill series that have not moved for the TTL.
    pub fn expire_idle_series(&self) {
        let mut last_moved = self.last_moved.lock().expect("metrics lock");
        last_moved.retain(|labels, moved| {
            let keep = moved.elapsed() < self.series_ttl;
            if !keep {
                self.kills.remove(labels);
                self.last_kill.remove(labels);
            }
            keep
        });
    }

    /// The OpenMetrics text exposition (`application/openmetrics-text;
    /// version=1.0.0`), what Prometheus asks for.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// The classic Prometheus text format (`text/plain; version=0.0.4`), for
    /// scrapers that do not ask for OpenMetrics (curl, `promtool check
    /// metrics`): the same samples, with counter families named after their
    /// `_total` samples, info families as `_info` gauges, no `# EOF`.
    pub fn encode_prometheus_text(&self) -> String {
        openmetrics_to_prometheus_text(&self.encode())
    }
}

/// Seconds since the Unix epoch, now (0 if the clock is before 1970).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Rewrites prometheus-client's OpenMetrics text as Prometheus text format
/// 0.0.4. Only the metadata lines differ for the types oom-probe exports
/// (counter, gauge, info); sample lines are the same in both.
fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ');
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{family}_total"), "counter"),
                "info" => (format!("{family}_info"), "gauge"),
                "gauge" => (family.to_string(), "gauge"),
                _ => (family.to_string(), "untyped"),
            };
            if let Some((_, text)) = help.take().filter(|(f, _)| *f == family) {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with('#') {
            // # UNIT and # EOF have no 0.0.4 form.
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pressure_series_is_1_while_it_lasts_and_leaves_with_its_end() {
        let metrics = Metrics::new(Duration::from_secs(60));
        let kubernetes = Some(Kubernetes {
            namespace: Some("shop".into()),
            pod: Some("web-1".into()),
            container: Some("app".into()),
            ..Kubernetes::default()
        });
        let (start, end) = pressure_episode(kubernetes.clone(), kubernetes);
        metrics.record(&start);
        let series = "oom_probe_memory_pressure{scope=\"cgroup\",namespace=\"shop\",pod=\"web-1\",container=\"app\",cgroup=\"/kubepods/podx/abc\"} 1";
        assert!(metrics.encode_prometheus_text().contains(series));
        metrics.record(&end);
        assert!(!metrics
            .encode_prometheus_text()
            .contains("oom_probe_memory_pressure{"));
    }

    /// A pressure start and end of cgroup 7 (`/kubepods/podx/abc`), each
    /// named as given (`None`: its name lookup failed).
    fn pressure_episode(start: Option<Kubernetes>, end: Option<Kubernetes>) -> (Event, Event) {
        use crate::event::{
            Memcg, PressureEndEvent, PressureEvent, PressureSource, PressureTarget,
        };
        let target = |kubernetes| PressureTarget {
            cgroup_id: Some(7),
            cgroup_path: Some("/kubepods/podx/abc".to_string()),
            kubernetes,
            container: None,
        };
        let start = Event::MemoryPressure(Box::new(PressureEvent {
            time: String::new(),
            node: "n".into(),
            scope: PressureScope::Cgroup,
            source: PressureSource::Psi,
            target: target(start),
            memcg: Memcg {
                usage_bytes: None,
                limit_bytes: None,
            },
            memcg_stat: None,
            psi: None,
            limit_hits: None,
            growth_bytes_per_minute: None,
            since: String::new(),
            duration_seconds: 0.0,
            tasks: None,
            tasks_total: None,
            explanation: String::new(),
            shortage: None,
            stalling: None,
        }));
        let end = Event::MemoryPressureEnd(Box::new(PressureEndEvent {
            time: String::new(),
            node: "n".into(),
            scope: PressureScope::Cgroup,
            target: target(end),
            since: String::new(),
            last: String::new(),
            duration_seconds: 1.0,
            events: 2,
            peak_psi_some_avg10: None,
            cgroup_removed: false,
        }));
        (start, end)
    }

    #[test]
    fn a_pressure_series_leaves_with_its_episode_whatever_the_end_is_named() {
        let named = Some(Kubernetes {
            namespace: Some("shop".into()),
            pod: Some("web-1".into()),
            container: Some("app".into()),
            ..Kubernetes::default()
        });
        let series = "oom_probe_memory_pressure{scope=\"cgroup\",namespace=\"shop\",pod=\"web-1\",container=\"app\",cgroup=\"/kubepods/podx/abc\"} 1";
        let gone = |metrics: &Metrics| {
            !metrics
                .encode_prometheus_text()
                .contains("oom_probe_memory_pressure{")
        };
        // Named at the start, naming failed at the end (kubernetes null).
        let metrics = Metrics::new(Duration::from_secs(60));
        let (start, end) = pressure_episode(named.clone(), None);
        metrics.record(&start);
        assert!(metrics.encode_prometheus_text().contains(series));
        metrics.record(&end);
        assert!(gone(&metrics), "{}", metrics.encode_prometheus_text());
        // The reverse, with a second, named, event in the episode: one
        // series (the first event's), and it leaves with the end.
        let metrics = Metrics::new(Duration::from_secs(60));
        let (unnamed_start, unnamed_end) = pressure_episode(None, None);
        let (named_again, _) = pressure_episode(named.clone(), named);
        metrics.record(&unnamed_start);
        metrics.record(&named_again);
        let text = metrics.encode_prometheus_text();
        assert_eq!(
            text.matches("oom_probe_memory_pressure{").count(),
            1,
            "{text}"
        );
        assert!(!text.contains(series), "{text}");
        metrics.record(&unnamed_end);
        assert!(gone(&metrics), "{}", metrics.encode_prometheus_text());
        // An end without a start this process saw removes its own labels.
        let metrics = Metrics::new(Duration::from_secs(60));
        let (_, end) = pressure_episode(None, None);
        metrics.record(&end);
        assert!(gone(&metrics));
    }

    /// The golden file's events (every type, a kernel and a userspace kill).
    fn golden_events() -> Vec<Event> {
        include_str!("../testdata/events.golden.jsonl")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a golden event"))
            .collect()
    }

    #[test]
    fn the_killer_is_a_label_of_its_own_beside_the_kernel_s_constraint() {
        let metrics = Metrics::new(Duration::from_secs(60));
        for event in golden_events() {
            metrics.record(&event);
        }
        let text = metrics.encode_prometheus_text();
        for expected in [
            "oom_probe_kills_total{namespace=\"\",pod=\"\",container=\"\",killer=\"kernel\",constraint=\"memcg\",silent=\"true\"} 2\n",
            "oom_probe_kills_total{namespace=\"shop\",pod=\"web-7d9f8-x2x4q\",container=\"app\",killer=\"systemd-oomd\",constraint=\"none\",silent=\"true\"} 1\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing:\n{text}");
        }
        assert!(!text.contains("constraint=\"userspace\""), "{text}");
    }

    #[test]
    fn event_post_failures_are_not_enrichment_failures() {
        let metrics = Metrics::new(Duration::from_secs(60));
        metrics.add_event_post_failure(true);
        metrics.add_event_post_failure(true);
        metrics.add_event_post_failure(false);
        let text = metrics.encode_prometheus_text();
        for expected in [
            "oom_probe_kubernetes_event_post_failures_total{reason=\"api_error\"} 2\n",
            "oom_probe_kubernetes_event_post_failures_total{reason=\"queue_full\"} 1\n",
            "oom_probe_enrichment_failures_total 0\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing:\n{text}");
        }
    }

    /// The value of an unlabelled sample `name` in the 0.0.4 text.
    fn sample(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn process_metrics_are_this_process_s_as_client_libraries_name_them() {
        let metrics = Metrics::new(Duration::from_secs(60));
        // Spin until this process has used a clock tick of CPU.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = metrics.encode_prometheus_text();
        while sample(&text, "process_cpu_seconds_total") == 0.0 && Instant::now() < deadline {
            std::hint::black_box((0..100_000u64).sum::<u64>());
            text = metrics.encode_prometheus_text();
        }
        let rss = sample(&text, "process_resident_memory_bytes");
        let vsize = sample(&text, "process_virtual_memory_bytes");
        assert!(rss > 1e5 && vsize >= rss, "rss {rss}, vsize {vsize}");
        let open = sample(&text, "process_open_fds");
        let max = sample(&text, "process_max_fds");
        assert!(open >= 3.0 && max >= open, "open {open}, max {max}");
        assert!(sample(&text, "process_threads") >= 1.0);
        assert!(sample(&text, "process_cpu_seconds_total") > 0.0);
        assert!(sample(&text, "process_virtual_memory_max_bytes") > 0.0);
        // This process started before this test ran, and after boot.
        let started = sample(&text, "process_start_time_seconds");
        let now = unix_now();
        assert!(
            started <= now && started > now - 86400.0 * 365.0,
            "{started} {now}"
        );
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
    }

    #[test]
    fn prometheus_text_names_families_after_their_samples() {
        let metrics = Metrics::new(Duration::from_secs(60));
        metrics.add_lost(3);
        let text = metrics.encode_prometheus_text();
        for expected in [
            "# HELP oom_probe_lost_events_total Records the kernel dropped because the ring buffer was full.\n",
            "# TYPE oom_probe_lost_events_total counter\noom_probe_lost_events_total 3\n",
            "# TYPE oom_probe_build_info gauge\noom_probe_build_info{version=",
            concat!(",revision=\"", env!("OOM_PROBE_REVISION"), "\"} 1\n"),
            "# TYPE oom_probe_start_time_seconds gauge\noom_probe_start_time_seconds ",
        ] {
            assert!(text.contains(expected), "{expected:?} missing:\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            !text.contains("# TYPE oom_probe_lost_events counter"),
            "{text}"
        );
    }
}
