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
//! Its tests run it against a real HTTP API server (the test-support
//! crate's), so they are end-to-end tests: `tests/kube_api.rs`.

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
