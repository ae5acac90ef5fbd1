//! What the store keeps of a Pod, projected from the API object: names,
//! QoS class, owner, containers with their ids and memory request and limit;
//! and the kubelet's eviction of a pod, read off its status.

use std::{collections::BTreeMap, time::SystemTime};

use k8s_openapi::{
    api::core::v1::{ContainerStatus, Pod, ResourceRequirements},
    apimachinery::pkg::api::resource::Quantity,
};

use super::quantity::quantity_bytes;

/// What a store lookup found: the pod, and the container when the id was
/// known. Kept small and owned so that it can go straight into an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMatch {
    /// Namespace and name: how people find the pod (`kubectl -n NS get pod NAME`).
    pub namespace: String,
    pub name: String,
    /// `metadata.uid`, with dashes: tells apart pods that reuse a name.
    pub uid: String,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// `status.qosClass`: `Guaranteed`, `Burstable` or `BestEffort`, which
    /// tells how the kubelet set the pod's cgroup limits and OOM scores.
    pub qos_class: Option<String>,
    /// The controlling owner (else the first owner reference), as the pod
    /// names it: a Deployment's pod reports its ReplicaSet, not resolved
    /// further.
    pub owner: Option<Owner>,
    /// The pod was deleted (it is kept for the retention period).
    pub deleted: bool,
    /// The container's name in the pod spec: what `kubectl logs -c` takes.
    pub container_name: Option<String>,
    /// Which list of the spec the container is in.
    pub container_kind: Option<ContainerKind>,
    /// The matched container id, bare hex (no `containerd://` prefix).
    pub container_id: Option<String>,
    /// Memory request and limit of the matched container in bytes: what the
    /// running container has after an in-place resize, else its spec.
    pub memory_request_bytes: Option<u64>,
    /// `None`: no limit, the container may use the node's memory.
    pub memory_limit_bytes: Option<u64>,
    /// `spec.shareProcessNamespace`: the pod's containers share one pid
    /// namespace whose pid 1 is the pause process, not a container's init.
    pub share_process_namespace: bool,
}

/// Who made the pod, so a kill can be tied to the workload behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job`, `Node` (static pods)...
    pub kind: String,
    /// The owner's name, in the pod's namespace.
    pub name: String,
}

/// Which list of the pod spec a container is in: an init container killed
/// during start-up is a different problem from an app container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerKind {
    /// `spec.containers`.
    Regular,
    /// `spec.initContainers`, sidecars (`restartPolicy: Always`) included.
    Init,
    /// `spec.ephemeralContainers`: `kubectl debug` containers.
    Ephemeral,
}

/// A pod this node's kubelet evicted, sent once per pod: memory-pressure
/// evictions are the kills Kubernetes makes before the kernel has to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// Which pod: namespace, name and uid, as in [`PodMatch`].
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// `status.message`, e.g. "The node was low on resource: memory. ...".
    pub message: Option<String>,
    /// When the kubelet marked the pod for termination (its
    /// `DisruptionTarget` condition), else when the store saw the eviction.
    pub time: SystemTime,
}

/// What the store keeps of a pod: enough to name it, not the whole object.
pub(crate) struct PodSummary {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) node: Option<String>,
    pub(crate) qos_class: Option<String>,
    pub(crate) owner: Option<Owner>,
    pub(crate) containers: Vec<ContainerSummary>,
    pub(crate) share_process_namespace: bool,
}

pub(crate) struct ContainerSummary {
    pub(crate) name: String,
    pub(crate) kind: ContainerKind,
    /// Bare ids, newest first: the current one, then earlier instances.
    pub(crate) ids: Vec<String>,
    pub(crate) memory_request_bytes: Option<u64>,
    pub(crate) memory_limit_bytes: Option<u64>,
}

impl PodSummary {
    pub(crate) fn container_ids(&self) -> impl Iterator<Item = &String> {
        self.containers.iter().flat_map(|c| &c.ids)
    }
}

/// The part of a pod the store keeps; `None` for an object without a uid
/// (never sent by a real server).
pub(crate) fn summarize(pod: &Pod) -> Option<PodSummary> {
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let mut containers = Vec::new();
    if let Some(spec) = &pod.spec {
        let regular = statuses(status.and_then(|s| s.container_statuses.as_ref()));
        for c in &spec.containers {
            containers.push(container(
                ContainerKind::Regular,
                &c.name,
                c.resources.as_ref(),
                regular,
            ));
        }
        let init = statuses(status.and_then(|s| s.init_container_statuses.as_ref()));
        for c in spec.init_containers.iter().flatten() {
            containers.push(container(
                ContainerKind::Init,
                &c.name,
                c.resources.as_ref(),
                init,
            ));
        }
        let ephemeral = statuses(status.and_then(|s| s.ephemeral_container_statuses.as_ref()));
        for c in spec.ephemeral_containers.iter().flatten() {
            containers.push(container(
                ContainerKind::Ephemeral,
                &c.name,
                c.resources.as_ref(),
                ephemeral,
            ));
        }
    }
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or(owners.first())
        .map(|o| Owner {
            kind: o.kind.clone(),
            name: o.name.clone(),
        });
    Some(PodSummary {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone()?,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        qos_class: status.and_then(|s| s.qos_class.clone()),
        owner,
        containers,
        share_process_namespace: pod
            .spec
            .as_ref()
            .and_then(|s| s.share_process_namespace)
            .unwrap_or(false),
    })
}

fn statuses(list: Option<&Vec<ContainerStatus>>) -> &[ContainerStatus] {
    list.map(Vec::as_slice).unwrap_or_default()
}

fn container(
    kind: ContainerKind,
    name: &str,
    spec: Option<&ResourceRequirements>,
    statuses: &[ContainerStatus],
) -> ContainerSummary {
    let status = statuses.iter().find(|s| s.name == name);
    let current = status.and_then(|s| s.container_id.as_deref());
    let previous = status.and_then(|s| {
        s.last_state
            .as_ref()?
            .terminated
            .as_ref()?
            .container_id
            .as_deref()
    });
    let mut ids: Vec<String> = Vec::new();
    for id in current.into_iter().chain(previous).map(bare_container_id) {
        if !id.is_empty() && !ids.iter().any(|known| known == id) {
            ids.push(id.to_owned());
        }
    }
    // After an in-place resize the status has what the container runs with.
    let running = status.and_then(|s| s.resources.as_ref());
    let memory = |pick: fn(&ResourceRequirements) -> Option<&BTreeMap<String, Quantity>>| {
        let of = |r: Option<&ResourceRequirements>| {
            r.and_then(pick)?
                .get("memory")
                .and_then(|q| quantity_bytes(&q.0))
        };
        of(running).or_else(|| of(spec))
    };
    ContainerSummary {
        name: name.to_owned(),
        kind,
        ids,
        memory_request_bytes: memory(|r| r.requests.as_ref()),
        memory_limit_bytes: memory(|r| r.limits.as_ref()),
    }
}

/// The kubelet's eviction of this pod, if it is one.
pub(crate) fn eviction(pod: &Pod) -> Option<Eviction> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Failed") || status.reason.as_deref() != Some("Evicted") {
        return None;
    }
    let marked = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget")
        .and_then(|c| c.last_transition_time.as_ref());
    Some(Eviction {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        pod: pod.metadata.name.clone().unwrap_or_default(),
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        message: status.message.clone(),
        time: marked.map_or_else(SystemTime::now, |t| SystemTime::from(t.0)),
    })
}

/// `containerd://<hex>`, `cri-o://<hex>`, `docker://<hex>` -> `<hex>`.
pub(crate) fn bare_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, bare)| bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_lose_their_runtime_prefix() {
        for (id, bare) in [
            ("containerd://abc123", "abc123"),
            ("cri-o://abc123", "abc123"),
            ("docker://abc123", "abc123"),
            ("abc123", "abc123"),
        ] {
            assert_eq!(bare_container_id(id), bare);
        }
    }
}
