//! The HTTP listener's own thread: `/metrics`, `/healthz` and `/readyz` are
//! served by a runtime of their own, so a busy kill path (a burst being
//! drained, a slow batch) does not hold back scrapes and liveness probes,
//! and slow or many clients do not hold back the kill path.

use std::{net::SocketAddr, sync::mpsc};

use anyhow::{Context, Result};

use crate::sink::http;

/// Starts a thread with a current-thread tokio runtime that binds `addr`
/// and serves [`http::serve`] on it for as long as the process lives.
/// Returns once the port is bound. Errors: the thread or its runtime could
/// not start, or the port could not be bound (a busy port fails start-up
/// with the message of [`http::bind`]).
pub fn spawn(addr: SocketAddr, shared: http::Shared) -> Result<()> {
    let (bound_tx, bound_rx) = mpsc::sync_channel::<Result<()>>(1);
    std::thread::Builder::new()
        .name("oom-probe-http".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = bound_tx.send(Err(anyhow::Error::from(err)
                        .context("cannot start the HTTP listener's runtime")));
                    return;
                }
            };
            runtime.block_on(async move {
                match http::bind(addr).await {
                    Ok(listener) => {
                        let _ = bound_tx.send(Ok(()));
                        http::serve(listener, shared).await;
                    }
                    Err(err) => {
                        let _ = bound_tx.send(Err(err));
                    }
                }
            });
        })
        .context("cannot start the HTTP listener's thread")?;
    bound_rx
        .recv()
        .context("the HTTP listener's thread ended before binding")?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        io::{Read, Write},
        sync::{atomic::AtomicBool, Arc},
        time::Duration,
    };

    use crate::sink::metrics::Metrics;

    fn shared() -> http::Shared {
        http::Shared {
            metrics: Arc::new(Metrics::new(Duration::from_secs(60))),
            ready: Arc::new(AtomicBool::new(true)),
        }
    }

    #[test]
    fn answers_while_the_calling_thread_is_busy_and_a_busy_port_fails() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = port.local_addr().unwrap();
        drop(port);
        spawn(addr, shared()).unwrap();
        // The caller never yields to any runtime: the listener answers on
        // its own.
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
        let busy = spawn(addr, shared()).unwrap_err();
        assert!(format!("{busy:#}").contains("--listen"), "{busy:#}");
    }
}
