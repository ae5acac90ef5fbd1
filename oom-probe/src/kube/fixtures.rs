//! Pods the store tests use: a Deployment's pod with every kind of
//! container (the test-support crate's, which the pod watch's end-to-end
//! tests use too), and what a lookup of it must give.

pub use oom_probe_test_support::{
    apiserver::pod,
    pods::{container_status, web_pod, APP_ID, DEBUG_ID, INIT_ID, SIDECAR_ID, UID},
};

use super::pod::{ContainerKind, Owner, PodMatch};

pub const MIB: u64 = 1 << 20;

/// What a lookup of [`web_pod`]'s `container` must give.
pub fn web_match(
    container: &str,
    kind: ContainerKind,
    id: &str,
    request: Option<u64>,
    limit: Option<u64>,
) -> PodMatch {
    PodMatch {
        namespace: "shop".into(),
        name: "web-7d9f8-x2x4q".into(),
        uid: UID.into(),
        node: Some("node-a".into()),
        qos_class: Some("Burstable".into()),
        owner: Some(Owner {
            kind: "ReplicaSet".into(),
            name: "web-7d9f8".into(),
        }),
        deleted: false,
        container_name: Some(container.into()),
        container_kind: Some(kind),
        container_id: Some(id.into()),
        memory_request_bytes: request,
        memory_limit_bytes: limit,
        share_process_namespace: false,
    }
}
