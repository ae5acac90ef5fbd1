//! A watch: every matching change after the client's resource version,
//! then each new one as it happens, as newline-delimited watch events.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use serde_json::{json, Value};

use super::{selector::Selector, store::Shared};

/// Sends every matching change after `from`, then each new one as it
/// happens, until the client goes, the timeout passes, the server is made
/// to fail, or it stops. `from == 0` ("any version") starts with the
/// current pods as ADDED, as the real server does.
pub(super) async fn stream_watch(
    shared: Arc<Shared>,
    selector: Selector,
    from: u64,
    bookmarks: bool,
    timeout: Option<Duration>,
    mut tx: http_body_util::channel::Sender<Bytes>,
) {
    let mut changed = shared.changed.subscribe();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut sent = from;
    let mut bookmarked = false;
    let mut gone = false;
    let mut lines = Vec::new();
    {
        let state = shared.lock();
        if from == 0 {
            for pod in state.pods.values().filter(|pod| selector.matches(pod)) {
                lines.push(watch_line("ADDED", pod));
            }
            sent = state.resource_version;
        }
    }
    loop {
        while shared.lock().hanging {
            if changed.changed().await.is_err() {
                return;
            }
        }
        {
            let state = shared.lock();
            if state.failing.is_some() {
                return;
            }
            if sent < state.forgotten_through {
                let expired = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {sent} ({})", state.forgotten_through),
                    "reason": "Expired", "code": 410,
                });
                lines.push(watch_line("ERROR", &expired));
                gone = true;
            } else {
                for change in state.log.iter().filter(|c| c.rv > sent) {
                    if selector.matches(&change.object) {
                        lines.push(watch_line(change.kind, &change.object));
                    } else if change
                        .before
                        .as_ref()
                        .is_some_and(|before| selector.matches(before))
                    {
                        lines.push(watch_line("DELETED", &change.object));
                    }
                }
                sent = sent.max(state.resource_version);
            }
        }
        if bookmarks && !bookmarked && !gone {
            let bookmark = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": sent.to_string()}});
            lines.push(watch_line("BOOKMARK", &bookmark));
            bookmarked = true;
        }
        for line in lines.drain(..) {
            if tx.send_data(line).await.is_err() {
                return;
            }
        }
        if gone {
            return;
        }
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            change = changed.changed() => if change.is_err() { return },
            _ = expired => return,
        }
    }
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}
