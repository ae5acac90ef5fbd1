//! Pod sandboxes as the kubelet makes them through the CRI: their config
//! and labels, their cgroups under `/kubepods/burstable`, and their removal.

use std::{
    fs::{self, File},
    io::Read,
    path::PathBuf,
    sync::Mutex,
};

use anyhow::{bail, Result};
use oom_probe_cgroupfs::{mountinfo, testing};
use oom_probe_cri::v1::{
    ContainerFilter, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListContainersRequest,
    ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxFilter,
    PodSandboxMetadata, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StopContainerRequest, StopPodSandboxRequest,
};

use super::{Containerd, NAMESPACE};

impl Containerd {
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

    /// Stops and removes every pod sandbox still there (pods normally do it
    /// themselves; this covers a pod whose own clean-up failed).
    pub(super) fn remove_all_pods(&self) {
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
    pub(super) fn remove_sandbox(&self, sandbox_id: &str) {
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
}

/// A pod sandbox, with its containers; dropping it removes them all and
/// its cgroups.
pub struct Pod<'a> {
    pub(super) containerd: &'a Containerd,
    pub(super) config: PodSandboxConfig,
    uid: String,
    pub(super) sandbox_id: String,
    pub(super) cgroup_parent: String,
}

impl Pod<'_> {
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

/// What the kubelet asks for a pod without host PID/IPC sharing but with
/// host network: the network of the node, a pid namespace per container.
pub(super) fn kubelet_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
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
