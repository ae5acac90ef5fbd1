//! deploy/ as kustomize renders it: the base, the base with each component,
//! every overlay and every example build with `kubectl kustomize`, and every
//! object they hold passes its kind's API types (tests/schema: a field the
//! types do not know fails, by its path). The base needs no CRD; the
//! monitoring component carries the `release` label kube-prometheus-stack
//! selects by, settable in a user's kustomization; the DaemonSet has the
//! least privilege promised and mounts every runtime socket oom-probe looks
//! for; one NetworkPolicy admits only the scraper's namespace to the
//! metrics port (the open-metrics component: every source); the alerts pass their `promtool test rules` unit tests, and alerts
//! and dashboard use metrics that exist.

mod schema;

use std::{collections::BTreeSet, fs, path::Path, process::Command};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        networking::v1::{NetworkPolicy, NetworkPolicyPeer},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use oom_probe_test_support::deploy::{
    base_objects, components, deploy_dir, examples, kustomize, kustomize_user, monitoring_dir,
    monitoring_objects, overlays, write_rule_file, yaml_documents,
};
use serde_json::{json, Value};

/// Every object the base renders to, with where it came from.
fn documents() -> Vec<(String, Value)> {
    base_objects()
}

/// Parses into `T` and back; panics unless what comes back is what went in.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str, doc: &Value) -> T {
    schema::round_trip(doc).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The user's kustomization line that names their kube-prometheus-stack
/// release, as deploy/README.md gives it.
const RELEASE_PATCH: &str = "patches:
  - target:
      group: monitoring.coreos.com
    patch: |-
      - op: replace
        path: /metadata/labels/release
        value: my-prometheus
";

/// Every rendering a user can apply, with what it is: the base, the base
/// with each component, each overlay, each example. Without kubectl, the
/// base's and the monitoring component's files as they stand instead.
fn renderings() -> Vec<(String, Vec<Value>)> {
    let mut all = Vec::new();
    let base = deploy_dir().join("base");
    if let Some(objects) = kustomize(&base) {
        all.push(("deploy/base".to_string(), objects));
        for component in components() {
            let objects = kustomize_user(&[&base], &[&component], "").unwrap();
            all.push((format!("deploy/base + {}", component.display()), objects));
        }
        for overlay in overlays() {
            all.push((overlay.display().to_string(), kustomize(&overlay).unwrap()));
        }
    } else {
        // The files as they stand (base_objects and monitoring_objects say
        // so loudly): no overlay patch, no generated ConfigMap.
        let files = |objects: Vec<(String, Value)>| objects.into_iter().map(|(_, o)| o).collect();
        all.push(("deploy/base files".to_string(), files(base_objects())));
        all.push((
            "deploy/components/monitoring files".to_string(),
            files(monitoring_objects()),
        ));
    }
    for example in examples() {
        let objects = yaml_documents(&fs::read_to_string(&example).unwrap());
        all.push((example.display().to_string(), objects));
    }
    all
}

#[test]
fn every_rendered_object_passes_its_api_types_without_losing_a_field() {
    if !oom_probe_test_support::host_only(
        "every_rendered_object_passes_its_api_types_without_losing_a_field",
        "reads deploy/ from the source tree",
    ) {
        return;
    }
    let renderings = renderings();
    let mut checked = 0;
    for (source, objects) in &renderings {
        assert!(!objects.is_empty(), "{source} renders nothing");
        for doc in objects {
            schema::validate(doc).unwrap_or_else(|e| {
                panic!("{source}: {} {}: {e}", doc["kind"], doc["metadata"]["name"])
            });
            checked += 1;
        }
    }
    eprintln!(
        "{checked} objects in {} renderings checked",
        renderings.len()
    );
    assert!(
        renderings
            .iter()
            .any(|(s, _)| s.ends_with("silent-kill.yaml")),
        "the examples were checked"
    );
}

#[test]
fn the_schema_check_refuses_a_misspelt_or_misplaced_field() {
    if !oom_probe_test_support::host_only(
        "the_schema_check_refuses_a_misspelt_or_misplaced_field",
        "reads deploy/ from the source tree",
    ) {
        return;
    }
    // The check itself, on deploy/'s own objects with one field broken.
    let monitoring: Vec<Value> = monitoring_objects().into_iter().map(|(_, o)| o).collect();
    let example = yaml_documents(
        &fs::read_to_string(deploy_dir().join("examples/silent-kill.yaml")).unwrap(),
    )
    .remove(0);
    let find = |kind: &str| -> Value {
        monitoring
            .iter()
            .chain([&example])
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };
    type Break = fn(&mut Value);
    let cases: [(&str, &str, Break); 7] = [
        ("DaemonSet", "spec.template.spec.tolerationz", |o| {
            let spec = &mut o["spec"]["template"]["spec"];
            spec["tolerationz"] = spec["tolerations"].take();
            spec.as_object_mut().unwrap().remove("tolerations");
        }),
        (
            "DaemonSet",
            "spec.template.spec.containers[0].readOnly",
            |o| {
                o["spec"]["template"]["spec"]["containers"][0]["readOnly"] = json!(true);
            },
        ),
        ("Pod", "spec.containers[0].resources.limit", |o| {
            let resources = &mut o["spec"]["containers"][0]["resources"];
            resources["limit"] = resources["limits"].take();
            resources.as_object_mut().unwrap().remove("limits");
        }),
        // A required field misspelt: missing, as serde says.
        ("PodMonitor", "missing field `podMetricsEndpoints`", |o| {
            let spec = o["spec"].as_object_mut().unwrap();
            let endpoints = spec.remove("podMetricsEndpoints").unwrap();
            spec.insert("podMetricEndpoints".into(), endpoints);
        }),
        (
            "PodMonitor",
            "spec.podMetricsEndpoints[0].relabelings[0].sourceLabel",
            |o| {
                let relabeling = &mut o["spec"]["podMetricsEndpoints"][0]["relabelings"][0];
                relabeling["sourceLabel"] = relabeling["sourceLabels"].take();
                relabeling.as_object_mut().unwrap().remove("sourceLabels");
            },
        ),
        (
            "PrometheusRule",
            "spec.groups[0].rules[0].annotation",
            |o| {
                let rule = &mut o["spec"]["groups"][0]["rules"][0];
                rule["annotation"] = rule["annotations"].take();
                rule.as_object_mut().unwrap().remove("annotations");
            },
        ),
        ("PodMonitor", "is not a Prometheus duration", |o| {
            o["spec"]["podMetricsEndpoints"][0]["interval"] = json!("30 seconds");
        }),
    ];
    // Each: the kind, what the error must say (the field's path), the break.
    for (kind, needle, break_it) in cases {
        let mut doc = find(kind);
        schema::validate(&doc).unwrap_or_else(|e| panic!("{kind} as shipped: {e}"));
        break_it(&mut doc);
        let error = schema::validate(&doc).expect_err(needle);
        assert!(
            error.contains(needle),
            "{kind}: {error:?} does not say {needle}"
        );
    }
    // A kind with the wrong apiVersion, a value of the wrong type.
    let mut rule = find("PrometheusRule");
    rule["apiVersion"] = json!("monitoring.coreos.com/v1beta1");
    assert!(schema::validate(&rule).unwrap_err().contains("apiVersion"));
    let mut pod = example.clone();
    pod["spec"]["containers"][0]["command"] = json!("sh -c true");
    assert!(schema::validate(&pod).is_err());
    for (text, ok) in [
        ("30s", true),
        ("1h30m", true),
        ("500ms", true),
        ("0", true),
        ("1m1h", false),
        ("30", false),
        ("", false),
        ("3 0s", false),
    ] {
        assert_eq!(schema::monitoring::is_duration(text), ok, "{text:?}");
    }
}

#[test]
fn the_base_applies_without_crds_and_monitoring_is_a_component() {
    if !oom_probe_test_support::host_only(
        "the_base_applies_without_crds_and_monitoring_is_a_component",
        "reads deploy/ from the source tree",
    ) {
        return;
    }
    let kinds = |objects: &[(String, Value)]| -> BTreeSet<String> {
        objects
            .iter()
            .map(|(_, o)| o["kind"].as_str().unwrap().to_string())
            .collect()
    };
    let base = documents();
    let base_kinds = kinds(&base);
    // Core kinds only: a cluster without the Prometheus Operator has them all.
    let expected: BTreeSet<String> = [
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Namespace",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
    ]
    .map(String::from)
    .into();
    assert_eq!(base_kinds, expected);
    for (file, doc) in &base {
        assert!(
            schema::CORE_KINDS.contains(&doc["kind"].as_str().unwrap()),
            "{file}: {doc}"
        );
        assert!(
            !doc["apiVersion"].as_str().unwrap().contains(".coreos.com"),
            "{file}: {doc}"
        );
    }
    // The component adds the Prometheus Operator's objects and the dashboard.
    let monitoring = monitoring_objects();
    let added: BTreeSet<String> = kinds(&monitoring)
        .difference(&base_kinds)
        .cloned()
        .collect();
    let mut wanted: BTreeSet<String> = ["PodMonitor", "PrometheusRule", "ConfigMap"]
        .map(String::from)
        .into();
    if kustomize(&deploy_dir().join("base")).is_none() {
        // Only kustomize's configMapGenerator makes the dashboard's ConfigMap.
        wanted.remove("ConfigMap");
    }
    assert_eq!(added, wanted);
    for (file, doc) in base.iter().chain(&monitoring) {
        if doc["kind"] != "Namespace" && !doc["kind"].as_str().unwrap().starts_with("Cluster") {
            assert_eq!(doc["metadata"]["namespace"], "oom-probe", "{file}: {doc}");
        }
    }
    if let Some((file, map)) = monitoring.iter().find(|(_, o)| o["kind"] == "ConfigMap") {
        assert_eq!(
            map["metadata"]["labels"]["grafana_dashboard"], "1",
            "{file}"
        );
        let dashboard: Value =
            serde_json::from_str(map["data"]["oom-probe.json"].as_str().unwrap()).unwrap();
        assert_eq!(dashboard["uid"], "oom-probe", "{file}");
    }
}

#[test]
fn the_monitoring_objects_select_the_agent_and_carry_a_settable_release_label() {
    const TEST: &str = "the_monitoring_objects_select_the_agent_and_carry_a_settable_release_label";
    if !oom_probe_test_support::host_only(TEST, "reads deploy/ from the source tree") {
        return;
    }
    let base = deploy_dir().join("base");
    let Some(default) = kustomize_user(&[&base], &[&monitoring_dir()], "") else {
        oom_probe_test_support::skipped(TEST, "kubectl is not installed");
        return;
    };
    let release_of = |objects: &[Value]| -> Vec<Value> {
        objects
            .iter()
            .filter(|o| o["apiVersion"] == schema::monitoring::API_VERSION)
            .map(|o| o["metadata"]["labels"]["release"].clone())
            .collect()
    };
    // kube-prometheus-stack's default selectors: `release: <Helm release>`.
    assert_eq!(
        release_of(&default),
        [
            json!("kube-prometheus-stack"),
            json!("kube-prometheus-stack")
        ]
    );
    let patched = kustomize_user(&[&base], &[&monitoring_dir()], RELEASE_PATCH).unwrap();
    assert_eq!(
        release_of(&patched),
        [json!("my-prometheus"), json!("my-prometheus")]
    );
    let readme = fs::read_to_string(deploy_dir().join("README.md")).unwrap();
    assert!(
        readme.contains(RELEASE_PATCH),
        "deploy/README.md shows the release patch tested here:\n{RELEASE_PATCH}"
    );
    // Only those two carry it: the agent is no Helm release's.
    assert_eq!(
        patched
            .iter()
            .filter(|o| !o["metadata"]["labels"]["release"].is_null())
            .count(),
        2
    );
    // The PodMonitor selects the agent's pods and scrapes a port they name.
    let monitor: schema::monitoring::PodMonitor = round_trip(
        "PodMonitor",
        default.iter().find(|o| o["kind"] == "PodMonitor").unwrap(),
    );
    let daemonset: DaemonSet = round_trip(
        "DaemonSet",
        default.iter().find(|o| o["kind"] == "DaemonSet").unwrap(),
    );
    let template = daemonset.spec.unwrap().template;
    let pod_labels = template.metadata.unwrap().labels.unwrap();
    let selector = monitor.spec.selector.match_labels.unwrap();
    assert!(!selector.is_empty());
    for (key, value) in &selector {
        assert_eq!(pod_labels.get(key), Some(value), "selector {key}={value}");
    }
    let ports: Vec<String> = template.spec.unwrap().containers[0]
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    for endpoint in &monitor.spec.pod_metrics_endpoints {
        let port = endpoint.port.as_ref().unwrap();
        assert!(ports.contains(port), "port {port} not among {ports:?}");
    }
}

#[test]
fn the_daemonset_mounts_the_directory_of_every_runtime_socket_oom_probe_looks_for() {
    if !oom_probe_test_support::host_only(
        "the_daemonset_mounts_the_directory_of_every_runtime_socket_oom_probe_looks_for",
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
    let volumes = spec.volumes.unwrap();
    // No `type: Socket`: the kubelet refuses to start a pod whose socket
    // is missing, and every node lacks all runtimes' sockets but one.
    for volume in &volumes {
        if let Some(host) = &volume.host_path {
            assert_ne!(host.type_.as_deref(), Some("Socket"), "{volume:?}");
        }
    }
    let mounts = spec.containers[0].volume_mounts.clone().unwrap();
    // cri-dockerd's socket is /run/cri-dockerd.sock, directly in /run: only
    // mounting all of the host's /run would reach it (deploy/README.md).
    let not_mounted = ["/var/run/cri-dockerd.sock"];
    let mut covered = 0;
    for socket in oom_probe::enrich::cri::DEFAULT_SOCKETS {
        if not_mounted.contains(&socket) {
            continue;
        }
        let mount = mounts
            .iter()
            .find(|m| Path::new(socket).parent() == Some(Path::new(&m.mount_path)))
            .unwrap_or_else(|| panic!("no mount of {socket}'s directory: {mounts:#?}"));
        assert_eq!(mount.read_only, Some(true), "{mount:?}");
        let volume = volumes.iter().find(|v| v.name == mount.name).unwrap();
        let host = volume.host_path.as_ref().expect("a hostPath volume");
        // The same path on the node as in the container: the search list
        // names the node's paths.
        assert_eq!(host.path, mount.mount_path, "{volume:?}");
        assert_eq!(
            host.type_.as_deref(),
            Some("DirectoryOrCreate"),
            "{volume:?}"
        );
        covered += 1;
    }
    // containerd, CRI-O, k3s and RKE2 (the same path as k3s).
    assert_eq!(covered, 3);
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
fn one_network_policy_admits_only_the_scrapers_namespace_to_the_metrics_port() {
    const TEST: &str = "one_network_policy_admits_only_the_scrapers_namespace_to_the_metrics_port";
    if !oom_probe_test_support::host_only(TEST, "reads deploy/ from the source tree") {
        return;
    }
    let base = documents();
    let (file, doc) = base.iter().find(|(_, d)| d["kind"] == "DaemonSet").unwrap();
    let ds: DaemonSet = round_trip(file, doc);
    let template = ds.spec.unwrap().template;
    let pod_labels = template.metadata.unwrap().labels.unwrap();
    let port = template.spec.unwrap().containers[0]
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("the container has a port named metrics");
    // The policy of a rendering: exactly one, selecting the DaemonSet's
    // pods, ingress only (egress to the API server stays open), one rule
    // to the metrics port. Returns the rule's sources.
    let policy_of = |source: &str, objects: &[Value]| -> Option<Vec<NetworkPolicyPeer>> {
        let policies: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy")
            .collect();
        assert_eq!(policies.len(), 1, "{source}: {policies:?}");
        let policy: NetworkPolicy = round_trip(source, policies[0]);
        assert_eq!(policy.metadata.namespace.as_deref(), Some("oom-probe"));
        let spec = policy.spec.unwrap();
        let selector = spec.pod_selector.unwrap_or_default();
        assert!(selector.match_expressions.is_none(), "{source}");
        let wanted = selector.match_labels.unwrap_or_default();
        assert!(
            !wanted.is_empty(),
            "{source}: selects every pod of the namespace"
        );
        for (key, value) in &wanted {
            assert_eq!(pod_labels.get(key), Some(value), "{source}: {key}");
        }
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_string()]),
            "{source}"
        );
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 1, "{source}: {rules:?}");
        let ports = rules[0].ports.clone().unwrap();
        assert_eq!(ports.len(), 1, "{source}: {ports:?}");
        let matches = match ports[0].port.as_ref().expect("a port") {
            IntOrString::Int(n) => *n == port.container_port,
            IntOrString::String(name) => Some(name) == port.name.as_ref(),
        };
        assert!(
            matches,
            "{source}: {:?} is not the container's {port:?}",
            ports[0]
        );
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"), "{source}");
        rules[0].from.clone()
    };
    let objects: Vec<Value> = base.iter().map(|(_, o)| o.clone()).collect();
    let from = policy_of("deploy/base", &objects).expect("the base admits named sources only");
    assert_eq!(from.len(), 1, "{from:?}");
    assert!(from[0].pod_selector.is_none() && from[0].ip_block.is_none());
    let namespaces = from[0].namespace_selector.clone().unwrap();
    assert_eq!(
        namespaces
            .match_labels
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![(
            "kubernetes.io/metadata.name".to_string(),
            "monitoring".to_string()
        )]
    );
    // The open-metrics component keeps the policy and the port, every source.
    let open = deploy_dir().join("components/open-metrics");
    match kustomize_user(&[&deploy_dir().join("base")], &[&open], "") {
        Some(objects) => assert_eq!(policy_of("+ open-metrics", &objects), None),
        None => oom_probe_test_support::skipped(TEST, "kubectl is not installed: open-metrics"),
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
    let rule = fs::read_to_string(monitoring_dir().join("prometheusrule.yaml")).unwrap();
    let dashboard = fs::read_to_string(monitoring_dir().join("grafana-dashboard.json")).unwrap();
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
        let kustomization = &yaml_documents(&text)[0];
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
