//! The agent's one HTTP listener: `/metrics` for Prometheus, `/healthz` for
//! liveness and `/readyz`, which turns ready only once the probes are
//! attached (a pod that cannot see kills must not look healthy).
//!
//! Any pod on the network can reach it, so no client can hold it
//! (docs/security.md, "The HTTP listener"): a request's header must arrive
//! within [`HEADER_READ_TIMEOUT`] (an idle keep-alive connection waits for
//! its next header under the same clock), fit in [`MAX_HEADER_BYTES`] and
//! [`MAX_HEADERS`] headers, and carry no body over [`MAX_BODY_BYTES`]; a
//! connection lives at most [`MAX_CONNECTION_AGE`]; at most
//! [`MAX_CONNECTIONS`] are open, and one more closes the oldest, so a flood
//! of slow clients cannot lock out the kubelet's probes or the scraper.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Notify};

/// A client must send a whole request header within this long of the
/// connection opening, or of its previous response.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a request header may take (hyper's smallest read buffer).
pub const MAX_HEADER_BYTES: usize = 8192;
/// The most header fields in a request.
pub const MAX_HEADERS: usize = 32;
/// The largest request body accepted (the endpoints read none): 413 above.
pub const MAX_BODY_BYTES: u64 = 1024;
/// A connection is closed after this long (after its response in flight).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);
/// Connections open at once; one more closes the oldest.
pub const MAX_CONNECTIONS: usize = 128;

use crate::sink::metrics::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

/// Binds `addr` now, so a busy port fails start-up with a clear message.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--listen)"))
}

/// Serves until the runtime stops, within the limits of the module doc.
pub async fn serve(listener: TcpListener, shared: Shared) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(middleware::from_fn(refuse_bodies))
        .with_state(shared);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    let http = Arc::new(http);
    let open = Arc::new(Mutex::new(OpenConnections::default()));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors, mostly: wait rather than spin.
                tracing::debug!("HTTP accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (id, close) = lock(&open).admit();
        let (http, app, open) = (http.clone(), app.clone(), open.clone());
        tokio::spawn(async move {
            let service = TowerToHyperService::new(app);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = close.notified() => {}
                _ = tokio::time::sleep(MAX_CONNECTION_AGE) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, connection).await;
                }
            }
            lock(&open).remove(id);
        });
    }
}

fn lock(open: &Mutex<OpenConnections>) -> std::sync::MutexGuard<'_, OpenConnections> {
    open.lock().unwrap_or_else(|e| e.into_inner())
}

/// The open connections, oldest first, each with what closes it.
#[derive(Default)]
struct OpenConnections {
    next_id: u64,
    open: VecDeque<(u64, Arc<Notify>)>,
}

impl OpenConnections {
    /// Takes a new connection; past [`MAX_CONNECTIONS`] the oldest is told
    /// to close. Returns its id and what tells it to close.
    fn admit(&mut self) -> (u64, Arc<Notify>) {
        if self.open.len() >= MAX_CONNECTIONS {
            if let Some((_, oldest)) = self.open.pop_front() {
                // A stored permit: it closes even if not yet waiting.
                oldest.notify_one();
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let close = Arc::new(Notify::new());
        self.open.push_back((id, close.clone()));
        (id, close)
    }

    /// Forgets a connection that ended (it may be gone already).
    fn remove(&mut self, id: u64) {
        self.open.retain(|(open, _)| *open != id);
    }
}

/// 413 for a request that says it carries a body over [`MAX_BODY_BYTES`]
/// or streams one (chunked): the endpoints read none, and hyper would
/// otherwise read it to keep the connection.
async fn refuse_bodies(request: Request, next: Next) -> Response {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    if chunked || length.is_some_and(|l| l > MAX_BODY_BYTES) {
        let mut response =
            (StatusCode::PAYLOAD_TOO_LARGE, "no request body expected\n").into_response();
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    next.run(request).await
}

/// OpenMetrics for a scraper that accepts it (Prometheus does), else the
/// classic text format, as Prometheus' own client libraries negotiate.
async fn metrics(State(shared): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            shared.metrics.encode(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            shared.metrics.encode_prometheus_text(),
        )
    }
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    if shared.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "probes not attached yet\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_the_oldest_connection_is_told_to_close() {
        let mut open = OpenConnections::default();
        let admitted: Vec<_> = (0..MAX_CONNECTIONS).map(|_| open.admit()).collect();
        assert_eq!(open.open.len(), MAX_CONNECTIONS);
        let (newest, _) = open.admit();
        assert_eq!(newest, MAX_CONNECTIONS as u64);
        assert_eq!(open.open.len(), MAX_CONNECTIONS);
        assert_eq!(
            open.open.front().unwrap().0,
            1,
            "connection 0 left the list"
        );
        // Connection 0 holds a permit: its notified() completes at once.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let told = |close: &Arc<Notify>| {
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_millis(10), close.notified())
                    .await
                    .is_ok()
            })
        };
        assert!(told(&admitted[0].1));
        assert!(!told(&admitted[1].1));
        open.remove(5);
        open.remove(0);
        assert_eq!(open.open.len(), MAX_CONNECTIONS - 1);
        assert!(open.open.iter().all(|(id, _)| *id != 5));
    }
}
