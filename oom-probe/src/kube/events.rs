//! Kubernetes Events (events.k8s.io/v1) for kills, so `kubectl describe pod`
//! and `kubectl get events` show what Kubernetes itself never reports: a
//! worker process OOM-killed while its container lived on.
//!
//! Posting happens on a task of its own behind a bounded queue: a slow or
//! dead API server never holds back the JSON stream, and events it cannot
//! take are counted as enrichment failures. Repeated kills of one container
//! become one Event with a growing series (kube's Recorder does the
//! aggregation; the container is the reference's fieldPath). Posts past the
//! rate limit ([`super::event_rate`]: per node and per container) are
//! dropped, counted and said once a minute.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client,
};
use tokio::sync::mpsc;

use super::event_rate::{Decision, EventRate, Limits};
use crate::{
    enrich::explain::size,
    event::{Constraint, KillKind, OomKillEvent},
    sink::metrics::Metrics,
};

/// Kills waiting to be posted; past this, new ones are counted, not queued.
const QUEUE: usize = 256;
/// The `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "oom-probe";

/// Hands events to the posting task.
pub struct EventPoster {
    queue: mpsc::Sender<(Event, ObjectReference)>,
    metrics: Arc<Metrics>,
    rate: Mutex<EventRate>,
}

impl EventPoster {
    /// Starts the posting task on the current runtime.
    pub fn start(client: Client, node: &str, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: Some(format!("{REPORTING_CONTROLLER}-{node}")),
        };
        let recorder = Recorder::new(client, reporter);
        let (queue, mut pending) = mpsc::channel::<(Event, ObjectReference)>(QUEUE);
        let task_metrics = metrics.clone();
        tokio::spawn(async move {
            let mut warned = false;
            while let Some((event, reference)) = pending.recv().await {
                if let Err(err) = recorder.publish(&event, &reference).await {
                    task_metrics.add_event_post_failure(true);
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!("cannot post a Kubernetes Event ({err}); further failures are only counted");
                    }
                }
            }
        });
        Self {
            queue,
            metrics,
            rate: Mutex::new(EventRate::new(Limits::default(), Instant::now())),
        }
    }

    /// Queues the Events for one kill: on its Pod, and on the Node for a
    /// node-wide OOM.
    /// Posts past the rate limit are dropped and counted
    /// (`oom_probe_event_posts_dropped_total`), and said once a minute.
    pub fn post(&self, kind: KillKind, kill: &OomKillEvent) {
        for event in events_for(kind, kill) {
            let decision = self
                .rate
                .lock()
                .expect("event rate lock")
                .admit(&object_key(&event.1), Instant::now());
            if let Decision::Drop { say } = decision {
                self.metrics.add_event_posts_dropped(1);
                if let Some(dropped) = say {
                    tracing::warn!(
                        "{dropped} Kubernetes Event post(s) dropped by the rate limit (1/s per \
                         node, burst 10; one per 5 s per container, burst 3) since last said; \
                         counted in oom_probe_event_posts_dropped_total"
                    );
                }
                continue;
            }
            if self.queue.try_send(event).is_err() {
                self.metrics.add_event_post_failure(false);
            }
        }
    }
}

/// The object an Event is about, as the key of its rate-limit bucket:
/// kind, namespace, name and fieldPath (a pod's container).
fn object_key(reference: &ObjectReference) -> String {
    let part = |p: &Option<String>| p.clone().unwrap_or_default();
    format!(
        "{}/{}/{}/{}",
        part(&reference.kind),
        part(&reference.namespace),
        part(&reference.name),
        part(&reference.field_path)
    )
}

/// The Events a kill deserves.
fn events_for(kind: KillKind, kill: &OomKillEvent) -> Vec<(Event, ObjectReference)> {
    let mut events = Vec::new();
    if let Some(pod) = pod_event(kind, kill) {
        events.push(pod);
    }
    if kill.constraint == Some(Constraint::Global) && kind == KillKind::OomKill {
        let reference = node_reference(&kill.node);
        let event = Event {
            type_: EventType::Warning,
            reason: "NodeOOMKill".into(),
            note: Some(truncate(format!(
                "node ran out of memory; {}",
                describe(kill)
            ))),
            action: "OOMKill".into(),
            secondary: None,
        };
        events.push((event, reference));
    }
    events
}

/// The Node a node-wide OOM's Event is about, referenced as the kubelet
/// references its own node: `uid` is the node's *name* and there is no
/// namespace. `kubectl describe node` lists the Events whose `regarding`
/// (core/v1 `involvedObject`) has the Node's name, kind, an empty namespace
/// and either the Node's real uid or its name as uid; the name needs no
/// API read (docs/decisions/0105-node-event-reference.md). kube's `Recorder`
/// creates a reference without namespace in `default`, where the kubelet's
/// node Events are.
fn node_reference(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.to_owned()),
        uid: Some(node.to_owned()),
        namespace: None,
        ..ObjectReference::default()
    }
}

fn pod_event(kind: KillKind, kill: &OomKillEvent) -> Option<(Event, ObjectReference)> {
    let k8s = kill.kubernetes.as_ref()?;
    let (namespace, pod) = (k8s.namespace.clone()?, k8s.pod.clone()?);
    let reason = match (kind, kill.silent) {
        (KillKind::UserspaceKill, _) => "UserspaceOOMKilled",
        (_, Some(false)) => "OOMKilled",
        _ => "ProcessOOMKilled",
    };
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace),
        name: Some(pod),
        uid: k8s.pod_uid.clone(),
        // Per-container series, as the kubelet references containers.
        field_path: k8s
            .container
            .as_ref()
            .map(|c| format!("spec.containers{{{c}}}")),
        ..ObjectReference::default()
    };
    let container = k8s.container.as_deref().unwrap_or("?");
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(truncate(format!(
            "container {container}: {}",
            describe(kill)
        ))),
        action: "OOMKill".into(),
        secondary: None,
    };
    Some((event, reference))
}

/// Process, pid, RSS, limit and the explanation, in one line.
fn describe(kill: &OomKillEvent) -> String {
    let victim = &kill.victim;
    let rss = victim
        .rss_bytes
        .map(|r| size(r.anon + r.file + r.shmem))
        .unwrap_or_else(|| "?".into());
    let limit = kill
        .memcg
        .limit_bytes
        .map(size)
        .unwrap_or_else(|| "none".into());
    let mut text = format!(
        "process {} (pid {}) killed, RSS {rss}, limit {limit}",
        victim.comm.as_deref().unwrap_or("?"),
        victim.pid
    );
    if let Some(explanation) = &kill.explanation {
        text.push_str("; ");
        text.push_str(explanation);
    }
    text
}

/// Event notes are limited to 1 kB.
fn truncate(mut note: String) -> String {
    if note.len() > 1024 {
        let mut end = 1021;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Kubernetes, Memcg, Trigger, Victim};

    fn kill(silent: Option<bool>, constraint: Constraint) -> OomKillEvent {
        OomKillEvent {
            time: "t".into(),
            kernel_time_ns: 1,
            node: "node-a".into(),
            victim: Victim {
                pid: 42,
                tid: 42,
                ns_pid: Some(1),
                comm: Some("java".into()),
                uid: Some(0),
                oom_score_adj: Some(0),
                rss_bytes: None,
                total_vm_bytes: None,
                cgroup_id: Some(1),
                cgroup_path: None,
                cgroup_v2_id: None,
                oom_points: None,
                comm_hex: None,
            },
            trigger: Trigger {
                pid: 42,
                comm: "java".into(),
                comm_hex: None,
                tid: 42,
                cgroup_id: None,
                cgroup_path: None,
                kubernetes: None,
            },
            memcg: Memcg {
                usage_bytes: None,
                limit_bytes: Some(1 << 30),
            },
            constraint: Some(constraint),
            constraint_source: None,
            oom_memcg: None,
            memcg_stat: None,
            explanation: Some("victim java (42) RSS 1.0 GiB of the 1.0 GiB limit".into()),
            oom_id: 1,
            group_kill: false,
            kubernetes: Some(Kubernetes {
                namespace: Some("ns".into()),
                pod: Some("app-1".into()),
                container: Some("app".into()),
                ..Kubernetes::default()
            }),
            silent,
            oom_domain_bytes: None,
            container: None,
            memcg_stat_source: None,
            tasks: None,
            tasks_total: None,
            tasks_source: None,
            pressure_before: None,
            signal: None,
            exit: None,
            event_id: String::new(),
            replayed: false,
        }
    }

    #[test]
    fn an_init_kill_is_oomkilled_and_a_worker_kill_is_process_oomkilled() {
        let events = events_for(KillKind::OomKill, &kill(Some(false), Constraint::Memcg));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0.reason, "OOMKilled");
        assert_eq!(
            events[0].1.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(
            events_for(KillKind::OomKill, &kill(Some(true), Constraint::Memcg))[0]
                .0
                .reason,
            "ProcessOOMKilled"
        );
        let note = events[0].0.note.clone().unwrap();
        assert!(
            note.starts_with("container app: process java (pid 42) killed"),
            "{note}"
        );
    }

    #[test]
    fn a_node_wide_oom_also_lands_on_the_node() {
        let events = events_for(KillKind::OomKill, &kill(Some(true), Constraint::Global));
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].1.kind.as_deref(), Some("Node"));
        assert_eq!(events[1].1.name.as_deref(), Some("node-a"));
        assert_eq!(events[1].0.reason, "NodeOOMKill");
    }

    #[test]
    fn the_node_is_referenced_as_the_kubelet_does_uid_is_its_name_no_namespace() {
        let events = events_for(KillKind::OomKill, &kill(Some(true), Constraint::Global));
        let reference = &events[1].1;
        assert_eq!(
            reference,
            &ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some("node-a".into()),
                uid: Some("node-a".into()),
                ..ObjectReference::default()
            }
        );
        assert_eq!(reference.namespace, None);
        // The rate-limit bucket is still the Node's, by name.
        assert_eq!(object_key(reference), "Node//node-a/");
    }

    #[test]
    fn a_kill_outside_any_pod_gets_no_pod_event_and_notes_stay_under_1kb() {
        let mut host = kill(Some(true), Constraint::Memcg);
        host.kubernetes = None;
        assert!(events_for(KillKind::OomKill, &host).is_empty());
        assert_eq!(truncate("é".repeat(1000)).len(), 1023);
    }
}
