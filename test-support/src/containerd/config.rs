//! The private containerd's config file: where it keeps its state and
//! listens, and how its CRI plugin runs pods.

use std::path::Path;

use super::IMAGE;

/// The daemon's config: its own root, state and sockets; the CRI with the
/// cgroupfs driver, no CNI, and no oom_score_adj below its own (this
/// machine lacks CAP_SYS_RESOURCE).
pub(super) fn daemon_config(dir: &Path, socket: &Path, cri: bool) -> String {
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
