//! Names the pod and container of an OOM victim by asking the node's
//! container runtime over the CRI, the gRPC API the kubelet itself drives.
//!
//! The runtime knows every container the kubelet made, with the pod's name,
//! namespace and uid, so events can carry Kubernetes names on a node that
//! cannot (or should not) reach the API server. Lookups sit on the path of
//! every event, so each one is bounded by [`CALL_TIMEOUT`] and answers are
//! cached: a hung runtime delays an event by at most that, never forever,
//! and a container that is OOM-killed again and again costs one lookup.
//!
//! Over 500 lines with its unit tests (cache, socket detection, dead
//! sockets); the code is about 400. The tests against a real runtime, a
//! private containerd, are end-to-end tests: `tests/cri.rs`.

use std::{
    collections::HashMap,
    error::Error as StdError,
    fs, io,
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use oom_probe_cri::v1::{
    runtime_service_client::RuntimeServiceClient, Container, ContainerFilter, ContainerState,
    ContainerStatusRequest, ListContainersRequest, PodSandboxStatusRequest, VersionRequest,
};
use tonic::{
    transport::{Channel, Endpoint},
    Code, Status,
};

/// Where runtimes put their CRI socket, tried in this order when none is
/// given: containerd, CRI-O, cri-dockerd (Docker Engine), k3s's containerd.
pub const DEFAULT_SOCKETS: [&str; 4] = [
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/cri-dockerd.sock",
    "/run/k3s/containerd/containerd.sock",
];

/// The longest one connection attempt or one [`CriClient::container`] call
/// (all its RPCs together) may take, so a hung runtime holds an event back
/// by at most this. A healthy runtime answers in about a millisecond.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// After a call timed out, the runtime is not asked again for this long:
/// events are named from the cgroup path alone meanwhile (each such lookup
/// fails at once with [`CriError::Paused`]), so a hung runtime costs one
/// [`CALL_TIMEOUT`] per pause, not one per kill of a burst. Cached answers
/// are still used.
pub const PAUSE_AFTER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an answer is reused. What the runtime says about a container id
/// never changes (ids are not reused), so this only bounds staleness after
/// the runtime itself is replaced.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// At most this many container ids are remembered; far more than one node
/// runs, so only a flood of short-lived containers evicts anything.
const CACHE_CAPACITY: usize = 512;

/// Labels the kubelet puts on every container it creates.
const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";

/// Who a container belongs to in Kubernetes, as its runtime knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriContainer {
    /// The runtime's full container id (the name of its cgroup directory).
    pub container_id: String,
    /// The container's name in the pod spec.
    pub container_name: String,
    /// The pod's name; `None` when neither the pod sandbox's metadata nor
    /// the kubelet's labels give it (a container the kubelet did not make
    /// whose sandbox is gone).
    pub pod_name: Option<String>,
    /// The pod's namespace; `None` as for `pod_name`.
    pub namespace: Option<String>,
    /// The pod's uid (the `pod<uid>` of its cgroup); `None` as for `pod_name`.
    pub pod_uid: Option<String>,
    /// The runtime's id of the pod sandbox the container runs in.
    pub sandbox_id: String,
    /// Host pid of the container's own first process (its init, which is
    /// not pid 1 when the pod shares one pid namespace), from the verbose
    /// ContainerStatus `info` (`pid`, containerd and CRI-O); `None` when
    /// the runtime does not say or the container no longer runs.
    pub init_pid: Option<u32>,
    /// The container had exited when the runtime was asked.
    pub exited: bool,
}

/// Why the runtime could not name a container, worded to say what to do.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// No socket was given and none of [`DEFAULT_SOCKETS`] exists.
    #[error(
        "no container runtime socket found (tried {}): start the runtime, or pass \
         its CRI socket with --cri-socket",
        DEFAULT_SOCKETS.join(", ")
    )]
    NoSocket,
    /// The socket could not be opened (missing, not a socket, no permission,
    /// nobody listening).
    #[error("cannot connect to the CRI socket {}: {reason}", socket.display())]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// What went wrong and what to do about it.
        reason: String,
    },
    /// Something answers on the socket, but not the CRI v1 runtime service.
    #[error(
        "{} answers but does not serve the CRI v1 runtime API ({reason}); for \
         containerd, take \"cri\" out of disabled_plugins in its config.toml and \
         restart it (containerd 1.5 or newer is needed), or pass a CRI runtime's \
         socket with --cri-socket",
        socket.display()
    )]
    NotCri {
        /// The socket tried.
        socket: PathBuf,
        /// The gRPC status message it answered with.
        reason: String,
    },
    /// The runtime knows no container with this id: a process outside any
    /// CRI container, or a container already removed.
    #[error(
        "the container runtime has no container {container_id} (not made through \
         the CRI, or already removed)"
    )]
    NotFound {
        /// The id asked about.
        container_id: String,
    },
    /// The runtime did not answer within [`CALL_TIMEOUT`].
    #[error(
        "the container runtime at {} did not answer within {} ms: is it hung or \
         overloaded?",
        socket.display(),
        CALL_TIMEOUT.as_millis()
    )]
    Timeout {
        /// The socket of the runtime that kept silent.
        socket: PathBuf,
    },
    /// Not asked: the runtime timed out less than [`PAUSE_AFTER_TIMEOUT`] ago.
    #[error(
        "the container runtime at {} is not asked for {} s after it timed out",
        socket.display(),
        PAUSE_AFTER_TIMEOUT.as_secs()
    )]
    Paused {
        /// The socket of the runtime that timed out.
        socket: PathBuf,
    },
    /// The runtime answered a call with an error.
    #[error(
        "CRI {method} on {} failed: {:?}: {}",
        socket.display(),
        status.code(),
        status.message()
    )]
    Rpc {
        /// The socket of the runtime.
        socket: PathBuf,
        /// The CRI method that failed.
        method: &'static str,
        /// The gRPC status it failed with.
        status: Box<Status>,
    },
}

/// A connection to the node's container runtime, with a cache of the
/// containers it named. Cheap to share: calls take `&self`.
pub struct CriClient {
    socket: PathBuf,
    runtime: String,
    client: RuntimeServiceClient<Channel>,
    cache: Mutex<Cache>,
    /// Not asked again before this, after a timeout.
    paused_until: Mutex<Option<Instant>>,
}

impl CriClient {
    /// Connects to `socket`, or to the first of [`DEFAULT_SOCKETS`] that
    /// exists, and checks that it speaks the CRI v1 runtime API, so a wrong
    /// socket is reported at start-up rather than at the first kill.
    pub async fn connect(socket: Option<PathBuf>) -> Result<Self, CriError> {
        let socket = match socket {
            Some(socket) => socket,
            None => {
                first_socket(DEFAULT_SOCKETS.iter().map(Path::new)).ok_or(CriError::NoSocket)?
            }
        };
        check_socket(&socket)?;
        let connect_error = |reason: String| CriError::Connect {
            socket: socket.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(format!("unix://{}", socket.display()))
            .map_err(|e| connect_error(e.to_string()))?
            .connect_timeout(CALL_TIMEOUT);
        let channel = tokio::time::timeout(CALL_TIMEOUT, endpoint.connect())
            .await
            .map_err(|_| CriError::Timeout {
                socket: socket.clone(),
            })?
            .map_err(|e| connect_error(explain_connect_error(&e)))?;
        let mut client = RuntimeServiceClient::new(channel);
        let request = VersionRequest {
            version: "v1".into(),
        };
        let version = tokio::time::timeout(CALL_TIMEOUT, client.version(request))
            .await
            .map_err(|_| CriError::Timeout {
                socket: socket.clone(),
            })?
            .map_err(|status| match status.code() {
                Code::Unimplemented => CriError::NotCri {
                    socket: socket.clone(),
                    reason: status.message().to_string(),
                },
                _ => rpc_error(&socket, "Version", status),
            })?
            .into_inner();
        Ok(Self {
            runtime: format!("{} {}", version.runtime_name, version.runtime_version),
            socket,
            client,
            cache: Mutex::new(Cache::default()),
            paused_until: Mutex::new(None),
        })
    }

    /// The socket this client talks to (for start-up messages).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The runtime's name and version, e.g. `containerd 1.6.20`.
    pub fn runtime(&self) -> &str {
        &self.runtime
    }

    /// Names the container with this id (as in its cgroup path) and its pod.
    /// Answers, "no such container" included, are cached; errors are not,
    /// so a runtime that comes back is asked again. Never takes longer than
    /// [`CALL_TIMEOUT`]; after a timeout, uncached lookups fail at once with
    /// [`CriError::Paused`] for [`PAUSE_AFTER_TIMEOUT`].
    pub async fn container(&self, container_id: &str) -> Result<CriContainer, CriError> {
        let not_found = || CriError::NotFound {
            container_id: container_id.to_string(),
        };
        if let Some(cached) = self.cache().get(container_id, Instant::now()) {
            return cached.ok_or_else(not_found);
        }
        let paused_until = *self
            .paused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if paused_until.is_some_and(|until| Instant::now() < until) {
            return Err(CriError::Paused {
                socket: self.socket.clone(),
            });
        }
        let found = match tokio::time::timeout(CALL_TIMEOUT, self.look_up(container_id)).await {
            Ok(found) => found?,
            Err(_) => {
                *self
                    .paused_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    Some(Instant::now() + PAUSE_AFTER_TIMEOUT);
                return Err(CriError::Timeout {
                    socket: self.socket.clone(),
                });
            }
        };
        self.cache()
            .insert(container_id.to_string(), found.clone(), Instant::now());
        found.ok_or_else(not_found)
    }

    /// ListContainers filtered by id, because ContainerStatus does not tell
    /// the sandbox; then PodSandboxStatus for the pod's own metadata.
    async fn look_up(&self, container_id: &str) -> Result<Option<CriContainer>, CriError> {
        let mut client = self.client.clone();
        let request = ListContainersRequest {
            filter: Some(ContainerFilter {
                id: container_id.to_string(),
                ..Default::default()
            }),
        };
        let containers = client
            .list_containers(request)
            .await
            .map_err(|status| rpc_error(&self.socket, "ListContainers", status))?
            .into_inner()
            .containers;
        // Runtimes match ids by prefix; only the container itself will do.
        let Some(container) = containers.into_iter().find(|c| c.id == container_id) else {
            return Ok(None);
        };
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: container.pod_sandbox_id.clone(),
            verbose: false,
        };
        let sandbox = match client.pod_sandbox_status(request).await {
            Ok(response) => response.into_inner().status.and_then(|s| s.metadata),
            // Removed since: the container's own labels still name the pod.
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(rpc_error(&self.socket, "PodSandboxStatus", status)),
        };
        let request = ContainerStatusRequest {
            container_id: container.id.clone(),
            verbose: true,
        };
        let (init_pid, exited) = match client.container_status(request).await {
            Ok(response) => {
                let response = response.into_inner();
                let exited = response
                    .status
                    .is_some_and(|s| s.state == ContainerState::ContainerExited as i32);
                (init_pid_from_info(&response.info), exited)
            }
            Err(status) if status.code() == Code::NotFound => (None, false),
            Err(status) => return Err(rpc_error(&self.socket, "ContainerStatus", status)),
        };
        Ok(Some(CriContainer {
            init_pid,
            exited,
            ..describe(container, sandbox)
        }))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds no invariant a panicking holder could break.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Puts the runtime's answers together: the pod sandbox's metadata first
/// (what the kubelet gave the runtime), the kubelet's labels otherwise.
/// The `pid` in a verbose ContainerStatus's `info["info"]` JSON (containerd
/// and CRI-O both write it; 0 once the container has stopped).
fn init_pid_from_info(info: &std::collections::HashMap<String, String>) -> Option<u32> {
    let info: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    info.get("pid")?
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .filter(|&pid| pid > 0)
}

fn describe(
    container: Container,
    sandbox: Option<oom_probe_cri::v1::PodSandboxMetadata>,
) -> CriContainer {
    let label = |key: &str| container.labels.get(key).filter(|v| !v.is_empty()).cloned();
    let from_sandbox = |field: fn(&oom_probe_cri::v1::PodSandboxMetadata) -> &String| {
        sandbox
            .as_ref()
            .map(field)
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let container_name = container
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .filter(|name| !name.is_empty())
        .or_else(|| label(LABEL_CONTAINER_NAME))
        .unwrap_or_default();
    CriContainer {
        container_name,
        pod_name: from_sandbox(|m| &m.name).or_else(|| label(LABEL_POD_NAME)),
        namespace: from_sandbox(|m| &m.namespace).or_else(|| label(LABEL_POD_NAMESPACE)),
        pod_uid: from_sandbox(|m| &m.uid).or_else(|| label(LABEL_POD_UID)),
        sandbox_id: container.pod_sandbox_id,
        container_id: container.id,
        init_pid: None,
        exited: container.state == ContainerState::ContainerExited as i32,
    }
}

/// The first of `candidates` that is a unix socket.
fn first_socket<'a>(candidates: impl IntoIterator<Item = &'a Path>) -> Option<PathBuf> {
    candidates
        .into_iter()
        .find(|path| fs::metadata(path).is_ok_and(|m| m.file_type().is_socket()))
        .map(Path::to_path_buf)
}

/// Says plainly when the socket is missing or is no socket at all, before
/// gRPC buries that under "transport error".
fn check_socket(socket: &Path) -> Result<(), CriError> {
    let reason = match fs::metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => return Ok(()),
        Ok(_) => "it is not a unix socket; pass the runtime's CRI socket with --cri-socket".into(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            "it does not exist: is the container runtime running? Pass its CRI socket with \
             --cri-socket"
                .into()
        }
        Err(e) => explain_io_error(&e),
    };
    Err(CriError::Connect {
        socket: socket.to_path_buf(),
        reason,
    })
}

/// The io error under a transport error, explained.
fn explain_connect_error(error: &tonic::transport::Error) -> String {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return explain_io_error(io);
        }
        source = e.source();
    }
    format!("{error}: is the container runtime running?")
}

fn explain_io_error(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "{error}: run oom-probe as root, or as a user allowed to open the runtime's socket"
        ),
        io::ErrorKind::ConnectionRefused => {
            format!("{error}: nothing listens on it; is the container runtime running?")
        }
        _ => error.to_string(),
    }
}

fn rpc_error(socket: &Path, method: &'static str, status: Status) -> CriError {
    CriError::Rpc {
        socket: socket.to_path_buf(),
        method,
        status: Box::new(status),
    }
}

/// Container id -> what the runtime said (`None`: no such container), each
/// answer kept for [`CACHE_TTL`], at most [`CACHE_CAPACITY`] of them.
#[derive(Default)]
struct Cache {
    entries: HashMap<String, (Instant, Option<CriContainer>)>,
}

impl Cache {
    fn get(&mut self, container_id: &str, now: Instant) -> Option<Option<CriContainer>> {
        let (at, found) = self.entries.get(container_id)?;
        if now.duration_since(*at) < CACHE_TTL {
            return Some(found.clone());
        }
        self.entries.remove(container_id);
        None
    }

    fn insert(&mut self, container_id: String, found: Option<CriContainer>, now: Instant) {
        if self.entries.len() >= CACHE_CAPACITY && !self.entries.contains_key(&container_id) {
            self.entries
                .retain(|_, (at, _)| now.duration_since(*at) < CACHE_TTL);
            if self.entries.len() >= CACHE_CAPACITY {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(container_id, (now, found));
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// One runtime per test: the client's connection lives on it.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Slack on top of a timeout: generous, because these tests check that
    /// a call is bounded (does not hang), not how fast a busy CI machine is.
    const SLACK: Duration = Duration::from_secs(5);

    /// A directory of its own for a test, removed on drop, failure or not.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("oom-probe-cri-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn dead_missing_and_stale_sockets_fail_fast_and_say_what_to_do() {
        let temp = TempDir::new("dead");
        let dir = &temp.0;
        let rt = runtime();

        // Accepted by the kernel, never answered: a hung runtime.
        let silent = dir.join("silent.sock");
        let _listener = UnixListener::bind(&silent).unwrap();
        let started = Instant::now();
        let err = rt.block_on(CriClient::connect(Some(silent))).err().unwrap();
        assert!(matches!(err, CriError::Timeout { .. }), "{err}");
        assert!(
            started.elapsed() < 2 * CALL_TIMEOUT + SLACK,
            "{:?}",
            started.elapsed()
        );

        let err = rt
            .block_on(CriClient::connect(Some(dir.join("missing.sock"))))
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("does not exist") && text.contains("--cri-socket"),
            "{text}"
        );

        // A runtime that died and left its socket file behind.
        let stale = dir.join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let err = rt.block_on(CriClient::connect(Some(stale))).err().unwrap();
        assert!(err.to_string().contains("nothing listens"), "{err}");

        let plain = dir.join("plain");
        fs::write(&plain, "").unwrap();
        let err = rt.block_on(CriClient::connect(Some(plain))).err().unwrap();
        assert!(err.to_string().contains("not a unix socket"), "{err}");
    }

    fn named(id: &str) -> Option<CriContainer> {
        Some(CriContainer {
            container_id: id.into(),
            container_name: "app".into(),
            pod_name: Some("web-0".into()),
            namespace: Some("shop".into()),
            pod_uid: Some("0b7c".into()),
            sandbox_id: "sandbox".into(),
            init_pid: None,
            exited: false,
        })
    }

    /// The enricher may run lookups in spawned tasks: the client and its
    /// futures must be shareable across threads.
    #[test]
    fn client_and_lookups_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: &T) {}
        send_sync::<CriClient>();
        send_sync::<CriError>();
        let lookup = |client: &'static CriClient| client.container("id");
        let _ = |client: &'static CriClient| send(&lookup(client));
    }

    #[test]
    fn the_init_pid_comes_from_the_verbose_info() {
        let info = |json: &str| std::collections::HashMap::from([("info".into(), json.into())]);
        assert_eq!(
            init_pid_from_info(&info(r#"{"sandboxID":"s","pid":4242,"removing":false}"#)),
            Some(4242)
        );
        assert_eq!(init_pid_from_info(&info(r#"{"pid":0}"#)), None, "stopped");
        assert_eq!(init_pid_from_info(&info("not json")), None);
        assert_eq!(init_pid_from_info(&Default::default()), None);
    }

    #[test]
    fn cache_answers_until_the_ttl_then_forgets() {
        let mut cache = Cache::default();
        let start = Instant::now();
        cache.insert("a".into(), named("a"), start);
        cache.insert("gone".into(), None, start);
        assert_eq!(cache.get("a", start + CACHE_TTL / 2), Some(named("a")));
        assert_eq!(
            cache.get("gone", start),
            Some(None),
            "a no is an answer too"
        );
        assert_eq!(cache.get("a", start + CACHE_TTL), None);
        assert_eq!(cache.get("never", start), None);
        assert!(
            !cache.entries.contains_key("a"),
            "expired entries are dropped"
        );
    }

    #[test]
    fn cache_stays_bounded_and_evicts_the_oldest() {
        let mut cache = Cache::default();
        let start = Instant::now();
        for i in 0..CACHE_CAPACITY {
            cache.insert(
                format!("c{i}"),
                None,
                start + Duration::from_millis(i as u64),
            );
        }
        cache.insert("new".into(), named("new"), start + Duration::from_secs(1));
        assert_eq!(cache.entries.len(), CACHE_CAPACITY);
        assert!(!cache.entries.contains_key("c0"), "the oldest went");
        assert!(cache.entries.contains_key("c1") && cache.entries.contains_key("new"));
    }

    #[test]
    fn sandbox_metadata_wins_and_labels_fill_in() {
        let labels = [
            (LABEL_CONTAINER_NAME, "label-app"),
            (LABEL_POD_NAME, "label-pod"),
            (LABEL_POD_NAMESPACE, "label-ns"),
            (LABEL_POD_UID, "label-uid"),
        ];
        let container = Container {
            id: "c1".into(),
            pod_sandbox_id: "s1".into(),
            metadata: Some(oom_probe_cri::v1::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let sandbox = oom_probe_cri::v1::PodSandboxMetadata {
            name: "web-0".into(),
            uid: "0b7c".into(),
            namespace: "shop".into(),
            attempt: 0,
        };
        assert_eq!(
            describe(container.clone(), Some(sandbox)),
            named("c1")
                .map(|c| CriContainer {
                    sandbox_id: "s1".into(),
                    init_pid: None,
                    exited: false,
                    ..c
                })
                .unwrap()
        );
        let from_labels = describe(container, None);
        assert_eq!(from_labels.pod_name.as_deref(), Some("label-pod"));
        assert_eq!(from_labels.namespace.as_deref(), Some("label-ns"));
        assert_eq!(from_labels.pod_uid.as_deref(), Some("label-uid"));
        let bare = describe(
            Container {
                id: "c2".into(),
                ..Default::default()
            },
            None,
        );
        assert_eq!(
            (bare.pod_name, bare.namespace, bare.pod_uid),
            (None, None, None)
        );
    }

    #[test]
    fn detection_takes_the_first_socket_and_skips_other_files() {
        let temp = TempDir::new("detect");
        let dir = &temp.0;
        let plain = dir.join("plain.sock");
        fs::write(&plain, "").unwrap();
        let real = dir.join("real.sock");
        let _listener = UnixListener::bind(&real).unwrap();
        let missing = dir.join("missing.sock");
        let found = first_socket([missing.as_path(), plain.as_path(), real.as_path()]);
        assert_eq!(found, Some(real));
        assert_eq!(first_socket([missing.as_path(), plain.as_path()]), None);
    }
}
