//! A small Kubernetes API server on 127.0.0.1, so that tests drive the real
//! kube client (and the real binary, through `KUBECONFIG`) over real HTTP
//! without a cluster.
//!
//! It keeps pods in memory with a resource version that every change bumps,
//! and a log of every change, so that a watch can start from any version the
//! server handed out and see everything after it, in order. It records every
//! request for assertions. It runs on a thread of its own with its own tokio
//! runtime, so synchronous end-to-end tests and `#[tokio::test]`s use it the
//! same way.
//!
//! Served: `GET /api/v1/pods` and `GET /api/v1/namespaces/{ns}/pods`, as a
//! list or, with `watch=true`, as a stream of newline-delimited watch events
//! (`resourceVersion`, `fieldSelector`, `allowWatchBookmarks`,
//! `timeoutSeconds`), and `GET /api/v1/namespaces/{ns}/pods/{name}`. Another
//! route is one more arm in `route` (`http.rs`).
//!
//! This file is the server's handle: start, the test's changes to the pods
//! and the faults, stop. Along it: what it keeps (`store.rs`), the HTTP side
//! (`http.rs`), watches (`watch.rs`) and their field selectors (`selector.rs`),
//! and a kubeconfig file pointing at it (`kubeconfig.rs`).

mod http;
mod kubeconfig;
mod selector;
mod store;
mod watch;

use std::{net::TcpListener as StdTcpListener, path::Path, sync::Arc, thread};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub use kubeconfig::KubeconfigFile;
pub use store::RecordedRequest;

use store::{pod_key, Change, Shared};

/// The running server. Dropping it stops it and ends open watches.
pub struct ApiServer {
    shared: Arc<Shared>,
    kubeconfig: KubeconfigFile,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ApiServer {
    /// Binds an ephemeral port on 127.0.0.1 and serves on a thread of its
    /// own; writes a kubeconfig that points at it.
    pub fn start() -> Result<Self> {
        let listener = StdTcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (shutdown, stop) = oneshot::channel();
        let serving = Arc::clone(&shared);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = thread::Builder::new()
            .name(format!("apiserver-{}", addr.port()))
            .spawn(move || runtime.block_on(http::serve(listener, serving, stop)))?;
        let kubeconfig = KubeconfigFile::for_server(&format!("http://{addr}"))?;
        Ok(Self {
            shared,
            kubeconfig,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// A kubeconfig file (plain http, no credentials) for this server: for
    /// `KUBECONFIG=` or `--kubeconfig`.
    pub fn kubeconfig(&self) -> &Path {
        self.kubeconfig.path()
    }

    /// Adds a pod, or replaces the one with the same namespace and name, as
    /// a client's create or update would: open watches see ADDED or MODIFIED.
    /// Returns the stored pod (with its new `metadata.resourceVersion`).
    pub fn apply_pod(&self, mut pod: Value) -> Value {
        let key = pod_key(&pod);
        let mut state = self.shared.lock();
        let rv = state.bump();
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let before = state.pods.insert(key, pod.clone());
        let kind = if before.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.log.push(Change {
            rv,
            kind,
            before,
            object: pod.clone(),
        });
        drop(state);
        self.shared.notify();
        pod
    }

    /// Removes a pod at once (as after its grace period): open watches see
    /// DELETED with the pod's last state. `None` if there was no such pod.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Option<Value> {
        let mut state = self.shared.lock();
        let mut pod = state
            .pods
            .remove(&(namespace.to_owned(), name.to_owned()))?;
        let rv = state.bump();
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        state.log.push(Change {
            rv,
            kind: "DELETED",
            before: None,
            object: pod.clone(),
        });
        drop(state);
        self.shared.notify();
        Some(pod)
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the change log, as etcd compaction does: a watch from a
    /// version before now gets "410 Gone" and the client must list again.
    pub fn forget_history(&self) {
        let mut state = self.shared.lock();
        state.log.clear();
        state.forgotten_through = state.resource_version;
        drop(state);
        self.shared.notify();
    }

    /// While `true`, holds every request unanswered (the connection stays
    /// open, nothing is sent) and open watches send nothing: an API server
    /// that hangs. `false` answers the held requests and serves normally.
    pub fn hang_requests(&self, hang: bool) {
        self.shared.lock().hanging = hang;
        self.shared.notify();
    }

    /// While `Some(status)`, answers every request with that HTTP status and
    /// ends open watches: an API server that is down or overloaded, for
    /// tests of what clients do meanwhile. `None` serves normally again.
    pub fn fail_requests(&self, status: Option<u16>) {
        self.shared.lock().failing = status;
        self.shared.notify();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A minimal pod on `node`, with no containers yet: tests add what they
/// need with `pod["spec"]["containers"] = json!([...])` and the like.
pub fn pod(namespace: &str, name: &str, uid: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "uid": uid},
        "spec": {"nodeName": node, "containers": []},
        "status": {"phase": "Running"},
    })
}

/// A URL on 127.0.0.1 where nothing listens (a port bound and released),
/// for tests of an API server that is unreachable.
pub fn unreachable_url() -> Result<String> {
    let listener = StdTcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}
