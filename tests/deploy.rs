//! deploy/ as kustomize renders it: the base and every overlay build with
//! `kubectl kustomize`, every object parses into the Kubernetes API types
//! without losing a field (a typo would vanish in the round trip), the
//! DaemonSet has the least privilege promised, the alerts pass their
//! `promtool test rules` unit tests, and alerts and dashboard use metrics that
//! exist.

use std::{collections::BTreeSet, fs, path::Path, process::Command};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, Namespace, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use oom_probe_test_support::deploy::{
    base_objects, deploy_dir, kustomize, overlays, write_rule_file,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Every object the base renders to, with where it came from.
fn documents() -> Vec<(String, Value)> {
    base_objects()
}

/// Parses into `T` and back; what comes back must be what went in.
fn round_trip<T: DeserializeOwned + serde::Serialize>(file: &str, doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &strip_nulls(back),
        doc,
        "{file}: a field is unknown to the API types"
    );
    typed
}

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

#[test]
fn every_manifest_parses_into_the_api_types_without_losing_a_field() {
    if !oom_probe_test_support::host_only(
        "every_manifest_parses_into_the_api_types_without_losing_a_field",
        "reads deploy/ from the source tree",
    ) {
        return;
    }
    let mut kinds = BTreeSet::new();
    for (file, doc) in documents() {
        let kind = doc["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "Namespace" => drop(round_trip::<Namespace>(&file, &doc)),
            "ServiceAccount" => drop(round_trip::<ServiceAccount>(&file, &doc)),
            "ClusterRole" => drop(round_trip::<ClusterRole>(&file, &doc)),
            "ClusterRoleBinding" => drop(round_trip::<ClusterRoleBinding>(&file, &doc)),
            "DaemonSet" => drop(round_trip::<DaemonSet>(&file, &doc)),
            "Service" => drop(round_trip::<Service>(&file, &doc)),
            "ConfigMap" => {
                let map: ConfigMap = round_trip(&file, &doc);
                let dashboard = &map.data.unwrap()["oom-probe.json"];
                let parsed: Value = serde_json::from_str(dashboard).unwrap();
                assert_eq!(parsed["uid"], "oom-probe", "{file}");
            }
            "PodMonitor" | "PrometheusRule" => {
                assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1", "{file}");
            }
            other => panic!("{file}: unexpected kind {other}"),
        }
        kinds.insert(kind);
    }
    let expected = [
        "ClusterRole",
        "ConfigMap",
        "ClusterRoleBinding",
        "DaemonSet",
        "Namespace",
        "PodMonitor",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
    ];
    let mut expected: BTreeSet<String> = expected.iter().map(|k| k.to_string()).collect();
    if kustomize(&deploy_dir().join("base")).is_none() {
        // Only kustomize's configMapGenerator makes the dashboard's ConfigMap.
        expected.remove("ConfigMap");
    }
    assert_eq!(kinds, expected);
    for (file, doc) in documents() {
        if doc["kind"] != "Namespace" && !doc["kind"].as_str().unwrap().starts_with("Cluster") {
            assert_eq!(doc["metadata"]["namespace"], "oom-probe", "{file}: {doc}");
        }
    }
}

#[test]
fn the_daemonset_runs_everywhere_with_least_privilege() {
    if !oom_probe_test_support::host_only(
        "the_daemonset_runs_everywhere_with_least_privilege",
        "reads deploy/ from the source tree",
    ) {
        return;
    }
    let (file, doc) = documents()
        .into_iter()
        .find(|(_, d)| d["kind"] == "DaemonSet")
        .unwrap();
    let ds: DaemonSet = round_trip(&file, &doc);
    let spec = ds.spec.unwrap().template.spec.unwrap();
    assert!(spec
        .tolerations
        .unwrap()
        .iter()
        .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()));
    // The node's pids: a cgroup's tasks come from its cgroup.procs, whose
    // pids are the reader's namespace's (tests/image.rs checks the tasks).
    assert_eq!(spec.host_pid, Some(true));
    let container = &spec.containers[0];
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let caps = security.capabilities.unwrap();
    assert_eq!(caps.drop.unwrap(), vec!["ALL"]);
    assert_eq!(caps.add.unwrap(), vec!["BPF", "PERFMON", "SYS_RESOURCE"]);
    let env = container.env.clone().unwrap();
    let node = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(
        node.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
    let resources = container.resources.clone().unwrap();
    assert!(
        resources.requests.unwrap().contains_key("memory")
            && resources.limits.unwrap().contains_key("memory")
    );
    // Host paths are read-only, except the state directory and the host's
    // cgroupfs: memory pressure is watched by writing to it (a PSI trigger
    // to each `memory.pressure`, an eventfd to v1 `cgroup.event_control`),
    // the kernel's own API; read-only, every registration fails with EROFS
    // and no `memory_pressure` event ever comes. The host's /proc stays
    // read-only: the node's PSI trigger goes on the pod's own /proc.
    for mount in container.volume_mounts.clone().unwrap() {
        let writable = ["/var/lib/oom-probe", "/host/sys/fs/cgroup"];
        assert_eq!(
            mount.read_only == Some(true),
            !writable.contains(&mount.mount_path.as_str()),
            "{mount:?}"
        );
    }
    assert!(
        container
            .args
            .iter()
            .flatten()
            .any(|a| a == "--procfs=/host/proc"),
        "tasks are read from the host's /proc"
    );
    // The flags it runs with exist.
    let args = container.args.clone().unwrap();
    assert_eq!(args[0], "run");
    let help = std::process::Command::new(oom_probe_test_support::oom_probe_bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in &args[1..] {
        let name = flag.split('=').next().unwrap();
        assert!(help.contains(name), "{name} is not a flag of oom-probe run");
    }
}

#[test]
fn alerts_and_dashboard_use_metrics_oom_probe_exports() {
    if !oom_probe_test_support::host_only(
        "alerts_and_dashboard_use_metrics_oom_probe_exports",
        "reads deploy/ from the source tree",
    ) {
        return;
    }
    // One kill through the real pipeline, so the kill family has a series.
    let metrics = oom_probe::sink::metrics::Metrics::new(std::time::Duration::from_secs(60));
    let mut enricher = oom_probe::enrich::Enricher::new("n".into(), None, Default::default());
    let record = oom_probe_common::VictimRecord {
        kind: oom_probe_common::RECORD_VICTIM,
        ..Default::default()
    };
    metrics.record(
        &enricher
            .on_record(oom_probe::decode::Record::Victim(record))
            .unwrap(),
    );
    let exported = metrics.encode();
    let rule = fs::read_to_string(deploy_dir().join("base/prometheusrule.yaml")).unwrap();
    let dashboard = fs::read_to_string(deploy_dir().join("base/grafana-dashboard.json")).unwrap();
    for text in [rule, dashboard] {
        for name in metric_names(&text) {
            let family = name.trim_end_matches("_total");
            assert!(
                exported.contains(&format!("# TYPE {family} ")),
                "{name} is not exported:\n{exported}"
            );
        }
    }
}

fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("oom_probe_"))
        .map(String::from)
        .collect()
}

#[test]
fn no_overlay_sits_inside_its_base() {
    if !oom_probe_test_support::host_only(
        "no_overlay_sits_inside_its_base",
        "reads deploy/ from the source tree",
    ) {
        return;
    }
    let overlays = overlays();
    assert!(!overlays.is_empty(), "deploy/overlays has no overlay");
    for overlay in overlays {
        let text = fs::read_to_string(overlay.join("kustomization.yaml")).unwrap();
        let kustomization = &oom_probe_test_support::deploy::yaml_documents(&text)[0];
        let own = overlay.canonicalize().unwrap();
        for resource in kustomization["resources"].as_array().unwrap() {
            let target = overlay
                .join(resource.as_str().unwrap())
                .canonicalize()
                .unwrap();
            // kustomize refuses a resource directory that contains the
            // overlay ("cycle detected").
            assert!(
                !own.starts_with(&target),
                "{}: {} contains the overlay itself",
                overlay.display(),
                target.display()
            );
        }
    }
}

#[test]
fn the_base_and_every_overlay_render_with_kubectl_kustomize() {
    if !oom_probe_test_support::host_only(
        "the_base_and_every_overlay_render_with_kubectl_kustomize",
        "reads deploy/ from the source tree",
    ) {
        return;
    }
    let Some(base) = kustomize(&deploy_dir().join("base")) else {
        oom_probe_test_support::skipped(
            "the_base_and_every_overlay_render_with_kubectl_kustomize",
            "kubectl is not installed (Debian has no kubectl with kustomize v4+)",
        );
        return;
    };
    let names = |objects: &[Value]| -> BTreeSet<String> {
        objects
            .iter()
            .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"]))
            .collect()
    };
    for overlay in overlays() {
        let rendered = kustomize(&overlay).unwrap();
        assert_eq!(names(&rendered), names(&base), "{}", overlay.display());
        let daemonset = rendered.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
        let ds: DaemonSet = round_trip(&overlay.display().to_string(), daemonset);
        let security = ds.spec.unwrap().template.spec.unwrap().containers[0]
            .security_context
            .clone()
            .unwrap();
        if overlay.ends_with("privileged") {
            assert_eq!(security.privileged, Some(true), "{}", overlay.display());
        }
    }
}

#[test]
fn alerts_pass_their_promtool_unit_tests() {
    if !oom_probe_test_support::host_only(
        "alerts_pass_their_promtool_unit_tests",
        "needs promtool (Debian's prometheus package) and deploy/",
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("oom-probe-promtool-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("oom-probe-rules.yaml");
    write_rule_file(&rules);
    let tests = dir.join("alerts.test.yaml");
    fs::copy(deploy_dir().join("tests/alerts.test.yaml"), &tests).unwrap();
    promtool(&["check", "rules"], &rules);
    promtool(&["test", "rules"], &tests);
    fs::remove_dir_all(&dir).unwrap();
}

/// Runs promtool (`cargo xtask test` installs it); panics unless it passes.
fn promtool(args: &[&str], file: &Path) {
    let output = Command::new("promtool")
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install Debian's prometheus package (cargo xtask test does)")
        });
    assert!(
        output.status.success(),
        "promtool {} {} failed:\n{}{}",
        args.join(" "),
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
