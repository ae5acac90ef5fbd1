//! Calls to the daemon's CRI: waiting until it answers, then each runtime
//! or image service call run on the harness's runtime, bounded in time.

use std::{
    future::Future,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};
use oom_probe_cri::v1::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    VersionRequest,
};
use tonic::transport::{Channel, Endpoint};

use super::{Containerd, RPC_TIMEOUT};

impl Containerd {
    /// Waits until the CRI plugin answers (it initialises after the socket
    /// is up).
    pub(super) fn wait_for_cri(&mut self) -> Result<()> {
        let deadline = Instant::now() + crate::START_TIMEOUT;
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

    /// Runs one runtime-service call on the harness's runtime, bounded.
    pub(super) fn rpc<T, F, Fut>(&self, method: &str, call: F) -> Result<T>
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
    pub(super) fn images<T, F, Fut>(&self, call: F) -> Result<T>
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
}
