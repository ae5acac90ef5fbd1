//! Names the pod and container of a kill from whatever the node offers, best
//! source last so it wins: the cgroup path (ids, always), the container
//! runtime over CRI (names, no API server needed), the API server's pod store
//! (requests, limits, owner). Each source is optional; none can hold an event
//! back for long (store lookups are in memory, CRI calls are bounded).

use std::{collections::HashSet, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Result;
use tokio::sync::mpsc;

use crate::{
    enrich::cri::{CriClient, CriError},
    event::{EvictedContainer, EvictionEvent, Kubernetes, OomKillEvent},
    kube::{
        client,
        pod::{Eviction, PodMatch},
        quantity::quantity_bytes,
        watch::PodStore,
    },
    sink::metrics::Metrics,
};

/// Where to find the container runtime and the API server.
#[derive(Debug, Default, Clone)]
pub struct SourceOptions {
    /// `--cri-socket`: required to work when given; auto-detected otherwise.
    pub cri_socket: Option<PathBuf>,
    /// `--kubeconfig`; else `$KUBECONFIG`, in-cluster, `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `--no-kubernetes-api`: never talk to an API server.
    pub no_api: bool,
    /// How long pods deleted from the API stay nameable.
    pub retain_deleted: Duration,
}

/// The API server client, unless turned off or not configured (said once).
pub async fn api_client(options: &SourceOptions) -> Option<kube::Client> {
    if options.no_api {
        return None;
    }
    match client::client(options.kubeconfig.clone()).await {
        Ok(client) => Some(client),
        Err(err) => {
            tracing::info!(
                "no Kubernetes API ({err:#}); pods will be named by the container runtime, if one is found"
            );
            None
        }
    }
}

/// The name sources this node has.
pub struct Namer {
    cri: Option<CriClient>,
    pods: Option<PodStore>,
    metrics: Arc<Metrics>,
    /// Sources whose failure was already logged: once, not per event.
    warned: HashSet<&'static str>,
}

impl Namer {
    /// Connects what can be connected; only an explicit `--cri-socket` that
    /// does not work is an error. `api` is the API server client, if any.
    pub async fn connect(
        options: &SourceOptions,
        api: Option<kube::Client>,
        node: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let cri = match CriClient::connect(options.cri_socket.clone()).await {
            Ok(cri) => Some(cri),
            Err(err) if options.cri_socket.is_some() => return Err(err.into()),
            Err(CriError::NoSocket) => None,
            Err(err) => {
                tracing::warn!("container runtime unavailable ({err}); pods are named from the API server only");
                None
            }
        };
        let pods =
            api.map(|client| PodStore::start(client, node.to_string(), options.retain_deleted));
        Ok(Self {
            cri,
            pods,
            metrics,
            warned: HashSet::new(),
        })
    }

    /// The sources in use, for the start-up line.
    pub fn describe(&self) -> String {
        let cri = self
            .cri
            .as_ref()
            .map(|c| format!("{} at {}", c.runtime(), c.socket().display()));
        match (cri, self.pods.is_some()) {
            (Some(cri), true) => format!("pods are named by the Kubernetes API and {cri}"),
            (Some(cri), false) => format!("pods are named by {cri} (no Kubernetes API)"),
            (None, true) => {
                "pods are named by the Kubernetes API (no container runtime found)".into()
            }
            (None, false) => "pods are not named (no Kubernetes API, no container runtime found): \
                 their ids come from cgroup paths"
                .into(),
        }
    }

    /// Pods the kubelet evicts, once per pod (when an API server is in use).
    pub fn take_evictions(&self) -> Option<mpsc::Receiver<Eviction>> {
        self.pods.as_ref()?.take_evictions()
    }

    /// Fills `kill.kubernetes` and `kill.trigger.kubernetes` from the
    /// runtime and the pod store.
    pub async fn name(&mut self, kill: &mut OomKillEvent) {
        if let Some(k8s) = kill.kubernetes.as_mut() {
            let facts = self.name_pod(k8s).await;
            kill.silent = silent_in_pod(kill.victim.pid, kill.silent, &facts);
        }
        if let Some(k8s) = kill.trigger.kubernetes.as_mut() {
            if kill.trigger.cgroup_id == kill.victim.cgroup_id && kill.kubernetes.is_some() {
                // The same container: no second lookup.
                *k8s = kill.kubernetes.clone().unwrap_or_default();
            } else {
                self.name_pod(k8s).await;
            }
        }
        // A node-wide OOM's tasks, each with its pod.
        for task in kill.tasks.iter_mut().flatten() {
            if let Some(k8s) = task.kubernetes.as_mut() {
                self.name_pod(k8s).await;
            }
        }
    }

    /// Fills pod and container names into the ids of `k8s` (read from a
    /// cgroup path), from the same sources as kills (a `memory_pressure`).
    pub async fn name_kubernetes(&mut self, k8s: &mut Kubernetes) {
        self.name_pod(k8s).await;
    }

    /// Fills names (and from the API server requests, limits, owner) into
    /// ids read from a cgroup path; returns what the runtime and the pod
    /// store said of the container's init.
    async fn name_pod(&mut self, k8s: &mut Kubernetes) -> PodFacts {
        let mut init = None;
        let mut shares_pid_namespace = None;
        if let (Some(cri), Some(id)) = (&self.cri, k8s.container_id.clone()) {
            match cri.container(&id).await {
                Ok(found) => {
                    init = Some(ContainerInit {
                        exited: found.exited,
                        init_pid: found.init_pid,
                    });
                    k8s.namespace = found.namespace.or(k8s.namespace.take());
                    k8s.pod = found.pod_name.or(k8s.pod.take());
                    k8s.pod_uid = k8s.pod_uid.take().or(found.pod_uid);
                    k8s.container = Some(found.container_name);
                }
                // The pause container, or a process outside any container.
                Err(CriError::NotFound { .. }) => {}
                Err(err) => self.failed("container runtime", &err.to_string()),
            }
        }
        if let Some(pods) = &self.pods {
            let found = k8s
                .pod_uid
                .clone()
                .and_then(|uid| pods.lookup(&uid, k8s.container_id.as_deref()));
            match found {
                Some(found) => {
                    shares_pid_namespace = Some(found.share_process_namespace);
                    fill_from_pod(k8s, found);
                }
                None => {
                    let why = if pods.is_synced() {
                        "pod not in this node's pod list"
                    } else {
                        "pod list not loaded yet"
                    };
                    self.failed("Kubernetes API", why);
                }
            }
        }
        PodFacts {
            init,
            shares_pid_namespace,
        }
    }

    fn failed(&mut self, source: &'static str, why: &str) {
        self.metrics.add_enrichment_failure();
        if self.warned.insert(source) {
            tracing::warn!(
                "cannot name a pod from the {source} ({why}); further failures are only counted"
            );
        }
    }
}

/// What the runtime and the pod store say of a container's init.
#[derive(Default)]
struct PodFacts {
    /// The runtime's answer, when it gave one.
    init: Option<ContainerInit>,
    /// `spec.shareProcessNamespace`, when the pod store has the pod.
    shares_pid_namespace: Option<bool>,
}

/// `silent` ("the container survives the kill") for a victim in a pod:
/// against the container's own init where the runtime answered; else the
/// pid-namespace rule (`by_pid_namespace`: ns_pid != 1) only when the pod
/// is known not to share one pid namespace (there pid 1 is the pause
/// process); else null: it cannot be known.
fn silent_in_pod(
    victim_pid: u32,
    by_pid_namespace: Option<bool>,
    facts: &PodFacts,
) -> Option<bool> {
    match facts.init {
        Some(ContainerInit { exited: true, .. }) => Some(false),
        Some(ContainerInit {
            init_pid: Some(init),
            ..
        }) => Some(victim_pid != init),
        _ => match facts.shares_pid_namespace {
            Some(false) => by_pid_namespace,
            Some(true) | None => None,
        },
    }
}

/// What the container runtime says of a container's init process.
struct ContainerInit {
    /// The container has exited (its init died: not a silent kill).
    exited: bool,
    /// Its init's pid in the host pid namespace, when running.
    init_pid: Option<u32>,
}

fn fill_from_pod(k8s: &mut Kubernetes, found: PodMatch) {
    k8s.namespace = Some(found.namespace);
    k8s.pod = Some(found.name);
    k8s.container = found.container_name.or(k8s.container.take());
    k8s.qos_class = found.qos_class.or(k8s.qos_class.take());
    k8s.memory_request_bytes = found.memory_request_bytes;
    k8s.memory_limit_bytes = found.memory_limit_bytes;
    if let Some(owner) = found.owner {
        k8s.owner_kind = Some(owner.kind);
        k8s.owner_name = Some(owner.name);
    }
}

/// The `eviction` event for a pod the kubelet evicted.
pub fn eviction_event(eviction: Eviction, node: &str) -> EvictionEvent {
    let containers = eviction
        .message
        .as_deref()
        .map(evicted_containers)
        .unwrap_or_default();
    EvictionEvent {
        time: humantime::format_rfc3339_millis(eviction.time).to_string(),
        node: node.to_string(),
        kubernetes: Kubernetes {
            namespace: Some(eviction.namespace),
            pod: Some(eviction.pod),
            pod_uid: Some(eviction.pod_uid),
            ..Kubernetes::default()
        },
        message: eviction.message,
        containers,
    }
}

/// The kubelet writes `Container <name> was using <usage>, request is
/// <request>, has larger consumption of memory.` for each container.
fn evicted_containers(message: &str) -> Vec<EvictedContainer> {
    message
        .split("Container ")
        .skip(1)
        .filter_map(|part| {
            let (name, rest) = part.split_once(" was using ")?;
            let (usage, rest) = rest.split_once(", request is ")?;
            let request = rest.split([',', ' ']).next()?;
            Some(EvictedContainer {
                name: name.to_string(),
                usage_bytes: quantity_bytes(usage),
                request_bytes: quantity_bytes(request),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_and_request_from_the_kubelet_message() {
        let message = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. \
                       Container app was using 1Gi, request is 512Mi, has larger consumption of memory. \
                       Container sidecar was using 20Mi, request is 0, has larger consumption of memory. ";
        let containers = evicted_containers(message);
        assert_eq!(
            containers,
            vec![
                EvictedContainer {
                    name: "app".into(),
                    usage_bytes: Some(1 << 30),
                    request_bytes: Some(512 << 20)
                },
                EvictedContainer {
                    name: "sidecar".into(),
                    usage_bytes: Some(20 << 20),
                    request_bytes: Some(0)
                },
            ]
        );
        assert!(evicted_containers("The node was low on resource: ephemeral-storage.").is_empty());
    }
}

#[cfg(test)]
mod silent_tests {
    use super::{silent_in_pod, ContainerInit, PodFacts};

    fn facts(init: Option<ContainerInit>, shares: Option<bool>) -> PodFacts {
        PodFacts {
            init,
            shares_pid_namespace: shares,
        }
    }

    fn running(pid: u32) -> Option<ContainerInit> {
        Some(ContainerInit {
            exited: false,
            init_pid: Some(pid),
        })
    }

    #[test]
    fn the_runtimes_init_pid_decides_even_in_a_shared_pid_namespace() {
        // ns_pid says "not pid 1" (silent), but the victim is the init.
        assert_eq!(
            silent_in_pod(50, Some(true), &facts(running(50), Some(true))),
            Some(false)
        );
        assert_eq!(
            silent_in_pod(51, Some(true), &facts(running(50), None)),
            Some(true)
        );
        let exited = Some(ContainerInit {
            exited: true,
            init_pid: None,
        });
        assert_eq!(
            silent_in_pod(51, Some(true), &facts(exited, None)),
            Some(false)
        );
    }

    #[test]
    fn without_the_runtime_the_pid_namespace_decides_only_where_the_pod_has_its_own() {
        assert_eq!(
            silent_in_pod(51, Some(true), &facts(None, Some(false))),
            Some(true)
        );
        assert_eq!(
            silent_in_pod(51, Some(false), &facts(None, Some(false))),
            Some(false)
        );
        // Shared pid namespace, or nothing known of the pod: cannot tell.
        assert_eq!(
            silent_in_pod(51, Some(true), &facts(None, Some(true))),
            None
        );
        assert_eq!(silent_in_pod(51, Some(true), &facts(None, None)), None);
    }
}
