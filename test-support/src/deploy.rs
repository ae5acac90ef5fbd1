//! deploy/ as a cluster would get it: the kustomize base, its monitoring
//! component and the overlays rendered by `kubectl kustomize`, the example
//! workloads, and the Prometheus rules inside the rendered PrometheusRule.

use std::{
    fs,
    path::{Component, Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::Value;

/// The source tree's deploy/ directory.
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The monitoring component (`deploy/components/monitoring`).
pub fn monitoring_dir() -> PathBuf {
    deploy_dir().join("components/monitoring")
}

/// Every overlay directory (`deploy/overlays/<name>`), sorted.
pub fn overlays() -> Vec<PathBuf> {
    subdirectories_with(&deploy_dir().join("overlays"), "kustomization.yaml")
}

/// Every component directory (`deploy/components/<name>`), sorted.
pub fn components() -> Vec<PathBuf> {
    subdirectories_with(&deploy_dir().join("components"), "kustomization.yaml")
}

/// Every example manifest (`deploy/examples/*.yaml`), sorted.
pub fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(deploy_dir().join("examples"))
        .expect("deploy/examples")
        .map(|e| e.expect("deploy/examples entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn subdirectories_with(dir: &Path, file: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.join(file).is_file())
        .collect();
    dirs.sort();
    dirs
}

/// The YAML documents of `text`, as JSON values, empty documents left out.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).expect("valid YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// `kubectl kustomize <dir>`'s objects; `None` when kubectl is not installed
/// (a clean Debian root has none: Debian's kubernetes-client is kubectl 1.20,
/// whose kustomize v2.0.3 cannot read `patches:`). Panics when kubectl
/// exists but cannot build `dir`.
pub fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    let output = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(yaml_documents(&String::from_utf8_lossy(&output.stdout)))
}

/// Renders a user's own kustomization, written to a temporary directory:
/// `resources` and `components` (directories, given by any path; written
/// relative, as kustomize wants them) and `more` (more top-level YAML, such
/// as `patches:`). `None` when kubectl is not installed.
pub fn kustomize_user(resources: &[&Path], components: &[&Path], more: &str) -> Option<Vec<Value>> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "oom-probe-kustomization-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap();
    let list = |paths: &[&Path]| -> String {
        paths
            .iter()
            .map(|p| format!("  - {}\n", relative(&dir, p).display()))
            .collect()
    };
    let text = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{}components:\n{}{more}",
        list(resources),
        list(components)
    );
    fs::write(dir.join("kustomization.yaml"), &text).unwrap();
    let rendered = kustomize(&dir);
    fs::remove_dir_all(&dir).unwrap();
    rendered
}

/// `to` as a path relative to the directory `from` (both made absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from = from.canonicalize().unwrap();
    let to = to.canonicalize().unwrap();
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path
}

/// The base's objects: rendered by kubectl kustomize when it is installed,
/// else (after a loud note) read as they stand from the files its
/// kustomization lists (no image rewrite). Each comes with where it came
/// from.
pub fn base_objects() -> Vec<(String, Value)> {
    let base = deploy_dir().join("base");
    if let Some(objects) = kustomize(&base) {
        return objects
            .into_iter()
            .map(|o| ("kubectl kustomize deploy/base".to_string(), o))
            .collect();
    }
    crate::skipped(
        "rendering deploy/base with kubectl kustomize",
        "kubectl is not installed; reading the base's files instead",
    );
    listed_resources(&base)
}

/// The objects of the base with the monitoring component, as a user's
/// kustomization with `components: [.../components/monitoring]` renders
/// them (PodMonitor, PrometheusRule and the dashboard's ConfigMap among the
/// base's); without kubectl, after a loud note, the base's and the
/// component's files as they stand (no dashboard ConfigMap, no `release`
/// label).
pub fn monitoring_objects() -> Vec<(String, Value)> {
    let base = deploy_dir().join("base");
    if let Some(objects) = kustomize_user(&[&base], &[&monitoring_dir()], "") {
        return objects
            .into_iter()
            .map(|o| ("deploy/base + components/monitoring".to_string(), o))
            .collect();
    }
    crate::skipped(
        "rendering deploy/components/monitoring with kubectl kustomize",
        "kubectl is not installed; reading the component's files instead",
    );
    let mut objects = listed_resources(&base);
    objects.extend(listed_resources(&monitoring_dir()));
    objects
}

/// The objects of the files a kustomization in `dir` lists as resources.
fn listed_resources(dir: &Path) -> Vec<(String, Value)> {
    let kustomization =
        yaml_documents(&fs::read_to_string(dir.join("kustomization.yaml")).unwrap()).remove(0);
    let mut objects = Vec::new();
    for file in kustomization["resources"].as_array().unwrap() {
        let file = file.as_str().unwrap();
        for doc in yaml_documents(&fs::read_to_string(dir.join(file)).unwrap()) {
            objects.push((format!("{}/{file}", dir.display()), doc));
        }
    }
    objects
}

/// The `spec` of deploy/'s PrometheusRule (its `groups:`), which is a
/// Prometheus rule file as it stands.
pub fn prometheus_rule_groups() -> Value {
    let (_, rule) = monitoring_objects()
        .into_iter()
        .find(|(_, o)| o["kind"] == "PrometheusRule")
        .expect("deploy/components/monitoring has a PrometheusRule");
    rule["spec"].clone()
}

/// Writes the rules as a Prometheus rule file at `path`.
pub fn write_rule_file(path: &Path) {
    let yaml = serde_yaml_ng::to_string(&prometheus_rule_groups()).unwrap();
    fs::write(path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
