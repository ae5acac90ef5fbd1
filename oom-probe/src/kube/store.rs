//! Names the pod and container an OOM kill hit. The kernel gives only the
//! victim's cgroup, whose path carries a pod uid and a container id; this
//! store, fed by a watch of this node's pods, turns those into namespace,
//! pod, container, QoS class, owner and memory request and limit.
//!
//! Lookups read memory only: an OOM event never waits for the API server,
//! which may be slow, down, or not configured at all. Deleted pods are kept
//! for a while, because the pod of a kill is often deleted moments after it
//! (a Job's pod, a rollout, an eviction) and must still be named.
//!
//! Only this node's pods are watched (`fieldSelector=spec.nodeName=<node>`):
//! the API server never sends the rest of the cluster, so memory and API load
//! grow with the node, not the cluster.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError, RwLock,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{anyhow, Context, Result};
use futures_util::StreamExt;
use k8s_openapi::{
    api::core::v1::{ContainerStatus, Pod, ResourceRequirements},
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{watcher, WatchStreamExt},
    Api, Client, Config,
};
use tokio::{
    sync::mpsc::{self, error::TrySendError},
    task::JoinHandle,
    time::MissedTickBehavior,
};

/// How long a deleted pod stays in the store unless told otherwise: long
/// enough to name the pod of a kill reported late, short enough to stay small
/// on a node that churns through short-lived pods.
pub const DEFAULT_RETAIN_DELETED: Duration = Duration::from_secs(10 * 60);

/// Container ids remembered per container. A container the kernel OOM-killed
/// restarts under a new id, and the kill may be looked up after the status
/// moved on; a few old ids cover repeated restarts without growing.
const IDS_PER_CONTAINER: usize = 4;

/// Evictions waiting for their reader; past that they are dropped with a
/// warning rather than held without bound.
const EVICTION_QUEUE: usize = 256;

/// Bounds of the period at which expired deleted pods are dropped.
const MIN_SWEEP: Duration = Duration::from_secs(1);
const MAX_SWEEP: Duration = Duration::from_secs(60);

/// Where the store's warnings go: stderr in the binary, a buffer in tests.
type Log = Arc<dyn Fn(String) + Send + Sync>;

/// Builds a client the way kubectl and in-cluster agents find their API
/// server, so that the CLI needs no setup as a DaemonSet and one flag on a
/// laptop: `kubeconfig` if given, else `$KUBECONFIG`, else the pod's
/// service account, else `~/.kube/config`.
pub async fn client(kubeconfig: Option<PathBuf>) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => config_from_file(&path).await?,
        None if std::env::var_os("KUBECONFIG").is_some() => {
            Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .context("cannot use the kubeconfig named by $KUBECONFIG")?
        }
        None => match Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .map_err(|kubeconfig| {
                    anyhow!(
                        "no Kubernetes API server to talk to: not running in a pod \
                         ({in_cluster}) and no usable kubeconfig ({kubeconfig}); \
                         pass --kubeconfig or set KUBECONFIG"
                    )
                })?,
        },
    };
    Client::try_from(config).context("cannot build a Kubernetes client")
}

async fn config_from_file(path: &Path) -> Result<Config> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("cannot use kubeconfig {}", path.display()))
}

/// This node's pods, kept current by a watch in the background, so that each
/// OOM kill is named from memory without waiting for the API server.
pub struct PodStore {
    shared: Arc<Shared>,
    evictions: Mutex<Option<mpsc::Receiver<Eviction>>>,
    task: JoinHandle<()>,
}

/// What a lookup found: the pod, and the container when the id was known.
/// Kept small and owned so that it can go straight into an event.
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

impl PodStore {
    /// Starts watching `node`'s pods on the current tokio runtime and returns
    /// at once: lookups answer `None` until the first list arrives, and never
    /// wait for it. An unreachable API server is reported once on stderr and
    /// retried with backoff. Deleted pods are kept for `retain_deleted`.
    /// `node` must be the node's name (`spec.nodeName`). Panics outside a
    /// tokio runtime.
    pub fn start(client: Client, node: String, retain_deleted: Duration) -> PodStore {
        Self::start_logging_to(
            client,
            node,
            retain_deleted,
            Arc::new(|line| eprintln!("{line}")),
        )
    }

    fn start_logging_to(client: Client, node: String, retain: Duration, log: Log) -> PodStore {
        let (evictions_tx, evictions_rx) = mpsc::channel(EVICTION_QUEUE);
        let shared = Arc::new(Shared {
            pods: RwLock::default(),
            retain,
            synced: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            evictions_wanted: AtomicBool::new(false),
        });
        let task = tokio::spawn(watch_pods(
            Api::all(client),
            node,
            Arc::clone(&shared),
            evictions_tx,
            log,
        ));
        PodStore {
            shared,
            evictions: Mutex::new(Some(evictions_rx)),
            task,
        }
    }

    /// The pod with this uid and, when `container_id` is one of its
    /// containers' (current or recent) ids, that container. The uid may use
    /// `_` for `-`, as systemd cgroup names do; the container id may be bare
    /// hex or carry its runtime prefix (`containerd://`).
    pub fn lookup(&self, pod_uid: &str, container_id: Option<&str>) -> Option<PodMatch> {
        let uid = pod_uid.replace('_', "-");
        self.shared
            .read()
            .find(&uid, container_id.map(bare_container_id), self.expiry())
    }

    /// The pod and container with this container id, for cgroup layouts
    /// whose path names the container but not the pod.
    pub fn lookup_by_container_id(&self, container_id: &str) -> Option<PodMatch> {
        let id = bare_container_id(container_id);
        let pods = self.shared.read();
        let uid = pods.by_container.get(id)?;
        pods.find(uid, Some(id), self.expiry())
    }

    /// True once the first full list of the node's pods is in: before that a
    /// miss means "not loaded yet", after it "not a pod of this node".
    pub fn is_synced(&self) -> bool {
        self.shared.synced.load(Ordering::Relaxed)
    }

    /// Failed list and watch attempts so far, for health reporting: the
    /// warning is printed only once per outage.
    pub fn api_errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
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
            self.shared.evictions_wanted.store(true, Ordering::Relaxed);
        }
        receiver
    }

    fn expiry(&self) -> Expiry {
        Expiry {
            now: Instant::now(),
            retain: self.shared.retain,
        }
    }
}

impl Drop for PodStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the watch task and the lookups share.
struct Shared {
    pods: RwLock<Pods>,
    retain: Duration,
    synced: AtomicBool,
    errors: AtomicU64,
    evictions_wanted: AtomicBool,
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Pods> {
        self.pods.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Pods> {
        self.pods.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Follows the node's pods until the store is dropped. The watcher lists,
/// then watches from the list's version, and relists when the server says
/// the version is too old; its errors come back after a backoff.
async fn watch_pods(
    api: Api<Pod>,
    node: String,
    shared: Arc<Shared>,
    evictions: mpsc::Sender<Eviction>,
    log: Log,
) {
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut sweep = tokio::time::interval(shared.retain.clamp(MIN_SWEEP, MAX_SWEEP));
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Uids seen since the watcher started a (re)list; pods missing from it
    // were deleted meanwhile.
    let mut listed: HashSet<String> = HashSet::new();
    let mut warned = false;
    let report = |eviction: Option<Eviction>| {
        if let Some(eviction) = eviction {
            if shared.evictions_wanted.load(Ordering::Relaxed) {
                report_eviction(&evictions, eviction, &log);
            }
        }
    };
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = sweep.tick() => {
                shared.write().expire(Instant::now(), shared.retain);
                continue;
            }
        };
        let event = match event {
            Some(Ok(event)) => event,
            // "Too old resource version": routine, the watcher relists.
            Some(Err(watcher::Error::WatchError(status))) if status.code == 410 => continue,
            Some(Err(err)) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                if !warned {
                    warned = true;
                    log(format!(
                        "oom-probe: warning: kubernetes API unreachable ({}): \
                         events carry ids from the cgroup path only",
                        describe(&err)
                    ));
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
        let first_list = !shared.synced.load(Ordering::Relaxed);
        match event {
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitApply(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    listed.insert(uid.clone());
                }
                report(apply(&shared, &pod, first_list));
            }
            watcher::Event::InitDone => {
                shared
                    .write()
                    .mark_unlisted_deleted(&listed, Instant::now());
                listed.clear();
                shared.synced.store(true, Ordering::Relaxed);
            }
            watcher::Event::Apply(pod) => report(apply(&shared, &pod, false)),
            watcher::Event::Delete(pod) => {
                // The last state may be the first sight of an eviction.
                report(apply(&shared, &pod, false));
                if let Some(uid) = &pod.metadata.uid {
                    shared.write().mark_deleted(uid, Instant::now());
                }
            }
        }
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

/// Stores the pod; returns its eviction when this is the first sight of it
/// evicted. Pods already evicted in the first list are old news.
fn apply(shared: &Shared, pod: &Pod, first_list: bool) -> Option<Eviction> {
    let summary = summarize(pod)?;
    let eviction = eviction(pod);
    let newly_evicted = shared
        .write()
        .apply(summary, eviction.is_some(), first_list);
    eviction.filter(|_| newly_evicted)
}

fn report_eviction(evictions: &mpsc::Sender<Eviction>, eviction: Eviction, log: &Log) {
    if let Err(TrySendError::Full(eviction)) = evictions.try_send(eviction) {
        log(format!(
            "oom-probe: warning: eviction of pod {}/{} not reported: \
             {EVICTION_QUEUE} evictions are waiting to be read",
            eviction.namespace, eviction.pod
        ));
    }
}

/// "Now" and the retention, to tell live and retained pods from expired ones.
#[derive(Clone, Copy)]
struct Expiry {
    now: Instant,
    retain: Duration,
}

#[derive(Default)]
struct Pods {
    by_uid: HashMap<String, Entry>,
    /// Bare container id -> pod uid.
    by_container: HashMap<String, String>,
}

struct Entry {
    pod: PodSummary,
    deleted_at: Option<Instant>,
    /// Seen evicted already: an eviction is reported once per pod.
    evicted: bool,
}

impl Entry {
    fn expired(&self, at: Expiry) -> bool {
        self.deleted_at
            .is_some_and(|deleted| at.now.saturating_duration_since(deleted) >= at.retain)
    }
}

/// What the store keeps of a pod: enough to name it, not the whole object.
struct PodSummary {
    namespace: String,
    name: String,
    uid: String,
    node: Option<String>,
    qos_class: Option<String>,
    owner: Option<Owner>,
    containers: Vec<ContainerSummary>,
}

struct ContainerSummary {
    name: String,
    kind: ContainerKind,
    /// Bare ids, newest first: the current one, then earlier instances.
    ids: Vec<String>,
    memory_request_bytes: Option<u64>,
    memory_limit_bytes: Option<u64>,
}

impl PodSummary {
    fn container_ids(&self) -> impl Iterator<Item = &String> {
        self.containers.iter().flat_map(|c| &c.ids)
    }
}

impl Pods {
    /// Stores a pod's latest state (alive again if it was marked deleted),
    /// keeping container ids its status no longer lists. Returns whether to
    /// report it as newly evicted.
    fn apply(&mut self, mut pod: PodSummary, evicted: bool, first_list: bool) -> bool {
        let uid = pod.uid.clone();
        let old = self.by_uid.remove(&uid);
        if let Some(old) = &old {
            for container in &mut pod.containers {
                let earlier = old
                    .pod
                    .containers
                    .iter()
                    .find(|c| c.name == container.name && c.kind == container.kind);
                for id in earlier.into_iter().flat_map(|c| &c.ids) {
                    if !container.ids.contains(id) {
                        container.ids.push(id.clone());
                    }
                }
                container.ids.truncate(IDS_PER_CONTAINER);
            }
            for id in old.pod.container_ids() {
                if self.by_container.get(id) == Some(&uid) {
                    self.by_container.remove(id);
                }
            }
        }
        for id in pod.container_ids() {
            self.by_container.insert(id.clone(), uid.clone());
        }
        let was_evicted = old.as_ref().is_some_and(|old| old.evicted);
        let report = evicted && !was_evicted && !(first_list && old.is_none());
        self.by_uid.insert(
            uid,
            Entry {
                pod,
                deleted_at: None,
                evicted: evicted || was_evicted,
            },
        );
        report
    }

    fn mark_deleted(&mut self, uid: &str, now: Instant) {
        if let Some(entry) = self.by_uid.get_mut(uid) {
            entry.deleted_at.get_or_insert(now);
        }
    }

    /// After a (re)list: live pods it did not contain were deleted while the
    /// watch was down.
    fn mark_unlisted_deleted(&mut self, listed: &HashSet<String>, now: Instant) {
        for (uid, entry) in &mut self.by_uid {
            if !listed.contains(uid) {
                entry.deleted_at.get_or_insert(now);
            }
        }
    }

    /// Drops deleted pods past their retention, and their container ids.
    fn expire(&mut self, now: Instant, retain: Duration) {
        let at = Expiry { now, retain };
        let expired: Vec<String> = self
            .by_uid
            .iter()
            .filter(|(_, entry)| entry.expired(at))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in expired {
            if let Some(entry) = self.by_uid.remove(&uid) {
                for id in entry.pod.container_ids() {
                    if self.by_container.get(id) == Some(&uid) {
                        self.by_container.remove(id);
                    }
                }
            }
        }
    }

    fn find(&self, uid: &str, container_id: Option<&str>, at: Expiry) -> Option<PodMatch> {
        let entry = self.by_uid.get(uid).filter(|entry| !entry.expired(at))?;
        let pod = &entry.pod;
        let container = container_id.and_then(|id| {
            pod.containers
                .iter()
                .find(|c| c.ids.iter().any(|known| known == id))
                .map(|c| (c, id))
        });
        Some(PodMatch {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            node: pod.node.clone(),
            qos_class: pod.qos_class.clone(),
            owner: pod.owner.clone(),
            deleted: entry.deleted_at.is_some(),
            container_name: container.map(|(c, _)| c.name.clone()),
            container_kind: container.map(|(c, _)| c.kind),
            container_id: container.map(|(_, id)| id.to_owned()),
            memory_request_bytes: container.and_then(|(c, _)| c.memory_request_bytes),
            memory_limit_bytes: container.and_then(|(c, _)| c.memory_limit_bytes),
        })
    }
}

/// The part of a pod the store keeps; `None` for an object without a uid
/// (never sent by a real server).
fn summarize(pod: &Pod) -> Option<PodSummary> {
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
fn eviction(pod: &Pod) -> Option<Eviction> {
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
fn bare_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, bare)| bare)
}

/// Bytes in a Kubernetes quantity ("128Mi", "1.5Gi", "1G", "1e3", "100m"),
/// rounded up to a whole byte as Kubernetes rounds; `None` when the text is
/// not a quantity, is negative, or does not fit in a u64.
pub(crate) fn quantity_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = unsigned
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let mut mantissa: u128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(u128::from(digit - b'0'))?;
    }
    let pow10 = |exp: u32| 10u128.checked_pow(exp);
    // value = mantissa * multiplier / 10^(fraction digits + shrink)
    let (multiplier, shrink): (u128, u32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, 9),
        "u" => (1, 6),
        "m" => (1, 3),
        "k" => (pow10(3)?, 0),
        "M" => (pow10(6)?, 0),
        "G" => (pow10(9)?, 0),
        "T" => (pow10(12)?, 0),
        "P" => (pow10(15)?, 0),
        "E" => (pow10(18)?, 0),
        _ => {
            let exponent: i32 = suffix.strip_prefix(['e', 'E'])?.parse().ok()?;
            if exponent < 0 {
                (1, exponent.unsigned_abs())
            } else {
                (pow10(exponent.unsigned_abs())?, 0)
            }
        }
    };
    let divisor = pow10(u32::try_from(fraction.len()).ok()?)?.checked_mul(pow10(shrink)?)?;
    let scaled = mantissa.checked_mul(multiplier)?;
    if negative && scaled != 0 {
        return None;
    }
    u64::try_from(scaled.div_ceil(divisor)).ok()
}

#[cfg(test)]
mod tests {
    //! Against a real HTTP API server on 127.0.0.1 (the tests crate's
    //! `apiserver`), through the real kube client and watcher.

    use super::*;
    use oom_probe_tests::apiserver::{pod, unreachable_url, ApiServer, KubeconfigFile};
    use serde_json::{json, Value};

    const APP_ID: &str = "5c3d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
    const SIDECAR_ID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const INIT_ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    const DEBUG_ID: &str = "deadbeef00112233445566778899aabbccddeeff00112233445566778899aabb";
    const UID: &str = "7b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
    const MIB: u64 = 1 << 20;

    /// Lines the store logged.
    type Lines = Arc<Mutex<Vec<String>>>;

    async fn store_at(kubeconfig: &Path, node: &str, retain: Duration) -> (PodStore, Lines) {
        let client = client(Some(kubeconfig.to_owned())).await.unwrap();
        let lines = Lines::default();
        let sink = Arc::clone(&lines);
        let log: Log = Arc::new(move |line| sink.lock().unwrap().push(line));
        let store = PodStore::start_logging_to(client, node.to_owned(), retain, log);
        (store, lines)
    }

    /// A store for `node` that has its first list in.
    async fn synced_store(server: &ApiServer, node: &str, retain: Duration) -> (PodStore, Lines) {
        let (store, lines) = store_at(server.kubeconfig(), node, retain).await;
        until("the first list", || store.is_synced().then_some(())).await;
        (store, lines)
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

    fn container_status(name: &str, id: &str) -> Value {
        json!({"name": name, "containerID": id, "image": "img", "imageID": "", "ready": true,
               "restartCount": 0, "state": {"running": {}}})
    }

    /// A Deployment's pod on node-a: two app containers, an init container,
    /// an ephemeral debug container, each with a different runtime's id.
    fn web_pod() -> Value {
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

    fn web_match(
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
        let (store, lines) = synced_store(&server, "node-a", DEFAULT_RETAIN_DELETED).await;
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
        assert!(lines.lock().unwrap().is_empty(), "{lines:?}");
    }

    #[tokio::test]
    async fn names_pod_container_qos_owner_and_memory() {
        let server = ApiServer::start().unwrap();
        server.apply_pod(web_pod());
        let (store, _) = synced_store(&server, "node-a", DEFAULT_RETAIN_DELETED).await;

        let app = web_match(
            "app",
            ContainerKind::Regular,
            APP_ID,
            Some(128 * MIB),
            Some(1536 * MIB),
        );
        assert_eq!(store.lookup(UID, Some(APP_ID)), Some(app.clone()));
        // As the path of a systemd-driver cgroup spells it, with a runtime prefix.
        assert_eq!(
            store.lookup(
                &UID.replace('-', "_"),
                Some(&format!("containerd://{APP_ID}"))
            ),
            Some(app.clone())
        );
        assert_eq!(store.lookup_by_container_id(APP_ID), Some(app));
        assert_eq!(
            store.lookup(UID, Some(SIDECAR_ID)),
            Some(web_match(
                "sidecar",
                ContainerKind::Regular,
                SIDECAR_ID,
                Some(100_000_000),
                None
            ))
        );
        assert_eq!(
            store.lookup_by_container_id(&format!("cri-o://{INIT_ID}")),
            Some(web_match(
                "migrate",
                ContainerKind::Init,
                INIT_ID,
                Some(64 * MIB),
                Some(64 * MIB)
            ))
        );
        assert_eq!(
            store.lookup_by_container_id(DEBUG_ID),
            Some(web_match(
                "debugger",
                ContainerKind::Ephemeral,
                DEBUG_ID,
                None,
                None
            ))
        );

        // The pod is known, the container is not (the sandbox, or a status
        // not updated yet): the pod's fields, no container's.
        let pod_only = PodMatch {
            container_name: None,
            container_kind: None,
            container_id: None,
            memory_request_bytes: None,
            memory_limit_bytes: None,
            ..web_match("", ContainerKind::Regular, "", None, None)
        };
        assert_eq!(store.lookup(UID, Some("feedface")), Some(pod_only.clone()));
        assert_eq!(store.lookup(UID, None), Some(pod_only));
        assert_eq!(store.lookup_by_container_id("feedface"), None);
        assert_eq!(
            store.lookup("00000000-0000-0000-0000-000000000000", Some(APP_ID)),
            None
        );
    }

    #[tokio::test]
    async fn restarted_container_is_found_by_old_and_new_ids_with_its_resized_limit() {
        let server = ApiServer::start().unwrap();
        let mut web = server.apply_pod(web_pod());
        let (store, _) = synced_store(&server, "node-a", DEFAULT_RETAIN_DELETED).await;
        assert!(store.lookup(UID, Some(APP_ID)).is_some());

        // The kernel killed app's init; the kubelet restarted it under a new
        // id and, meanwhile, an in-place resize raised its limit to 2Gi.
        let restarted = "1111111111111111111111111111111111111111111111111111111111111111";
        let mut app = container_status("app", &format!("containerd://{restarted}"));
        app["restartCount"] = json!(1);
        app["lastState"] = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                                  "containerID": format!("containerd://{APP_ID}")}});
        app["resources"] = json!({"requests": {"memory": "128Mi"}, "limits": {"memory": "2Gi"}});
        web["status"]["containerStatuses"][0] = app.clone();
        server.apply_pod(web.clone());
        let new = until("the restart", || {
            store
                .lookup(UID, Some(restarted))
                .filter(|m| m.container_name.is_some())
        })
        .await;
        assert_eq!(
            new,
            web_match(
                "app",
                ContainerKind::Regular,
                restarted,
                Some(128 * MIB),
                Some(2048 * MIB)
            )
        );
        let old = store.lookup(UID, Some(APP_ID)).unwrap();
        assert_eq!(old.container_name.as_deref(), Some("app"));
        assert_eq!(old.container_id.as_deref(), Some(APP_ID));

        // A second restart: the status no longer names the first id, the
        // store still does.
        let again = "2222222222222222222222222222222222222222222222222222222222222222";
        app["containerID"] = json!(format!("containerd://{again}"));
        app["lastState"]["terminated"]["containerID"] = json!(format!("containerd://{restarted}"));
        web["status"]["containerStatuses"][0] = app;
        server.apply_pod(web);
        until("the second restart", || store.lookup_by_container_id(again)).await;
        for id in [APP_ID, restarted, again] {
            let found = store.lookup_by_container_id(id).unwrap();
            assert_eq!(found.container_name.as_deref(), Some("app"), "{id}");
        }
    }

    #[tokio::test]
    async fn deleted_pod_is_named_until_its_retention_expires() {
        let retain = Duration::from_secs(2);
        let server = ApiServer::start().unwrap();
        server.apply_pod(web_pod());
        let (store, _) = synced_store(&server, "node-a", retain).await;
        assert!(!store.lookup(UID, Some(APP_ID)).unwrap().deleted);

        // The pod goes right after its container's kill.
        server.delete_pod("shop", "web-7d9f8-x2x4q").unwrap();
        let seen_deleted = until("the deletion", || {
            store.lookup(UID, Some(APP_ID)).filter(|m| m.deleted)
        })
        .await;
        let noticed = Instant::now();
        assert_eq!(
            seen_deleted,
            PodMatch {
                deleted: true,
                ..web_match(
                    "app",
                    ContainerKind::Regular,
                    APP_ID,
                    Some(128 * MIB),
                    Some(1536 * MIB)
                )
            }
        );
        assert!(store
            .lookup_by_container_id(SIDECAR_ID)
            .is_some_and(|m| m.deleted));

        tokio::time::sleep_until((noticed + retain).into()).await;
        assert_eq!(store.lookup(UID, Some(APP_ID)), None);
        assert_eq!(store.lookup_by_container_id(SIDECAR_ID), None);
        // And the memory is given back, index included.
        until("the sweep", || {
            let pods = store.shared.read();
            (pods.by_uid.is_empty() && pods.by_container.is_empty()).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn unreachable_api_server_warns_once_and_lookups_answer_at_once() {
        let kubeconfig = KubeconfigFile::for_server(&unreachable_url().unwrap()).unwrap();
        let (store, lines) = store_at(kubeconfig.path(), "node-a", DEFAULT_RETAIN_DELETED).await;
        // Straight away, with the watch failing: an answer, not a wait.
        assert_eq!(store.lookup(UID, Some(APP_ID)), None);
        assert_eq!(store.lookup_by_container_id(APP_ID), None);

        until("three failed attempts", || {
            (store.api_errors() >= 3).then_some(())
        })
        .await;
        assert!(!store.is_synced());
        let lines = lines.lock().unwrap().clone();
        assert_eq!(lines.len(), 1, "one warning, not one per retry: {lines:#?}");
        assert!(
            lines[0].starts_with("oom-probe: warning: kubernetes API unreachable (")
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
        let (store, lines) = synced_store(&server, "node-a", DEFAULT_RETAIN_DELETED).await;

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
        let lines = lines.lock().unwrap().clone();
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
        let (store, _) = synced_store(&server, "node-a", DEFAULT_RETAIN_DELETED).await;
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

    #[tokio::test]
    async fn client_reads_a_kubeconfig_and_names_a_bad_one() {
        let server = ApiServer::start().unwrap();
        server.apply_pod(web_pod());
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
        let err = format!("{:#}", super::client(Some(missing)).await.err().unwrap());
        assert!(
            err.contains("cannot read kubeconfig /nonexistent/oom-probe/kubeconfig"),
            "{err}"
        );
    }

    #[test]
    fn quantities_in_bytes() {
        let table: &[(&str, Option<u64>)] = &[
            ("128Mi", Some(128 << 20)),
            ("1Gi", Some(1 << 30)),
            ("1.5Gi", Some(1_610_612_736)),
            ("0.5Ki", Some(512)),
            ("1Ki", Some(1024)),
            ("2Ti", Some(2 << 40)),
            ("1Pi", Some(1 << 50)),
            ("15Ei", Some(15 << 60)),
            ("16Ei", None), // 2^64: does not fit
            ("1G", Some(1_000_000_000)),
            ("512M", Some(512_000_000)),
            ("100000k", Some(100_000_000)),
            ("1T", Some(1_000_000_000_000)),
            ("1P", Some(1_000_000_000_000_000)),
            ("2E", Some(2_000_000_000_000_000_000)),
            ("18E", Some(18_000_000_000_000_000_000)),
            ("19E", None),
            ("1048576", Some(1_048_576)),
            ("0", Some(0)),
            ("+5Mi", Some(5 << 20)),
            ("1e3", Some(1000)),
            ("1E3", Some(1000)),
            ("1.5e3", Some(1500)),
            ("12e+2", Some(1200)),
            ("5e-1", Some(1)), // half a byte rounds up, as Kubernetes' Value() does
            ("1.1", Some(2)),
            ("100m", Some(1)),
            ("1500m", Some(2)),
            ("1000000u", Some(1)),
            ("1000000000n", Some(1)),
            ("0.000001", Some(1)),
            (".5Ki", Some(512)),
            ("1.", Some(1)),
            (" 64Mi ", Some(64 << 20)),
            ("-0", Some(0)),
            ("-1Mi", None),
            ("", None),
            ("Mi", None),
            (".", None),
            ("1.2.3", None),
            ("12MB", None),
            ("1ki", None),
            ("1K", None),
            ("1 Mi", None),
            ("1e", None),
            ("1e3.5", None),
            ("abc", None),
            ("1e40", None),
            ("99999999999999999999999999999999999999999", None),
        ];
        for (text, want) in table {
            assert_eq!(quantity_bytes(text), *want, "{text:?}");
        }
    }

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
