//! Keeps the pod [`store`](super::store) current: a watch of this node's
//! pods in the background, so that each OOM kill is named from memory and
//! never waits for the API server, which may be slow, down, or not
//! configured at all.
//!
//! Only this node's pods are watched (`fieldSelector=spec.nodeName=<node>`):
//! the API server never sends the rest of the cluster, so memory and API load
//! grow with the node, not the cluster. An outage is logged once (a "410
//! Gone" relist is routine and logs nothing) and counted.
//!
//! Over 500 lines for its tests against the local API server; the code is
//! about 240.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};
use tokio::{
    sync::mpsc::{self, error::TrySendError},
    task::JoinHandle,
    time::MissedTickBehavior,
};

use super::{
    pod::{Eviction, PodMatch},
    store::{self, Store, Writer},
};

/// Evictions waiting for their reader; past that they are dropped with a
/// warning rather than held without bound.
const EVICTION_QUEUE: usize = 256;

/// Bounds of the period at which expired deleted pods are dropped.
const MIN_SWEEP: Duration = Duration::from_secs(1);
const MAX_SWEEP: Duration = Duration::from_secs(60);

/// This node's pods, kept current by a watch in the background.
pub struct PodStore {
    store: Store,
    errors: Arc<AtomicU64>,
    evictions_wanted: Arc<AtomicBool>,
    evictions: Mutex<Option<mpsc::Receiver<Eviction>>>,
    task: JoinHandle<()>,
}

impl PodStore {
    /// Starts watching `node`'s pods on the current tokio runtime and returns
    /// at once: lookups answer `None` until the first list arrives, and never
    /// wait for it. An unreachable API server is logged once (`tracing`
    /// warning) and retried with backoff. Deleted pods are kept for
    /// `retain_deleted`. `node` must be the node's name (`spec.nodeName`).
    /// Panics outside a tokio runtime.
    pub fn start(client: Client, node: String, retain_deleted: Duration) -> PodStore {
        let (evictions_tx, evictions_rx) = mpsc::channel(EVICTION_QUEUE);
        let (store, writer) = store::store(retain_deleted);
        let errors = Arc::new(AtomicU64::new(0));
        let evictions_wanted = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(watch_pods(
            Api::all(client),
            node,
            writer,
            Feedback {
                errors: Arc::clone(&errors),
                evictions_wanted: Arc::clone(&evictions_wanted),
                evictions: evictions_tx,
            },
            retain_deleted,
        ));
        PodStore {
            store,
            errors,
            evictions_wanted,
            evictions: Mutex::new(Some(evictions_rx)),
            task,
        }
    }

    /// [`Store::lookup`] as of now.
    pub fn lookup(&self, pod_uid: &str, container_id: Option<&str>) -> Option<PodMatch> {
        self.store.lookup(pod_uid, container_id, Instant::now())
    }

    /// [`Store::lookup_by_container_id`] as of now.
    pub fn lookup_by_container_id(&self, container_id: &str) -> Option<PodMatch> {
        self.store
            .lookup_by_container_id(container_id, Instant::now())
    }

    /// True once the first full list of the node's pods is in.
    pub fn is_synced(&self) -> bool {
        self.store.is_synced()
    }

    /// Failed list and watch attempts so far, for health reporting: the
    /// warning is logged only once per outage.
    pub fn api_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The evictions of this node's pods, each once, from now on: `Some`
    /// the first time only. Pods already evicted when the store first listed
    /// them are not reported (they are old news), nor are evictions seen
    /// before this is called.
    pub fn take_evictions(&self) -> Option<mpsc::Receiver<Eviction>> {
        let receiver = self
            .evictions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if receiver.is_some() {
            self.evictions_wanted.store(true, Ordering::Relaxed);
        }
        receiver
    }
}

impl Drop for PodStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the watch task reports back besides the store.
struct Feedback {
    errors: Arc<AtomicU64>,
    evictions_wanted: Arc<AtomicBool>,
    evictions: mpsc::Sender<Eviction>,
}

/// Follows the node's pods until the store is dropped. The watcher lists,
/// then watches from the list's version, and relists when the server says
/// the version is too old; its errors come back after a backoff.
async fn watch_pods(
    api: Api<Pod>,
    node: String,
    mut writer: Writer,
    feedback: Feedback,
    retain: Duration,
) {
    // Lists come in pages of LIST_PAGE pods: a page is decoded into full
    // `Pod` objects before the store keeps its summaries, so the page size
    // bounds that transient heap (kube's default is 500).
    let config = watcher::Config::default()
        .fields(&format!("spec.nodeName={node}"))
        .page_size(LIST_PAGE);
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut sweep = tokio::time::interval(retain.clamp(MIN_SWEEP, MAX_SWEEP));
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = sweep.tick() => {
                writer.expire(Instant::now());
                continue;
            }
        };
        let event = match event {
            Some(Ok(event)) => event,
            // "Too old resource version": routine, the watcher relists.
            Some(Err(watcher::Error::WatchError(status))) if status.code == 410 => continue,
            Some(Err(err)) => {
                feedback.errors.fetch_add(1, Ordering::Relaxed);
                if !warned {
                    warned = true;
                    tracing::warn!(
                        "kubernetes API unreachable ({}): events carry ids from the cgroup path only",
                        describe(&err)
                    );
                }
                continue;
            }
            None => return,
        };
        // `Init` comes before every list attempt, failed ones too: only data
        // shows the server is back.
        if !matches!(event, watcher::Event::Init) {
            warned = false;
        }
        if let Some(eviction) = writer.apply(&event, Instant::now()) {
            if feedback.evictions_wanted.load(Ordering::Relaxed) {
                report_eviction(&feedback.evictions, eviction);
            }
        }
        if matches!(event, watcher::Event::InitDone) {
            // The decoded pages are freed, but glibc keeps freed heap for
            // reuse: hand it back, or the RSS stays at the list's peak.
            release_freed_heap();
        }
    }
}

/// Pods per list page (see `watch_pods`).
const LIST_PAGE: u32 = 100;

/// Returns freed heap to the kernel (glibc keeps it; musl returns it itself).
fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What failed and why, in one line: "listing pods: HTTP 403 Forbidden:
/// ...", "watching pods: ...: Connection refused (os error 111)".
fn describe(err: &watcher::Error) -> String {
    let (what, err) = match err {
        watcher::Error::InitialListFailed(err) => ("listing pods", err),
        watcher::Error::WatchStartFailed(err) | watcher::Error::WatchFailed(err) => {
            ("watching pods", err)
        }
        watcher::Error::WatchError(status) => {
            return format!(
                "watching pods: {} {}: {}",
                status.code, status.reason, status.message
            )
        }
        other => return with_causes(other),
    };
    match err {
        kube::Error::Api(status) => format!(
            "{what}: HTTP {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => format!("{what}: {}", with_causes(other)),
    }
}

/// An error with its causes, each once: kube's text stops at "client error
/// (Connect)", and the reason ("Connection refused") is further down.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn report_eviction(evictions: &mpsc::Sender<Eviction>, eviction: Eviction) {
    if let Err(TrySendError::Full(eviction)) = evictions.try_send(eviction) {
        tracing::warn!(
            "eviction of pod {}/{} not reported: {EVICTION_QUEUE} evictions are waiting to be read",
            eviction.namespace,
            eviction.pod
        );
    }
}

#[cfg(test)]
mod tests {
    //! Against a real HTTP API server on 127.0.0.1 (the tests crate's
    //! `apiserver`), through the real kube client and watcher.

    use super::*;
    use crate::kube::{client::client, fixtures::*};
    use oom_probe_test_support::apiserver::{unreachable_url, ApiServer, KubeconfigFile};
    use serde_json::json;
    use std::{path::Path, time::SystemTime};

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
            .with_env_filter(crate::DEFAULT_LOG_FILTER)
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
}
