//! The API server client, found the way kubectl and in-cluster agents find it.
//!
//! Tested against a real HTTP API server in `tests/kube_api.rs`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};

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
