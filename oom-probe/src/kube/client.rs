//! The API server client, found the way kubectl and in-cluster agents find it.

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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::Api;
    use oom_probe_test_support::apiserver::{pod, ApiServer};

    const UID: &str = "7b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

    #[tokio::test]
    async fn client_reads_a_kubeconfig_and_names_a_bad_one() {
        let server = ApiServer::start().unwrap();
        server.apply_pod(pod("shop", "web-7d9f8-x2x4q", UID, "node-a"));
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
}
