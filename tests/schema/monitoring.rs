//! The Prometheus Operator's PodMonitor and PrometheusRule
//! (monitoring.coreos.com/v1), as far as deploy/ uses them: hand-written
//! types for a subset of the CRDs' fields, named and typed as the operator's
//! API reference gives them. The round trip of [`super::round_trip`] refuses
//! a field not listed here: a misspelling, or a real field this subset does
//! not have yet (add it here with its type, from the operator's API).
//!
//! Not checked here: the CRDs' full OpenAPI schemas (enum and pattern of
//! every field). What is: each field's name, place and JSON type, the
//! relabel `action` against the operator's enum (lower-case spellings), and
//! durations against the CRD's duration pattern. The rules themselves go
//! through `promtool check rules` and `promtool test rules`, and the
//! PodMonitor's relabelings through a real Prometheus (tests/prometheus.rs).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

/// The API version of both kinds.
pub const API_VERSION: &str = "monitoring.coreos.com/v1";

/// A PodMonitor: which pods Prometheus scrapes, and how.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitor {
    api_version: ApiVersion,
    kind: String,
    /// The object's metadata (name, namespace, labels).
    pub metadata: ObjectMeta,
    /// What to scrape.
    pub spec: PodMonitorSpec,
}

/// `spec` of a PodMonitor.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    /// The pods to scrape, by their labels.
    pub selector: LabelSelector,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_selector: Option<NamespaceSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_target_labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_limit: Option<u64>,
    /// The endpoints scraped on each pod.
    pub pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct NamespaceSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    any: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    match_names: Option<Vec<String>>,
}

/// One of `podMetricsEndpoints`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetricsEndpoint {
    /// The name of the pod's container port to scrape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scrape_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    honor_labels: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    relabelings: Option<Vec<RelabelConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metric_relabelings: Option<Vec<RelabelConfig>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct RelabelConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    source_labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    separator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modulus: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replacement: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<RelabelAction>,
}

/// The operator's enum for `action`, in its lower-case spellings.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum RelabelAction {
    Replace,
    Keep,
    Drop,
    Hashmod,
    Labelmap,
    Labeldrop,
    Labelkeep,
    Lowercase,
    Uppercase,
    Keepequal,
    Dropequal,
}

impl PodMonitor {
    /// What the CRD's schema checks beyond the types: durations match its
    /// pattern.
    pub fn check(&self) -> Result<(), String> {
        for endpoint in &self.spec.pod_metrics_endpoints {
            for duration in [&endpoint.interval, &endpoint.scrape_timeout]
                .into_iter()
                .flatten()
            {
                if !is_duration(duration) {
                    return Err(format!("{duration:?} is not a Prometheus duration"));
                }
            }
        }
        Ok(())
    }
}

/// A PrometheusRule: groups of recording and alerting rules.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRule {
    api_version: ApiVersion,
    kind: String,
    /// The object's metadata (name, namespace, labels).
    pub metadata: ObjectMeta,
    spec: PrometheusRuleSpec,
}

#[derive(Debug, Deserialize, Serialize)]
struct PrometheusRuleSpec {
    groups: Vec<RuleGroup>,
}

/// A rule group; the CRD spells its fields in snake case, as rule files do.
#[derive(Debug, Deserialize, Serialize)]
struct RuleGroup {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_offset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<String>,
    expr: String,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    for_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_firing_for: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

/// `apiVersion`, which must be [`API_VERSION`].
#[derive(Debug, Serialize)]
struct ApiVersion(String);

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let version = String::deserialize(d)?;
        if version != API_VERSION {
            return Err(serde::de::Error::custom(format!(
                "apiVersion {version:?}, not {API_VERSION}"
            )));
        }
        Ok(Self(version))
    }
}

/// The CRDs' duration pattern: `0`, or units from years down to
/// milliseconds, each at most once and in that order (`30s`, `1h30m`).
pub fn is_duration(text: &str) -> bool {
    if text == "0" {
        return true;
    }
    let mut rest = text;
    let mut units = ["y", "w", "d", "h", "m", "s", "ms"].into_iter();
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        let after = &rest[digits..];
        // "ms" before "m": the longer unit first where both match.
        let Some(unit) =
            units.find(|u| after.starts_with(u) && !(*u == "m" && after.starts_with("ms")))
        else {
            return false;
        };
        rest = &after[unit.len()..];
        any = true;
    }
    any
}
