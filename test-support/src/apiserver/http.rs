//! The HTTP side: accepting connections, recording each request, holding
//! or failing it as the test asked, routing it, and the JSON answers.

use std::{convert::Infallible, net::TcpListener as StdTcpListener, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{channel::Channel, combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::Incoming, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::oneshot};

use super::{
    selector::Selector,
    store::{RecordedRequest, Shared},
    watch::stream_watch,
};

pub(super) type Body = BoxBody<Bytes, Infallible>;

pub(super) async fn serve(
    listener: StdTcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("listener");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&shared), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            _ = &mut stop => return,
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let body = match req.into_body().collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(err) => {
            return Ok(status(
                StatusCode::BAD_REQUEST,
                &format!("cannot read body: {err}"),
            ))
        }
    };
    let request = RecordedRequest {
        method: method.to_string(),
        path,
        query,
        body,
    };
    shared.lock().requests.push(request.clone());
    let mut changed = shared.changed.subscribe();
    while shared.lock().hanging {
        if changed.changed().await.is_err() {
            break;
        }
    }
    let failing = shared.lock().failing;
    if let Some(code) = failing {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Ok(status(code, "the test made this server fail"));
    }
    Ok(route(shared, &method, &request))
}

/// Dispatches on method and path segments.
pub(super) fn route(
    shared: Arc<Shared>,
    method: &Method,
    request: &RecordedRequest,
) -> Response<Body> {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["api", "v1", "pods"]) => pods(shared, None, request),
        (&Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => pods(shared, Some(ns), request),
        (&Method::GET, ["api", "v1", "namespaces", ns, "pods", name]) => {
            match shared
                .lock()
                .pods
                .get(&((*ns).to_owned(), (*name).to_owned()))
            {
                Some(pod) => json_response(StatusCode::OK, pod),
                None => status(StatusCode::NOT_FOUND, &format!("pods \"{name}\" not found")),
            }
        }
        // Events: accepted and echoed; the test asserts on the recorded bodies.
        (&Method::POST, ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
            echo(StatusCode::CREATED, request)
        }
        (&Method::PATCH, ["apis", "events.k8s.io", "v1", "namespaces", _, "events", _]) => {
            echo(StatusCode::OK, request)
        }
        _ => status(
            StatusCode::NOT_FOUND,
            &format!("no route for {method} {}", request.path),
        ),
    }
}

/// Answers with the object the client sent, as the API server answers a
/// create or patch.
fn echo(code: StatusCode, request: &RecordedRequest) -> Response<Body> {
    match serde_json::from_str::<Value>(&request.body) {
        Ok(object) => json_response(code, &object),
        Err(err) => status(StatusCode::BAD_REQUEST, &format!("body is not JSON: {err}")),
    }
}

/// List or watch pods, in all namespaces or one.
fn pods(shared: Arc<Shared>, namespace: Option<&str>, request: &RecordedRequest) -> Response<Body> {
    let selector = match Selector::parse(
        namespace,
        request.query("fieldSelector").unwrap_or_default(),
    ) {
        Ok(selector) => selector,
        Err(message) => return status(StatusCode::BAD_REQUEST, &message),
    };
    if request
        .query("watch")
        .is_some_and(|w| w == "true" || w == "1")
    {
        let from = request
            .query("resourceVersion")
            .unwrap_or_default()
            .parse::<u64>()
            .unwrap_or(0);
        let bookmarks = request.query("allowWatchBookmarks") == Some("true");
        let timeout = request
            .query("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs);
        let (tx, body) = Channel::<Bytes, Infallible>::new(16);
        tokio::spawn(stream_watch(shared, selector, from, bookmarks, timeout, tx));
        return Response::builder()
            .header("content-type", "application/json")
            .body(body.boxed())
            .expect("response");
    }
    let state = shared.lock();
    let items: Vec<&Value> = state
        .pods
        .values()
        .filter(|pod| selector.matches(pod))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": "v1",
            "kind": "PodList",
            "metadata": {"resourceVersion": state.resource_version.to_string()},
            "items": items,
        }),
    )
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).expect("json"))).boxed())
        .expect("response")
}

/// A `Status` object, as the real server answers errors.
fn status(code: StatusCode, message: &str) -> Response<Body> {
    let reason = match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::INTERNAL_SERVER_ERROR => "InternalError",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        _ => "",
    };
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}
