//! What the server keeps: pods under a resource version that every change
//! bumps, the log of changes that watches replay, the requests received,
//! and the faults a test switched on.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, PoisonError},
};

use serde_json::Value;
use tokio::sync::watch;

/// One request the server received, so a test can assert what the client
/// asked for (a field selector, a body it posted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// Query parameters, percent-decoded, in the order they came.
    pub query: Vec<(String, String)>,
    /// The body as text (empty for a GET).
    pub body: String,
}

impl RecordedRequest {
    /// The first value of a query parameter: what most assertions need.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One change to the store, as watches replay it.
pub(super) struct Change {
    pub(super) rv: u64,
    pub(super) kind: &'static str,
    /// The object before a MODIFIED, to tell a watch whose selector it no
    /// longer matches that it is gone.
    pub(super) before: Option<Value>,
    pub(super) object: Value,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) resource_version: u64,
    pub(super) pods: BTreeMap<(String, String), Value>,
    pub(super) log: Vec<Change>,
    pub(super) requests: Vec<RecordedRequest>,
    pub(super) failing: Option<u16>,
    /// Requests are held unanswered and open watches send nothing.
    pub(super) hanging: bool,
    /// Changes up to this version are no longer in `log`.
    pub(super) forgotten_through: u64,
}

impl State {
    pub(super) fn bump(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Ticks on every change, so open watches wake up.
    pub(super) changed: watch::Sender<()>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            changed: watch::Sender::new(()),
        }
    }
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn notify(&self) {
        self.changed.send_replace(());
    }
}

pub(super) fn pod_key(pod: &Value) -> (String, String) {
    let field = |name: &str| {
        pod["metadata"][name]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (field("namespace"), field("name"))
}
