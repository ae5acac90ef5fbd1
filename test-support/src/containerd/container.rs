//! Containers in a pod, as the kubelet hands them to the CRI: what they
//! run ([`ContainerSpec`]), starting them, and reading their log and exit.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};
use oom_probe_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, KeyValue, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, Mount, StartContainerRequest,
};

use super::{pod::kubelet_namespaces, Pod, IMAGE};

impl<'a> Pod<'a> {
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

/// What a container runs and how, as the kubelet hands it to the CRI
/// ([`Pod::start`]). The namespaces are always the kubelet's for a
/// host-network pod.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    /// The container's name in the pod.
    pub name: String,
    /// An image the runtime has ([`IMAGE`], or one from
    /// [`Containerd::import_archive`](super::Containerd::import_archive)).
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
