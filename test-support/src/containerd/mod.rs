//! A private containerd with its CRI plugin, and pods and containers made
//! through the CRI the way the kubelet makes them: the real thing oom-probe
//! must name victims in, with no Kubernetes and no image registry.
//!
//! The daemon gets its own root, state and socket in a temporary directory
//! (never the node's `/run/containerd/containerd.sock`), runs host-network
//! pods (no CNI needed) with the cgroupfs layout
//! `/kubepods/burstable/pod<uid>/<container id>`, and uses an image built
//! here from `oom-hog` (which also plays the pod's pause process). Everything
//! made is removed on drop, failed tests included: containers, sandboxes,
//! cgroups, shims, mounts, the daemon and its directory.
//!
//! The tests fail, not skip, when containerd cannot start: `cargo xtask test`
//! installs what it needs.
//!
//! Long (about 970 lines) because it is one resource with one lifecycle: the
//! daemon, its image, pods and containers, and their cleanup, which must stay
//! together to be right.

use std::{
    collections::BTreeSet,
    env,
    fs::{self, File},
    future::Future,
    io::Read,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use oom_probe_cgroupfs::{mountinfo, testing};
use oom_probe_cri::v1::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, ImageStatusRequest, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListContainersRequest, ListPodSandboxRequest, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint};

/// The image every pod and container runs: `oom-hog` and the libraries it
/// links, imported from an archive made here (there is no registry).
pub const IMAGE: &str = "localhost/oom-probe/oom-hog:test";
/// The Kubernetes namespace the test pods claim to be in.
pub const NAMESPACE: &str = "oom-probe-test";
/// What to run when a tool is missing.
const INSTALL_HINT: &str = "run the tests with `cargo xtask test`, which installs the Debian \
                            packages containerd and runc";
/// containerd's namespace for what the CRI makes.
const CRI_NAMESPACE: &str = "k8s.io";
/// One CRI call while setting up or tearing down; pod start can be slow on
/// a loaded machine.
const RPC_TIMEOUT: Duration = Duration::from_secs(60);

static NEXT_DAEMON: AtomicU32 = AtomicU32::new(0);

/// A running private containerd. Dropping it removes everything it made.
pub struct Containerd {
    dir: PathBuf,
    socket: PathBuf,
    daemon: Child,
    /// The harness is synchronous like the rest of it; gRPC runs here.
    runtime: tokio::runtime::Runtime,
    /// `None` until the CRI answers, and for a daemon started without it.
    cri: Option<Channel>,
}

impl Containerd {
    /// Starts containerd with its CRI plugin and imports [`IMAGE`].
    pub fn start() -> Result<Self> {
        let mut containerd = Self::spawn(true)?;
        containerd.wait_for_cri()?;
        containerd.import_image()?;
        Ok(containerd)
    }

    /// Starts containerd with the CRI plugin disabled, as some nodes run it
    /// (Docker's own containerd): a socket that answers gRPC but not the CRI.
    pub fn start_without_cri() -> Result<Self> {
        let containerd = Self::spawn(false)?;
        let deadline = Instant::now() + super::START_TIMEOUT;
        while !containerd
            .ctr(&["version"])
            .is_ok_and(|o| o.status.success())
        {
            containerd.check_alive()?;
            if Instant::now() > deadline {
                bail!("containerd never answered: {}", containerd.log_tail());
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(containerd)
    }

    /// The daemon's gRPC socket, for `oom-probe watch --cri-socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops the daemon (SIGSTOP) until the guard is dropped: a runtime that
    /// holds connections open and never answers, the case timeouts are for.
    pub fn freeze(&self) -> Frozen<'_> {
        let pid = self.daemon.id();
        signal(pid, libc::SIGSTOP);
        // SIGSTOP takes effect per thread as each next enters the kernel;
        // wait until every thread is stopped, or a busy one still answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Frozen { containerd: self }
    }

    /// Creates and starts a pod sandbox the way the kubelet does for a
    /// burstable pod: cgroup parent `/kubepods/burstable/pod<uid>`, the
    /// kubelet's labels, host network, a pid namespace per container.
    pub fn run_pod(&self, name: &str) -> Result<Pod<'_>> {
        self.run_pod_with(name, kubelet_namespaces())
    }

    /// [`Containerd::run_pod`] for a pod with `shareProcessNamespace: true`:
    /// one pid namespace for the pod, whose pid 1 is the sandbox's pause
    /// process, as the kubelet asks for it.
    pub fn run_pod_sharing_pids(&self, name: &str) -> Result<Pod<'_>> {
        self.run_pod_with(
            name,
            NamespaceOption {
                pid: NamespaceMode::Pod as i32,
                ..kubelet_namespaces()
            },
        )
    }

    /// [`Containerd::run_pod`] for a pod with `hostPID: true`: its
    /// containers share the node's pid namespace.
    pub fn run_pod_in_node_pids(&self, name: &str) -> Result<Pod<'_>> {
        self.run_pod_with(
            name,
            NamespaceOption {
                pid: NamespaceMode::Node as i32,
                ..kubelet_namespaces()
            },
        )
    }

    fn run_pod_with(&self, name: &str, namespaces: NamespaceOption) -> Result<Pod<'_>> {
        let uid = random_uid()?;
        let log_dir = self.dir.join(format!("pods/{NAMESPACE}_{name}_{uid}"));
        fs::create_dir_all(&log_dir)?;
        let cgroup_parent = format!("/kubepods/burstable/pod{uid}");
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: NAMESPACE.into(),
                attempt: 0,
            }),
            log_directory: log_dir.display().to_string(),
            labels: [
                ("io.kubernetes.pod.name", name),
                ("io.kubernetes.pod.namespace", NAMESPACE),
                ("io.kubernetes.pod.uid", &uid),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        PodCgroups::acquire();
        // From here on, dropping the pod cleans up whatever got made.
        let mut pod = Pod {
            containerd: self,
            config,
            uid,
            sandbox_id: String::new(),
            cgroup_parent,
        };
        let request = RunPodSandboxRequest {
            config: Some(pod.config.clone()),
            runtime_handler: String::new(),
        };
        pod.sandbox_id = self
            .rpc("RunPodSandbox", |mut c| async move {
                c.run_pod_sandbox(request).await
            })?
            .pod_sandbox_id;
        let (memory_root, _) = testing::memory_root()?;
        let sandbox_cgroup = memory_root.join(pod.sandbox_cgroup_path().trim_start_matches('/'));
        if !sandbox_cgroup.is_dir() {
            bail!(
                "the sandbox's memory cgroup is not at {} (cgroupfs layout expected)",
                sandbox_cgroup.display()
            );
        }
        Ok(pod)
    }

    fn spawn(cri: bool) -> Result<Self> {
        for tool in ["containerd", "containerd-shim-runc-v2", "runc", "ctr"] {
            if !on_path(tool) {
                bail!("{tool} is not installed (or not on PATH): {INSTALL_HINT}");
            }
        }
        let dir = env::temp_dir().join(format!(
            "oom-probe-containerd-{}-{}",
            std::process::id(),
            NEXT_DAEMON.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir); // left by an earlier process with this pid
        fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        fs::write(&config, daemon_config(&dir, &socket, cri))?;
        let log = File::create(dir.join("containerd.log"))?;
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. If the test process dies
        // without running drop (an abort), the daemon dies with it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        };
        let daemon = command
            .spawn()
            .with_context(|| format!("cannot start containerd: {INSTALL_HINT}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            dir,
            socket,
            daemon,
            runtime,
            cri: None,
        })
    }

    /// Waits until the CRI plugin answers (it initialises after the socket
    /// is up).
    fn wait_for_cri(&mut self) -> Result<()> {
        let deadline = Instant::now() + super::START_TIMEOUT;
        let endpoint = Endpoint::from_shared(format!("unix://{}", self.socket.display()))?
            .timeout(RPC_TIMEOUT);
        let mut last_error = String::from("socket never appeared");
        while Instant::now() < deadline {
            self.check_alive()?;
            if self.socket.exists() {
                let answer = self.runtime.block_on(async {
                    let channel = endpoint.connect().await?;
                    let mut client = RuntimeServiceClient::new(channel.clone());
                    let request = VersionRequest {
                        version: "v1".into(),
                    };
                    client.version(request).await?;
                    anyhow::Ok(channel)
                });
                match answer {
                    Ok(channel) => {
                        self.cri = Some(channel);
                        return Ok(());
                    }
                    Err(e) => last_error = format!("{e:#}"),
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "containerd's CRI never answered ({last_error}): {}",
            self.log_tail()
        )
    }

    /// Builds the image archive and imports it with `ctr`, then waits until
    /// the CRI's own image store has it.
    fn import_image(&self) -> Result<()> {
        let archive = self.dir.join("image.tar");
        write_image_archive(
            &archive,
            &super::built_binary("oom-hog", "OOM_HOG_BIN", "oom-probe-tests"),
        )?;
        self.import_archive(&archive, IMAGE)
    }

    /// The daemon's own directory, for files a test mounts into containers.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Imports an OCI image layout archive (as [`write_oci_archive`] makes)
    /// named `image` and waits until the CRI's image store lists it.
    pub fn import_archive(&self, archive: &Path, image: &str) -> Result<()> {
        let output = self.ctr(&["images", "import", &archive.display().to_string()])?;
        if !output.status.success() {
            bail!(
                "ctr images import failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let deadline = Instant::now() + super::START_TIMEOUT;
        loop {
            let spec = ImageSpec {
                image: image.into(),
                ..Default::default()
            };
            let status = self.images(|mut c| async move {
                let request = ImageStatusRequest {
                    image: Some(spec),
                    verbose: false,
                };
                c.image_status(request).await
            })?;
            if status.image.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the CRI never listed the imported image {image}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn ctr(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", CRI_NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run ctr: {INSTALL_HINT}"))
    }

    /// Runs one runtime-service call on the harness's runtime, bounded.
    fn rpc<T, F, Fut>(&self, method: &str, call: F) -> Result<T>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let channel = self
            .cri
            .clone()
            .ok_or_else(|| anyhow!("no CRI on this containerd"))?;
        self.block_on_rpc(method, call(RuntimeServiceClient::new(channel)))
    }

    /// Like [`Containerd::rpc`] for the image service.
    fn images<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce(ImageServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let channel = self
            .cri
            .clone()
            .ok_or_else(|| anyhow!("no CRI on this containerd"))?;
        self.block_on_rpc("ImageStatus", call(ImageServiceClient::new(channel)))
    }

    fn block_on_rpc<T>(
        &self,
        method: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        let bounded = async { tokio::time::timeout(RPC_TIMEOUT, call).await };
        match self.runtime.block_on(bounded) {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => bail!(
                "CRI {method} failed: {:?}: {} (containerd log: {})",
                status.code(),
                status.message(),
                self.log_tail()
            ),
            Err(_) => bail!("CRI {method} took more than {RPC_TIMEOUT:?}"),
        }
    }

    fn check_alive(&self) -> Result<()> {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let reaped = unsafe { libc::waitpid(self.daemon.id() as i32, &mut status, libc::WNOHANG) };
        if reaped != 0 {
            bail!("containerd exited: {}", self.log_tail());
        }
        Ok(())
    }

    /// The end of the daemon's log, for error messages.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Stops and removes every pod sandbox still there (pods normally do it
    /// themselves; this covers a pod whose own clean-up failed).
    fn remove_all_pods(&self) {
        let Ok(list) = self.rpc("ListPodSandbox", |mut c| async move {
            c.list_pod_sandbox(ListPodSandboxRequest { filter: None })
                .await
        }) else {
            return;
        };
        for sandbox in list.items {
            self.remove_sandbox(&sandbox.id);
        }
    }

    /// Stops and removes a sandbox and its containers; errors are reported,
    /// not raised (this runs in drop).
    fn remove_sandbox(&self, sandbox_id: &str) {
        let filter = ContainerFilter {
            pod_sandbox_id: sandbox_id.to_string(),
            ..Default::default()
        };
        let containers = self.rpc("ListContainers", |mut c| async move {
            let request = ListContainersRequest {
                filter: Some(filter),
            };
            c.list_containers(request).await
        });
        for container in containers.map(|l| l.containers).unwrap_or_default() {
            let id = container.id;
            let stopped = self.rpc("StopContainer", |mut c| {
                let container_id = id.clone();
                async move {
                    let request = StopContainerRequest {
                        container_id,
                        timeout: 0,
                    };
                    c.stop_container(request).await
                }
            });
            let removed = self.rpc("RemoveContainer", |mut c| {
                let container_id = id.clone();
                async move {
                    c.remove_container(RemoveContainerRequest { container_id })
                        .await
                }
            });
            if let Err(e) = stopped.and(removed) {
                eprintln!("warning: cannot remove test container {id}: {e:#}");
            }
        }
        let id = sandbox_id.to_string();
        let stopped = self.rpc("StopPodSandbox", |mut c| {
            let pod_sandbox_id = id.clone();
            async move {
                c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id })
                    .await
            }
        });
        let removed = self.rpc("RemovePodSandbox", |mut c| {
            let pod_sandbox_id = id.clone();
            async move {
                c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id })
                    .await
            }
        });
        if let Err(e) = stopped.and(removed) {
            eprintln!("warning: cannot remove test pod sandbox {id}: {e:#}");
        }
    }

    /// Shims outlive a killed daemon; theirs name our socket on their
    /// command line.
    fn kill_our_shims(&self) {
        let Ok(procs) = fs::read_dir("/proc") else {
            return;
        };
        let needle = self.socket.display().to_string();
        for entry in procs.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("containerd-shim") && cmdline.contains(&needle) {
                signal(pid, libc::SIGKILL);
            }
        }
    }

    /// Unmounts whatever is still mounted below the daemon's directory
    /// (sandbox /dev/shm, container root filesystems), deepest first.
    /// True when nothing is left mounted there.
    fn unmount_leftovers(&self) -> bool {
        let mounted = || mountinfo::mount_points_under(&mountinfo::read_self(), &self.dir);
        for point in mounted() {
            let Ok(c_path) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
        }
        mounted().is_empty()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        signal(self.daemon.id(), libc::SIGCONT);
        if self.cri.is_some() {
            self.remove_all_pods();
        }
        signal(self.daemon.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.daemon.kill();
                let _ = self.daemon.wait();
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.kill_our_shims();
        if self.unmount_leftovers() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("warning: cannot remove {}: {e}", self.dir.display());
            }
        } else {
            eprintln!(
                "warning: mounts left under {}; not removing it",
                self.dir.display()
            );
        }
    }
}

/// A stopped (SIGSTOP) containerd; resumed on drop.
pub struct Frozen<'a> {
    containerd: &'a Containerd,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        signal(self.containerd.daemon.id(), libc::SIGCONT);
    }
}

/// A pod sandbox, with its containers; dropping it removes them all and
/// its cgroups.
pub struct Pod<'a> {
    containerd: &'a Containerd,
    config: PodSandboxConfig,
    uid: String,
    sandbox_id: String,
    cgroup_parent: String,
}

impl<'a> Pod<'a> {
    /// The pod's uid, as in its cgroup `pod<uid>`.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The pod's name.
    pub fn name(&self) -> &str {
        self.config
            .metadata
            .as_ref()
            .map_or("", |m| m.name.as_str())
    }

    /// The runtime's id of the pod sandbox.
    pub fn sandbox_id(&self) -> &str {
        &self.sandbox_id
    }

    /// The sandbox's memory cgroup as oom-probe reports it (relative to the
    /// hierarchy root): `/kubepods/burstable/pod<uid>/<sandbox id>`.
    pub fn sandbox_cgroup_path(&self) -> String {
        format!("{}/{}", self.cgroup_parent, self.sandbox_id)
    }

    /// Creates and starts a container running `oom-hog ARGS` with a memory
    /// limit, labelled as the kubelet labels containers.
    pub fn start_container(
        &self,
        name: &str,
        memory_limit_bytes: u64,
        args: &[&str],
    ) -> Result<PodContainer<'_>> {
        self.start(ContainerSpec {
            name: name.into(),
            image: IMAGE.into(),
            command: vec!["/oom-hog".into()],
            args: args.iter().map(|a| a.to_string()).collect(),
            memory_limit_bytes,
            ..Default::default()
        })
    }

    /// Creates and starts a container as the kubelet would for `spec`.
    pub fn start(&self, spec: ContainerSpec) -> Result<PodContainer<'_>> {
        let name = spec.name.as_str();
        let mut labels = self.config.labels.clone();
        labels.insert("io.kubernetes.container.name".into(), name.into());
        let log_path = format!("{name}_0.log");
        let mut security = spec.security.unwrap_or_default();
        // The pod's own choice: a pid namespace per container, or the pod's.
        security.namespace_options = self
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|c| c.namespace_options.clone())
            .or_else(|| Some(kubelet_namespaces()));
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: spec.image.clone(),
                ..Default::default()
            }),
            command: spec.command.clone(),
            args: spec.args.clone(),
            envs: spec
                .env
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts: spec.mounts.clone(),
            labels,
            log_path: log_path.clone(),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: i64::try_from(spec.memory_limit_bytes)?,
                    ..Default::default()
                }),
                security_context: Some(security),
            }),
            ..Default::default()
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: self.sandbox_id.clone(),
            config: Some(config),
            sandbox_config: Some(self.config.clone()),
        };
        let id = self
            .containerd
            .rpc("CreateContainer", |mut c| async move {
                c.create_container(request).await
            })?
            .container_id;
        let container_id = id.clone();
        self.containerd.rpc("StartContainer", |mut c| async move {
            c.start_container(StartContainerRequest { container_id })
                .await
        })?;
        Ok(PodContainer {
            pod: self,
            cgroup_path: format!("{}/{id}", self.cgroup_parent),
            log: Path::new(&self.config.log_directory).join(log_path),
            id,
        })
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        // By label, not by id: a sandbox whose creation failed half-way is
        // found too.
        let filter = PodSandboxFilter {
            label_selector: [("io.kubernetes.pod.uid".to_string(), self.uid.clone())].into(),
            ..Default::default()
        };
        let sandboxes = self.containerd.rpc("ListPodSandbox", |mut c| async move {
            let request = ListPodSandboxRequest {
                filter: Some(filter),
            };
            c.list_pod_sandbox(request).await
        });
        match sandboxes {
            Ok(list) => list
                .items
                .iter()
                .for_each(|s| self.containerd.remove_sandbox(&s.id)),
            Err(e) => eprintln!("warning: cannot list test pod {}: {e:#}", self.uid),
        }
        for hierarchy in mountinfo::cgroup_mount_points(&mountinfo::read_self()) {
            let dir = hierarchy.join(self.cgroup_parent.trim_start_matches('/'));
            if dir.exists() {
                testing::remove_tree(&dir);
            }
        }
        PodCgroups::release();
    }
}

/// What a container runs and how, as the kubelet hands it to the CRI
/// ([`Pod::start`]). The namespaces are always the kubelet's for a
/// host-network pod.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    /// The container's name in the pod.
    pub name: String,
    /// An image the runtime has ([`IMAGE`], or one from
    /// [`Containerd::import_archive`]).
    pub image: String,
    /// The entrypoint; empty for the image's own.
    pub command: Vec<String>,
    /// The arguments; empty for the image's own.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Host paths mounted in.
    pub mounts: Vec<Mount>,
    /// The memory limit in bytes (0: none).
    pub memory_limit_bytes: u64,
    /// User, capabilities, read-only root... (`None`: the runtime's defaults).
    pub security: Option<LinuxContainerSecurityContext>,
}

/// A started container of a [`Pod`] (removed with the pod).
pub struct PodContainer<'a> {
    pod: &'a Pod<'a>,
    id: String,
    cgroup_path: String,
    log: PathBuf,
}

/// How a container ended.
#[derive(Debug)]
pub struct ContainerExit {
    /// Its exit code (137 after SIGKILL).
    pub exit_code: i32,
    /// The runtime's reason, `OOMKilled` after a memory cgroup OOM kill.
    pub reason: String,
}

impl PodContainer<'_> {
    /// The runtime's full container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's memory cgroup as oom-probe reports it (relative to
    /// the hierarchy root): `/kubepods/burstable/pod<uid>/<container id>`.
    pub fn cgroup_path(&self) -> &str {
        &self.cgroup_path
    }

    /// What the container wrote to stdout and stderr so far, one line per
    /// line written (the CRI log's time and stream prefixes removed).
    pub fn log(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Waits until the container's log has a line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_for_log_with(&[needle], timeout)
    }

    /// [`PodContainer::wait_for_log`] for the first line holding every one
    /// of `needles`.
    pub fn wait_for_log_with(&self, needles: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(line) = log
                .lines()
                .find(|l| needles.iter().all(|needle| l.contains(needle)))
            {
                return Ok(line.to_string());
            }
            if Instant::now() > deadline {
                bail!("container log never said all of {needles:?}: {log}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the runtime reports the container exited.
    pub fn wait_for_exit(&self, timeout: Duration) -> Result<ContainerExit> {
        let deadline = Instant::now() + timeout;
        loop {
            let container_id = self.id.clone();
            let status = self
                .pod
                .containerd
                .rpc("ContainerStatus", |mut c| async move {
                    let request = ContainerStatusRequest {
                        container_id,
                        verbose: false,
                    };
                    c.container_status(request).await
                })?
                .status
                .ok_or_else(|| anyhow!("ContainerStatus without a status"))?;
            if status.state == ContainerState::ContainerExited as i32 {
                return Ok(ContainerExit {
                    exit_code: status.exit_code,
                    reason: status.reason,
                });
            }
            if Instant::now() > deadline {
                bail!("container did not exit in {timeout:?}: {}", self.log());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What the kubelet asks for a pod without host PID/IPC sharing but with
/// host network: the network of the node, a pid namespace per container.
fn kubelet_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The daemon's config: its own root, state and sockets; the CRI with the
/// cgroupfs driver, no CNI, and no oom_score_adj below its own (this
/// machine lacks CAP_SYS_RESOURCE).
fn daemon_config(dir: &Path, socket: &Path, cri: bool) -> String {
    let d = dir.display();
    let disabled = if cri {
        ""
    } else {
        "\"io.containerd.grpc.v1.cri\""
    };
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [{disabled}]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"#,
        socket = socket.display()
    )
}

/// Writes an OCI image layout archive (what `ctr images import` reads) of
/// one layer holding `hog` as `/oom-hog` plus the shared libraries it
/// links, at the paths the dynamic loader looks for them. Entrypoint
/// `/oom-hog --pause`: the sandbox's pause process.
fn write_image_archive(archive: &Path, hog: &Path) -> Result<()> {
    let mut files = vec![(PathBuf::from("oom-hog"), fs::read(hog)?, 0o755)];
    for library in shared_libraries(hog)? {
        let inside = library.strip_prefix("/").unwrap_or(&library).to_path_buf();
        let bytes = fs::read(&library).with_context(|| format!("read {}", library.display()))?;
        files.push((inside, bytes, 0o755));
    }
    let config = json!({"Entrypoint": ["/oom-hog"], "Cmd": ["--pause"]});
    write_oci_archive(archive, IMAGE, &files, config)
}

/// Writes an OCI image layout archive (what `ctr images import` and
/// `docker load` read) named `name`, of one layer holding `files` (path
/// inside the image without the leading `/`, bytes, mode; parent
/// directories are added) and the image config's `config` object
/// (`Entrypoint`, `Cmd`...).
pub fn write_oci_archive(
    archive: &Path,
    name: &str,
    files: &[(PathBuf, Vec<u8>, u32)],
    config: serde_json::Value,
) -> Result<()> {
    let arch = match env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no OCI name for architecture {other}"),
    };
    let mut layer = tar::Builder::new(Vec::new());
    let dirs: BTreeSet<&Path> = files
        .iter()
        .flat_map(|(inside, _, _)| inside.ancestors().skip(1))
        .filter(|d| !d.as_os_str().is_empty())
        .collect();
    for dir in dirs {
        let mut header = tar_header(tar::EntryType::Directory, 0o755, 0);
        layer.append_data(&mut header, dir, std::io::empty())?;
    }
    for (inside, bytes, mode) in files {
        let mut header = tar_header(tar::EntryType::Regular, *mode, bytes.len() as u64);
        layer.append_data(&mut header, inside, bytes.as_slice())?;
    }
    let layer = layer.into_inner()?;
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    }))?;
    let mut manifest_descriptor =
        descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    manifest_descriptor["platform"] = json!({"architecture": arch, "os": "linux"});
    manifest_descriptor["annotations"] = json!({"io.containerd.image.name": name});
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_descriptor],
    }))?;
    let mut out = tar::Builder::new(File::create(archive)?);
    let mut add = |path: String, bytes: &[u8]| -> Result<()> {
        let mut header = tar_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        Ok(out.append_data(&mut header, path, bytes)?)
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json".into(), &index)?;
    for blob in [&layer, &config, &manifest] {
        let hex = digest(blob).trim_start_matches("sha256:").to_string();
        add(format!("blobs/sha256/{hex}"), blob)?;
    }
    out.into_inner()?;
    Ok(())
}

fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": digest(bytes), "size": bytes.len()})
}

/// The shared libraries `binary` loads, loader included, as `ldd` lists
/// them; none for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd")?;
    if !output.status.success() {
        return Ok(Vec::new()); // "not a dynamic executable"
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect())
}

/// A fresh pod uid, formatted like the kubelet's (a random UUID).
fn random_uid() -> Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

fn on_path(tool: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// True when every thread of `pid` is in state T (stopped).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit(')')
                    .next()
                    .map(|rest| rest.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    })
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, signal) };
}

/// `/kubepods` and `/kubepods/burstable` are shared by every pod of this
/// process: the ones the first pod found missing go when the last pod does.
struct PodCgroups {
    live_pods: usize,
    created: Vec<PathBuf>,
}

static POD_CGROUPS: Mutex<PodCgroups> = Mutex::new(PodCgroups {
    live_pods: 0,
    created: Vec::new(),
});

impl PodCgroups {
    fn acquire() {
        let mut state = POD_CGROUPS.lock().unwrap_or_else(|e| e.into_inner());
        if state.live_pods == 0 {
            state.created = mountinfo::cgroup_mount_points(&mountinfo::read_self())
                .iter()
                .flat_map(|h| [h.join("kubepods/burstable"), h.join("kubepods")])
                .filter(|dir| !dir.exists())
                .collect();
        }
        state.live_pods += 1;
    }

    fn release() {
        let mut state = POD_CGROUPS.lock().unwrap_or_else(|e| e.into_inner());
        state.live_pods -= 1;
        if state.live_pods == 0 {
            // Deepest first; a directory another process uses stays.
            for dir in state.created.drain(..) {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}
