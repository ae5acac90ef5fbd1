//! Naming pods through the real kube client, against a local API server over
//! real HTTP on loopback: the kernel kills a process in a cgroup laid out as
//! the kubelet lays out a pod's, and the event must carry the pod's names,
//! resources and owner, also right after the pod was deleted.

use std::time::{Duration, Instant};

use oom_probe_test_support::{
    apiserver::{pod, ApiServer},
    root_or_skip, run_hog_with_child, MemoryCgroup, Watcher,
};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
const NODE: &str = "node-e2e";
const UID: &str = "7c1d4a2e-5b6f-4a8b-9c0d-e1f2a3b4c5d6";

fn checkout_pod(container_id: &str) -> Value {
    let mut pod = pod("shop", "checkout-7d9f8-abcde", UID, NODE);
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d9f8", "uid": "x", "controller": true}]);
    pod["spec"]["containers"] = json!([{
        "name": "worker",
        "image": "shop/checkout",
        "resources": {"requests": {"memory": "32Mi"}, "limits": {"memory": "48Mi"}},
    }]);
    pod["status"]["qosClass"] = json!("Burstable");
    pod["status"]["containerStatuses"] = json!([{
        "name": "worker", "containerID": format!("containerd://{container_id}"),
        "image": "shop/checkout", "imageID": "", "ready": true, "restartCount": 0,
        "state": {"running": {}},
    }]);
    pod
}

fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_api_server_names_the_pod_even_right_after_it_was_deleted() {
    if !root_or_skip("the_api_server_names_the_pod_even_right_after_it_was_deleted") {
        return;
    }
    let container_id = "3f".repeat(32);
    let server = ApiServer::start().unwrap();
    server.apply_pod(checkout_pod(&container_id));
    server.apply_pod(pod(
        "other",
        "elsewhere",
        "11111111-2222-3333-4444-555555555555",
        "node-other",
    ));

    // The kubelet's cgroupfs layout, below a test cgroup of our own.
    let root = MemoryCgroup::create(256 * MIB).unwrap();
    let kubepods = root.create_child_named("kubepods", None).unwrap();
    let burstable = kubepods.create_child_named("burstable", None).unwrap();
    let pod_cgroup = burstable
        .create_child_named(&format!("pod{UID}"), None)
        .unwrap();
    let container = pod_cgroup
        .create_child_named(&container_id, Some(48 * MIB))
        .unwrap();

    let kubeconfig = server.kubeconfig().to_str().unwrap().to_string();
    let mut watcher = Watcher::start(&["--kubeconfig", &kubeconfig, "--node-name", NODE]).unwrap();
    // A person filtering on another namespace, and on this very container.
    let filtered_out = [
        "--kubeconfig",
        &kubeconfig,
        "--node-name",
        NODE,
        "--no-events",
        "--namespace",
        "other",
    ];
    let mut other_namespace = Watcher::start(&filtered_out).unwrap();
    let this_container = [
        "--kubeconfig",
        &kubeconfig,
        "--node-name",
        NODE,
        "--no-events",
    ];
    let this_container = [
        &this_container[..],
        &[
            "--namespace",
            "shop",
            "--pod",
            "checkout-7d9f8-abcde",
            "--container",
            "worker",
        ],
    ]
    .concat();
    let mut filtered_in = Watcher::start(&this_container).unwrap();
    let watching = || {
        server
            .requests()
            .iter()
            .any(|r| r.query("watch") == Some("true"))
    };
    wait_until("oom-probe watches the pods", watching);

    let (pid, _) = run_hog_with_child(&container, "--fork", "checkout-wrk", 256).unwrap();
    let event = &watcher
        .events_for(container.relative_path(), 1, Duration::from_millis(500))
        .unwrap()[0];
    assert_eq!(event["victim"]["pid"], pid, "{event:#}");
    let k8s = &event["kubernetes"];
    assert_eq!(k8s["namespace"], "shop", "{event:#}");
    assert_eq!(k8s["pod"], "checkout-7d9f8-abcde", "{event:#}");
    assert_eq!(k8s["pod_uid"], UID, "{event:#}");
    assert_eq!(k8s["container"], "worker", "{event:#}");
    assert_eq!(k8s["container_id"], container_id, "{event:#}");
    assert_eq!(k8s["qos_class"], "Burstable", "{event:#}");
    assert_eq!(k8s["memory_request_bytes"], 32 * MIB, "{event:#}");
    assert_eq!(k8s["memory_limit_bytes"], 48 * MIB, "{event:#}");
    assert_eq!(k8s["owner_kind"], "ReplicaSet", "{event:#}");
    assert_eq!(k8s["owner_name"], "checkout-7d9f8", "{event:#}");
    assert_eq!(event["silent"], true, "{event:#}");
    assert_eq!(
        filtered_in
            .events_for(container.relative_path(), 1, Duration::ZERO)
            .unwrap()
            .len(),
        1
    );
    let shown = other_namespace.events_within(Duration::from_secs(1), |_| true);
    assert!(
        shown.is_empty(),
        "--namespace other must hide this kill: {shown:#?}"
    );
    drop((filtered_in, other_namespace));

    // The pod goes away with its kill; the next kill is still named.
    server.delete_pod("shop", "checkout-7d9f8-abcde").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    run_hog_with_child(&container, "--fork", "checkout-wrk", 256).unwrap();
    let event = &watcher
        .events_for(container.relative_path(), 1, Duration::from_millis(500))
        .unwrap()[0];
    assert_eq!(
        event["kubernetes"]["pod"], "checkout-7d9f8-abcde",
        "{event:#}"
    );
    assert_eq!(event["kubernetes"]["container"], "worker", "{event:#}");

    // One Warning Event on the Pod, per container, and a series for the repeat.
    let events: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/apis/events.k8s.io/"))
        .collect();
    let posts: Vec<_> = events.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1, "{events:#?}");
    assert_eq!(
        posts[0].path,
        "/apis/events.k8s.io/v1/namespaces/shop/events"
    );
    let body: Value = serde_json::from_str(&posts[0].body).unwrap();
    assert_eq!(body["reason"], "ProcessOOMKilled", "{body:#}");
    assert_eq!(body["type"], "Warning", "{body:#}");
    assert_eq!(body["reportingController"], "oom-probe", "{body:#}");
    assert_eq!(
        body["reportingInstance"],
        format!("oom-probe-{NODE}"),
        "{body:#}"
    );
    assert_eq!(body["regarding"]["kind"], "Pod", "{body:#}");
    assert_eq!(
        body["regarding"]["name"], "checkout-7d9f8-abcde",
        "{body:#}"
    );
    assert_eq!(body["regarding"]["uid"], UID, "{body:#}");
    assert_eq!(
        body["regarding"]["fieldPath"], "spec.containers{worker}",
        "{body:#}"
    );
    let note = body["note"].as_str().unwrap();
    assert!(
        note.starts_with("container worker: process checkout-wrk (pid "),
        "{note}"
    );
    assert!(note.contains("limit 48 MiB"), "{note}");
    let patches: Vec<_> = events.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(
        patches.len(),
        1,
        "the second kill extends the series: {events:#?}"
    );
    let patch: Value = serde_json::from_str(&patches[0].body).unwrap();
    assert_eq!(patch["series"]["count"], 2, "{patch:#}");

    // The deployed ClusterRole grants exactly what this run used.
    let used = oom_probe_test_support::rbac::permissions_used(&server.requests());
    assert_eq!(
        used,
        deployed_cluster_role(),
        "deploy/base/rbac.yaml must grant exactly what the code uses"
    );

    // Only this node's pods were ever asked for.
    for request in server
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/pods")
    {
        assert_eq!(
            request.query("fieldSelector"),
            Some("spec.nodeName=node-e2e"),
            "{request:?}"
        );
    }
    drop(watcher);
    drop((container, pod_cgroup, burstable, kubepods));
}

#[test]
fn a_dead_api_server_does_not_hold_events_back() {
    if !root_or_skip("a_dead_api_server_does_not_hold_events_back") {
        return;
    }
    let kubeconfig = oom_probe_test_support::apiserver::KubeconfigFile::for_server(
        &oom_probe_test_support::apiserver::unreachable_url().unwrap(),
    )
    .unwrap();
    let cgroup = MemoryCgroup::create(32 * MIB).unwrap();
    let mut watcher = Watcher::start(&[
        "--kubeconfig",
        kubeconfig.path().to_str().unwrap(),
        "--node-name",
        NODE,
    ])
    .unwrap();
    let (pid, _) = run_hog_with_child(&cgroup, "--fork", "no-api-hog", 128).unwrap();
    let event = &watcher
        .events_for(cgroup.relative_path(), 1, Duration::from_millis(500))
        .unwrap()[0];
    assert_eq!(event["victim"]["pid"], pid, "{event:#}");
    assert_eq!(
        event["kubernetes"],
        Value::Null,
        "not a pod's cgroup: {event:#}"
    );
    watcher
        .wait_for_stderr("kubernetes API unreachable", Duration::from_secs(30))
        .unwrap();
}

/// The (group, resource, verb) triples deploy/base/rbac.yaml's ClusterRole grants.
fn deployed_cluster_role() -> std::collections::BTreeSet<oom_probe_test_support::rbac::Permission> {
    // Compiled in, so the check runs in the kernel-matrix VM too.
    let text = include_str!("../deploy/base/rbac.yaml");
    let role = serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let mut granted = std::collections::BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let text = |v: &Value| v.as_str().unwrap().to_string();
                    granted.insert((text(group), text(resource), text(verb)));
                }
            }
        }
    }
    granted
}

#[test]
fn a_kubelet_eviction_is_reported_in_the_same_stream() {
    if !root_or_skip("a_kubelet_eviction_is_reported_in_the_same_stream") {
        return;
    }
    let server = ApiServer::start().unwrap();
    let uid = "9a8b7c6d-0000-4000-8000-000000000001";
    server.apply_pod(pod("batch", "report-job-x1", uid, NODE));
    let kubeconfig = server.kubeconfig().to_str().unwrap().to_string();
    let mut watcher = Watcher::start(&[
        "--kubeconfig",
        &kubeconfig,
        "--node-name",
        NODE,
        "--no-events",
    ])
    .unwrap();
    wait_until("oom-probe watches the pods", || {
        server
            .requests()
            .iter()
            .any(|r| r.query("watch") == Some("true"))
    });
    // What the kubelet writes when it evicts for memory pressure.
    let mut evicted = pod("batch", "report-job-x1", uid, NODE);
    evicted["status"] = json!({
        "phase": "Failed",
        "reason": "Evicted",
        "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. \
                    Container report was using 1536Mi, request is 256Mi, has larger consumption of memory. ",
    });
    server.apply_pod(evicted);
    let events = watcher
        .events_matching(1, Duration::from_millis(500), |e| e["type"] == "eviction")
        .unwrap();
    assert_eq!(events.len(), 1, "once per pod: {events:#?}");
    let event = &events[0];
    assert_eq!(event["kubernetes"]["namespace"], "batch", "{event:#}");
    assert_eq!(event["kubernetes"]["pod"], "report-job-x1", "{event:#}");
    assert_eq!(event["kubernetes"]["pod_uid"], uid, "{event:#}");
    assert_eq!(event["node"], NODE, "{event:#}");
    assert_eq!(event["containers"][0]["name"], "report", "{event:#}");
    assert_eq!(
        event["containers"][0]["usage_bytes"],
        1536 * MIB,
        "{event:#}"
    );
    assert_eq!(
        event["containers"][0]["request_bytes"],
        256 * MIB,
        "{event:#}"
    );
    assert!(event["message"]
        .as_str()
        .unwrap()
        .starts_with("The node was low on resource: memory."));
}
