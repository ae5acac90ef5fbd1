//! Pods the store and watch tests share: a Deployment's pod with every
//! kind of container, and what a lookup of it must give.

use serde_json::{json, Value};

pub use oom_probe_test_support::apiserver::pod;

use super::pod::{ContainerKind, Owner, PodMatch};

pub const APP_ID: &str = "5c3d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
pub const SIDECAR_ID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
pub const INIT_ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub const DEBUG_ID: &str = "deadbeef00112233445566778899aabbccddeeff00112233445566778899aabb";
pub const UID: &str = "7b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
pub const MIB: u64 = 1 << 20;

/// A running container's status entry with this id.
pub fn container_status(name: &str, id: &str) -> Value {
    json!({"name": name, "containerID": id, "image": "img", "imageID": "", "ready": true,
           "restartCount": 0, "state": {"running": {}}})
}

/// A Deployment's pod on node-a: two app containers, an init container,
/// an ephemeral debug container, each with a different runtime's id.
pub fn web_pod() -> Value {
    let mut web = pod("shop", "web-7d9f8-x2x4q", UID, "node-a");
    web["metadata"]["ownerReferences"] = json!([
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8",
         "uid": "11111111-2222-3333-4444-555555555555", "controller": true}
    ]);
    web["spec"]["initContainers"] = json!([
        {"name": "migrate", "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "64Mi"}}}
    ]);
    web["spec"]["containers"] = json!([
        {"name": "app", "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "1.5Gi"}}},
        {"name": "sidecar", "resources": {"requests": {"memory": "100000k"}}}
    ]);
    web["spec"]["ephemeralContainers"] = json!([{"name": "debugger"}]);
    web["status"] = json!({
        "phase": "Running",
        "qosClass": "Burstable",
        "initContainerStatuses": [container_status("migrate", &format!("cri-o://{INIT_ID}"))],
        "containerStatuses": [
            container_status("app", &format!("containerd://{APP_ID}")),
            container_status("sidecar", &format!("docker://{SIDECAR_ID}")),
        ],
        "ephemeralContainerStatuses": [container_status("debugger", &format!("containerd://{DEBUG_ID}"))],
    });
    web
}

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
