//! oom-probe's Kubernetes API client and its watch of this node's pods
//! (`oom_probe::kube::{client, watch}`), against a real HTTP API server on
//! 127.0.0.1 (the test-support crate's `apiserver`), through the real kube
//! client and watcher. No root needed: no eBPF, no cgroup.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use oom_probe::kube::{client::client, pod::Eviction, store, watch::PodStore};
use oom_probe_test_support::{
    apiserver::{pod, unreachable_url, ApiServer, KubeconfigFile},
    pods::{web_pod, APP_ID, UID},
};
use serde_json::json;

#[tokio::test]
async fn client_reads_a_kubeconfig_and_names_a_bad_one() {
    let server = ApiServer::start().unwrap();
    server.apply_pod(pod("shop", "web-7d9f8-x2x4q", UID, "node-a"));
    let client = client(Some(server.kubeconfig().to_owned())).await.unwrap();
    let fetched = Api::<Pod>::namespaced(client, "shop")
        .get("web-7d9f8-x2x4q")
        .await
        .unwrap();
    assert_eq!(fetched.metadata.uid.as_deref(), Some(UID));
    let last = server.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("GET", "/api/v1/namespaces/shop/pods/web-7d9f8-x2x4q")
    );

    let missing = PathBuf::from("/nonexistent/oom-probe/kubeconfig");
    let err = format!(
        "{:#}",
        oom_probe::kube::client::client(Some(missing))
            .await
            .err()
            .unwrap()
    );
    assert!(
        err.contains("cannot read kubeconfig /nonexistent/oom-probe/kubeconfig"),
        "{err}"
    );
}

/// Lines logged while the test ran (this thread's tracing output: a
/// `tokio::test` runs its spawned tasks on its own thread).
#[derive(Clone, Debug, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0
            .lock()
            .unwrap()
            .extend(text.lines().map(str::to_owned));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap()
    }
}

/// Captures this thread's logs until the guard is dropped.
fn capture_logs() -> (Lines, tracing::subscriber::DefaultGuard) {
    let lines = Lines::default();
    let sink = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_env_filter(oom_probe::DEFAULT_LOG_FILTER)
        .with_writer(move || sink.clone())
        .finish();
    (lines, tracing::subscriber::set_default(subscriber))
}

async fn store_at(kubeconfig: &Path, node: &str, retain: Duration) -> PodStore {
    let client = client(Some(kubeconfig.to_owned())).await.unwrap();
    PodStore::start(client, node.to_owned(), retain)
}

/// A store for `node` that has its first list in.
async fn synced_store(server: &ApiServer, node: &str, retain: Duration) -> PodStore {
    let store = store_at(server.kubeconfig(), node, retain).await;
    until("the first list", || store.is_synced().then_some(())).await;
    store
}

/// Polls `probe` until it gives a value; fails the test after 20 s.
async fn until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn watches_only_this_nodes_pods() {
    let server = ApiServer::start().unwrap();
    server.apply_pod(pod(
        "shop",
        "here-1",
        "00000000-0000-0000-0000-00000000000a",
        "node-a",
    ));
    server.apply_pod(pod(
        "shop",
        "there-1",
        "00000000-0000-0000-0000-00000000000b",
        "node-b",
    ));
    let (lines, _logs) = capture_logs();
    let store = synced_store(&server, "node-a", store::DEFAULT_RETAIN_DELETED).await;
    assert_eq!(
        store
            .lookup("00000000-0000-0000-0000-00000000000a", None)
            .unwrap()
            .name,
        "here-1"
    );
    assert_eq!(
        store.lookup("00000000-0000-0000-0000-00000000000b", None),
        None
    );

    // Pods created while the watch is open arrive in order.
    server.apply_pod(pod(
        "shop",
        "there-2",
        "00000000-0000-0000-0000-00000000000c",
        "node-b",
    ));
    server.apply_pod(pod(
        "shop",
        "here-2",
        "00000000-0000-0000-0000-00000000000d",
        "node-a",
    ));
    until("here-2", || {
        store.lookup("00000000-0000-0000-0000-00000000000d", None)
    })
    .await;
    assert_eq!(
        store.lookup("00000000-0000-0000-0000-00000000000c", None),
        None
    );

    let requests = server.requests();
    assert!(
        requests.iter().any(|r| r.query("watch").is_none()),
        "a list: {requests:#?}"
    );
    assert!(
        requests.iter().any(|r| r.query("watch") == Some("true")),
        "a watch: {requests:#?}"
    );
    for request in &requests {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("GET", "/api/v1/pods")
        );
        assert_eq!(
            request.query("fieldSelector"),
            Some("spec.nodeName=node-a"),
            "{request:#?}"
        );
    }
    assert!(lines.lock().is_empty(), "{lines:?}");
}

#[tokio::test]
async fn unreachable_api_server_warns_once_and_lookups_answer_at_once() {
    let kubeconfig = KubeconfigFile::for_server(&unreachable_url().unwrap()).unwrap();
    let (lines, _logs) = capture_logs();
    let store = store_at(kubeconfig.path(), "node-a", store::DEFAULT_RETAIN_DELETED).await;
    // Straight away, with the watch failing: an answer, not a wait.
    assert_eq!(store.lookup(UID, Some(APP_ID)), None);
    assert_eq!(store.lookup_by_container_id(APP_ID), None);

    until("three failed attempts", || {
        (store.api_errors() >= 3).then_some(())
    })
    .await;
    assert!(!store.is_synced());
    let lines = lines.lock().clone();
    assert_eq!(lines.len(), 1, "one warning, not one per retry: {lines:#?}");
    assert!(
        lines[0].starts_with(" WARN kubernetes API unreachable (")
            && lines[0].ends_with("): events carry ids from the cgroup path only"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("Connection refused"),
        "says why: {}",
        lines[0]
    );
    assert_eq!(store.lookup(UID, None), None);
}

#[tokio::test]
async fn outage_keeps_known_pods_and_a_relist_catches_up() {
    let server = ApiServer::start().unwrap();
    server.apply_pod(web_pod());
    server.apply_pod(pod(
        "shop",
        "batch-1",
        "00000000-0000-0000-0000-0000000000b1",
        "node-a",
    ));
    let (lines, _logs) = capture_logs();
    let store = synced_store(&server, "node-a", store::DEFAULT_RETAIN_DELETED).await;

    // 500, not 503: the kube client retries 429, 503 and 504 itself.
    server.fail_requests(Some(500));
    until("failed attempts", || {
        (store.api_errors() >= 2).then_some(())
    })
    .await;
    // What the store knew still names kills.
    assert_eq!(
        store
            .lookup(UID, Some(APP_ID))
            .unwrap()
            .container_name
            .as_deref(),
        Some("app")
    );

    // Meanwhile one pod goes, one comes, and the server forgets the
    // history, so the watch cannot resume: it must relist.
    server.delete_pod("shop", "batch-1").unwrap();
    server.apply_pod(pod(
        "shop",
        "batch-2",
        "00000000-0000-0000-0000-0000000000b2",
        "node-a",
    ));
    server.forget_history();
    server.fail_requests(None);

    until("the relist", || {
        store.lookup("00000000-0000-0000-0000-0000000000b2", None)
    })
    .await;
    let gone = store
        .lookup("00000000-0000-0000-0000-0000000000b1", None)
        .unwrap();
    assert!(
        gone.deleted,
        "missing from the relist: deleted, still named: {gone:?}"
    );
    assert!(!store.lookup(UID, None).unwrap().deleted);
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.query("watch").is_none())
        .count();
    assert_eq!(
        lists,
        2,
        "the first list and the relist: {:#?}",
        server.requests()
    );
    let lines = lines.lock().clone();
    assert_eq!(
        lines.len(),
        1,
        "one warning for the outage, none for the relist: {lines:#?}"
    );
    assert!(
        lines[0].contains(
            "kubernetes API unreachable (watching pods: HTTP 500 InternalError: \
             the test made this server fail)"
        ),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn evicted_pod_is_reported_once() {
    let server = ApiServer::start().unwrap();
    // Evicted before oom-probe started: old news, not reported.
    let mut old = pod(
        "shop",
        "old-evicted",
        "00000000-0000-0000-0000-0000000000e0",
        "node-a",
    );
    old["status"] = json!({"phase": "Failed", "reason": "Evicted", "message": "long ago"});
    server.apply_pod(old);
    let mut web = server.apply_pod(web_pod());
    let store = synced_store(&server, "node-a", store::DEFAULT_RETAIN_DELETED).await;
    let mut evictions = store.take_evictions().unwrap();
    assert!(store.take_evictions().is_none(), "one reader");

    let message =
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 90Mi.";
    web["status"]["phase"] = json!("Failed");
    web["status"]["reason"] = json!("Evicted");
    web["status"]["message"] = json!(message);
    web["status"]["conditions"] = json!([{"type": "DisruptionTarget", "status": "True",
        "reason": "TerminationByKubelet", "lastTransitionTime": "2026-11-23T10:00:01Z"}]);
    let web = server.apply_pod(web);
    let eviction = tokio::time::timeout(Duration::from_secs(20), evictions.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        eviction,
        Eviction {
            namespace: "shop".into(),
            pod: "web-7d9f8-x2x4q".into(),
            pod_uid: UID.into(),
            message: Some(message.into()),
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_428_001),
        }
    );

    // More updates of the evicted pod, then its deletion: no second report.
    let mut later = web.clone();
    later["status"]["containerStatuses"][1]["ready"] = json!(false);
    server.apply_pod(later);
    server.delete_pod("shop", "web-7d9f8-x2x4q").unwrap();
    until("the deletion", || {
        store.lookup(UID, None).filter(|m| m.deleted)
    })
    .await;
    assert!(evictions.try_recv().is_err(), "evicted once, reported once");
}

/// A node-wide OOM's Event on the Node, posted through kube's `Recorder` to
/// the API server: referenced as the kubelet references its node (`uid` =
/// the node's name, no namespace), so `kubectl describe node` lists it, and
/// created in `default`, where the kubelet's node Events are.
#[tokio::test]
async fn a_node_wide_oom_event_references_the_node_as_the_kubelet_does() {
    use oom_probe::{
        event::{Event, KillKind},
        kube::events::EventPoster,
        sink::metrics::Metrics,
    };
    let server = ApiServer::start().unwrap();
    let client = client(Some(server.kubeconfig().to_owned())).await.unwrap();
    let metrics = Arc::new(Metrics::new(Duration::from_secs(600)));
    let poster = EventPoster::start(client, "node-a", metrics);
    // The golden file's kill, made node-wide on node-a.
    let golden = include_str!("../oom-probe/src/testdata/events.golden.jsonl");
    let mut line: serde_json::Value = serde_json::from_str(golden.lines().next().unwrap()).unwrap();
    line["node"] = json!("node-a");
    line["constraint"] = json!("global");
    let Event::OomKill(kill) = serde_json::from_value(line).unwrap() else {
        panic!("the golden file's first line is an oom_kill");
    };
    poster.post(KillKind::OomKill, &kill);

    let post = until("the NodeOOMKill post", || {
        server
            .requests()
            .into_iter()
            .find(|r| r.method == "POST" && r.body.contains("\"reason\":\"NodeOOMKill\""))
    })
    .await;
    assert_eq!(
        post.path, "/apis/events.k8s.io/v1/namespaces/default/events",
        "{post:#?}"
    );
    let body: serde_json::Value = serde_json::from_str(&post.body).unwrap();
    let regarding = &body["regarding"];
    assert_eq!(regarding["kind"], "Node", "{body:#}");
    assert_eq!(regarding["name"], "node-a", "{body:#}");
    assert_eq!(regarding["uid"], "node-a", "{body:#}");
    assert_eq!(
        regarding.get("namespace"),
        None,
        "kubectl describe node selects involvedObject.namespace=\"\": {body:#}"
    );
    // The Event lives in `default` by its URL (kube's Recorder leaves
    // metadata.namespace unset for a reference without namespace).
    assert!(
        matches!(
            body["metadata"].get("namespace"),
            None | Some(serde_json::Value::Null)
        ),
        "{body:#}"
    );
}
