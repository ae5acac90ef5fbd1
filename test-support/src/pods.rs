//! Pod objects the pod store's unit tests and the pod watch's end-to-end
//! tests share: a Deployment's pod with every kind of container, each with
//! a different runtime's container id, as the API server would serve it.

use serde_json::{json, Value};

use crate::apiserver::pod;

/// The container id (64 hex digits) of [`web_pod`]'s `app` container,
/// run by containerd.
pub const APP_ID: &str = "5c3d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
/// The container id of [`web_pod`]'s `sidecar` container, run by Docker.
pub const SIDECAR_ID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
/// The container id of [`web_pod`]'s init container `migrate`, run by CRI-O.
pub const INIT_ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// The container id of [`web_pod`]'s ephemeral container `debugger`, run
/// by containerd.
pub const DEBUG_ID: &str = "deadbeef00112233445566778899aabbccddeeff00112233445566778899aabb";
/// [`web_pod`]'s uid (`metadata.uid`).
pub const UID: &str = "7b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

/// A running container's status entry (`status.containerStatuses[]`) with
/// this name and id (`<runtime>://<64 hex digits>`).
pub fn container_status(name: &str, id: &str) -> Value {
    json!({"name": name, "containerID": id, "image": "img", "imageID": "", "ready": true,
           "restartCount": 0, "state": {"running": {}}})
}

/// A Deployment's pod `shop/web-7d9f8-x2x4q` on node-a: two app
/// containers, an init container, an ephemeral debug container, each with
/// a different runtime's id; memory requests and limits in three notations
/// (`128Mi`, `1.5Gi`, `100000k`).
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
