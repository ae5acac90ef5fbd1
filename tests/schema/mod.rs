//! Every object deploy/ renders, checked against the Kubernetes API's own
//! types: parsed into its `k8s-openapi` type and written back, it must come
//! back whole. k8s-openapi ignores fields it does not know, so a misspelt or
//! misplaced field is the key that the round trip drops: that is the
//! failure, named by its path. The Prometheus Operator's kinds, which
//! k8s-openapi does not have, go through [`monitoring`]'s types the same way.

pub mod monitoring;

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount},
    networking::v1::NetworkPolicy,
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// The kinds of the core API (no CRD needed) that deploy/ may render.
pub const CORE_KINDS: [&str; 9] = [
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "DaemonSet",
    "Namespace",
    "NetworkPolicy",
    "Pod",
    "Service",
    "ServiceAccount",
];

/// Checks `doc` against its kind's type. `Err` says why: an unknown kind, a
/// value of the wrong type or apiVersion, or the paths of the fields the
/// type does not have.
pub fn validate(doc: &Value) -> Result<(), String> {
    match doc["kind"].as_str().unwrap_or_default() {
        "ClusterRole" => round_trip::<ClusterRole>(doc).map(drop),
        "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(doc).map(drop),
        "ConfigMap" => round_trip::<ConfigMap>(doc).map(drop),
        "DaemonSet" => round_trip::<DaemonSet>(doc).map(drop),
        "Namespace" => round_trip::<Namespace>(doc).map(drop),
        "NetworkPolicy" => round_trip::<NetworkPolicy>(doc).map(drop),
        "Pod" => round_trip::<Pod>(doc).map(drop),
        "Service" => round_trip::<Service>(doc).map(drop),
        "ServiceAccount" => round_trip::<ServiceAccount>(doc).map(drop),
        "PodMonitor" => round_trip::<monitoring::PodMonitor>(doc).and_then(|m| m.check()),
        "PrometheusRule" => round_trip::<monitoring::PrometheusRule>(doc).map(drop),
        other => Err(format!("kind {other:?} is not one deploy/ is checked for")),
    }
}

/// Parses `doc` into `T` and back; `Err` unless every field came back.
pub fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = strip_nulls(serde_json::to_value(&typed).map_err(|e| e.to_string())?);
    let mut lost = Vec::new();
    lost_fields(doc, &back, "", &mut lost);
    if lost.is_empty() && &back == doc {
        Ok(typed)
    } else if lost.is_empty() {
        Err(format!("changed in the round trip: {back}"))
    } else {
        Err(format!(
            "fields the API types do not have: {}",
            lost.join(", ")
        ))
    }
}

/// The paths (`spec.template.spec.x`) of `sent`'s fields that `back` lacks.
fn lost_fields(sent: &Value, back: &Value, path: &str, lost: &mut Vec<String>) {
    match (sent, back) {
        (Value::Object(sent), Value::Object(back)) => {
            for (key, value) in sent {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match back.get(key) {
                    Some(kept) => lost_fields(value, kept, &here, lost),
                    None => lost.push(here),
                }
            }
        }
        (Value::Array(sent), Value::Array(back)) => {
            for (i, (value, kept)) in sent.iter().zip(back).enumerate() {
                lost_fields(value, kept, &format!("{path}[{i}]"), lost);
            }
        }
        _ => {}
    }
}

/// `value` without the `null`s that serialisation adds for absent options.
fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}
