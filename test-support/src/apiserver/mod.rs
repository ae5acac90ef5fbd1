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
//! route is one more arm in [`route`].
//!
//! About 600 lines: an HTTP server, list/watch with resource versions, and
//! the fault injection the store tests need, one state machine.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    fs,
    net::TcpListener as StdTcpListener,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{channel::Channel, combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::Incoming, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::oneshot, sync::watch};

type Body = BoxBody<Bytes, Infallible>;

/// One request the server received, so a test can assert what the client
/// asked for (a field selector, a body it posted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// Query parameters, percent-decoded, in the order they came.
    pub query: Vec<(String, String)>,
    /// The body as text (empty for a GET).
    pub body: String,
}

impl RecordedRequest {
    /// The first value of a query parameter: what most assertions need.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

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
            .spawn(move || runtime.block_on(serve(listener, serving, stop)))?;
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

/// A kubeconfig file in the temporary directory, removed on drop.
pub struct KubeconfigFile {
    path: PathBuf,
}

static NEXT_KUBECONFIG: AtomicU32 = AtomicU32::new(0);

impl KubeconfigFile {
    /// One cluster, one context, no credentials, plain http.
    pub fn for_server(url: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "oom-probe-test-kubeconfig-{}-{}.yaml",
            std::process::id(),
            NEXT_KUBECONFIG.fetch_add(1, Ordering::Relaxed)
        ));
        let text = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: test\n  cluster:\n    server: {url}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\n\
             current-context: test\n\
             users:\n- name: test\n  user: {{}}\n"
        );
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { path })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for KubeconfigFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// One change to the store, as watches replay it.
struct Change {
    rv: u64,
    kind: &'static str,
    /// The object before a MODIFIED, to tell a watch whose selector it no
    /// longer matches that it is gone.
    before: Option<Value>,
    object: Value,
}

#[derive(Default)]
struct State {
    resource_version: u64,
    pods: BTreeMap<(String, String), Value>,
    log: Vec<Change>,
    requests: Vec<RecordedRequest>,
    failing: Option<u16>,
    /// Requests are held unanswered and open watches send nothing.
    hanging: bool,
    /// Changes up to this version are no longer in `log`.
    forgotten_through: u64,
}

impl State {
    fn bump(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }
}

struct Shared {
    state: Mutex<State>,
    /// Ticks on every change, so open watches wake up.
    changed: watch::Sender<()>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            changed: watch::Sender::new(()),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.changed.send_replace(());
    }
}

fn pod_key(pod: &Value) -> (String, String) {
    let field = |name: &str| {
        pod["metadata"][name]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (field("namespace"), field("name"))
}

async fn serve(listener: StdTcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let listener = TcpListener::from_std(listener).expect("listener");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&shared), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            _ = &mut stop => return,
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let body = match req.into_body().collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(err) => {
            return Ok(status(
                StatusCode::BAD_REQUEST,
                &format!("cannot read body: {err}"),
            ))
        }
    };
    let request = RecordedRequest {
        method: method.to_string(),
        path,
        query,
        body,
    };
    shared.lock().requests.push(request.clone());
    let mut changed = shared.changed.subscribe();
    while shared.lock().hanging {
        if changed.changed().await.is_err() {
            break;
        }
    }
    let failing = shared.lock().failing;
    if let Some(code) = failing {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Ok(status(code, "the test made this server fail"));
    }
    Ok(route(shared, &method, &request))
}

/// Dispatches on method and path segments.
fn route(shared: Arc<Shared>, method: &Method, request: &RecordedRequest) -> Response<Body> {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["api", "v1", "pods"]) => pods(shared, None, request),
        (&Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => pods(shared, Some(ns), request),
        (&Method::GET, ["api", "v1", "namespaces", ns, "pods", name]) => {
            match shared
                .lock()
                .pods
                .get(&((*ns).to_owned(), (*name).to_owned()))
            {
                Some(pod) => json_response(StatusCode::OK, pod),
                None => status(StatusCode::NOT_FOUND, &format!("pods \"{name}\" not found")),
            }
        }
        // Events: accepted and echoed; the test asserts on the recorded bodies.
        (&Method::POST, ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
            echo(StatusCode::CREATED, request)
        }
        (&Method::PATCH, ["apis", "events.k8s.io", "v1", "namespaces", _, "events", _]) => {
            echo(StatusCode::OK, request)
        }
        _ => status(
            StatusCode::NOT_FOUND,
            &format!("no route for {method} {}", request.path),
        ),
    }
}

/// Answers with the object the client sent, as the API server answers a
/// create or patch.
fn echo(code: StatusCode, request: &RecordedRequest) -> Response<Body> {
    match serde_json::from_str::<Value>(&request.body) {
        Ok(object) => json_response(code, &object),
        Err(err) => status(StatusCode::BAD_REQUEST, &format!("body is not JSON: {err}")),
    }
}

/// List or watch pods, in all namespaces or one.
fn pods(shared: Arc<Shared>, namespace: Option<&str>, request: &RecordedRequest) -> Response<Body> {
    let selector = match Selector::parse(
        namespace,
        request.query("fieldSelector").unwrap_or_default(),
    ) {
        Ok(selector) => selector,
        Err(message) => return status(StatusCode::BAD_REQUEST, &message),
    };
    if request
        .query("watch")
        .is_some_and(|w| w == "true" || w == "1")
    {
        let from = request
            .query("resourceVersion")
            .unwrap_or_default()
            .parse::<u64>()
            .unwrap_or(0);
        let bookmarks = request.query("allowWatchBookmarks") == Some("true");
        let timeout = request
            .query("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs);
        let (tx, body) = Channel::<Bytes, Infallible>::new(16);
        tokio::spawn(stream_watch(shared, selector, from, bookmarks, timeout, tx));
        return Response::builder()
            .header("content-type", "application/json")
            .body(body.boxed())
            .expect("response");
    }
    let state = shared.lock();
    let items: Vec<&Value> = state
        .pods
        .values()
        .filter(|pod| selector.matches(pod))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": "v1",
            "kind": "PodList",
            "metadata": {"resourceVersion": state.resource_version.to_string()},
            "items": items,
        }),
    )
}

/// Sends every matching change after `from`, then each new one as it
/// happens, until the client goes, the timeout passes, the server is made
/// to fail, or it stops. `from == 0` ("any version") starts with the
/// current pods as ADDED, as the real server does.
async fn stream_watch(
    shared: Arc<Shared>,
    selector: Selector,
    from: u64,
    bookmarks: bool,
    timeout: Option<Duration>,
    mut tx: http_body_util::channel::Sender<Bytes>,
) {
    let mut changed = shared.changed.subscribe();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut sent = from;
    let mut bookmarked = false;
    let mut gone = false;
    let mut lines = Vec::new();
    {
        let state = shared.lock();
        if from == 0 {
            for pod in state.pods.values().filter(|pod| selector.matches(pod)) {
                lines.push(watch_line("ADDED", pod));
            }
            sent = state.resource_version;
        }
    }
    loop {
        while shared.lock().hanging {
            if changed.changed().await.is_err() {
                return;
            }
        }
        {
            let state = shared.lock();
            if state.failing.is_some() {
                return;
            }
            if sent < state.forgotten_through {
                let expired = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {sent} ({})", state.forgotten_through),
                    "reason": "Expired", "code": 410,
                });
                lines.push(watch_line("ERROR", &expired));
                gone = true;
            } else {
                for change in state.log.iter().filter(|c| c.rv > sent) {
                    if selector.matches(&change.object) {
                        lines.push(watch_line(change.kind, &change.object));
                    } else if change
                        .before
                        .as_ref()
                        .is_some_and(|before| selector.matches(before))
                    {
                        lines.push(watch_line("DELETED", &change.object));
                    }
                }
                sent = sent.max(state.resource_version);
            }
        }
        if bookmarks && !bookmarked && !gone {
            let bookmark = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": sent.to_string()}});
            lines.push(watch_line("BOOKMARK", &bookmark));
            bookmarked = true;
        }
        for line in lines.drain(..) {
            if tx.send_data(line).await.is_err() {
                return;
            }
        }
        if gone {
            return;
        }
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            change = changed.changed() => if change.is_err() { return },
            _ = expired => return,
        }
    }
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

/// A field selector (`a=b,c!=d`, `==` too) plus the namespace of the path;
/// fields are dotted paths into the object's JSON.
struct Selector {
    terms: Vec<(String, bool, String)>,
}

impl Selector {
    fn parse(namespace: Option<&str>, text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        if let Some(namespace) = namespace {
            terms.push(("metadata.namespace".to_owned(), true, namespace.to_owned()));
        }
        for term in text.split(',').filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            terms.push((field.to_owned(), equal, value.to_owned()));
        }
        Ok(Self { terms })
    }

    fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, value)| {
            let found = field.split('.').fold(object, |v, key| &v[key]);
            (found.as_str().unwrap_or_default() == value) == *equal
        })
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).expect("json"))).boxed())
        .expect("response")
}

/// A `Status` object, as the real server answers errors.
fn status(code: StatusCode, message: &str) -> Response<Body> {
    let reason = match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::INTERNAL_SERVER_ERROR => "InternalError",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        _ => "",
    };
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}
