//! deploy/ as a cluster would get it: the kustomize base and overlays
//! rendered by `kubectl kustomize`, and the Prometheus rules inside the
//! rendered PrometheusRule.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// The source tree's deploy/ directory.
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every overlay directory (`deploy/overlays/<name>`), sorted.
pub fn overlays() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(deploy_dir().join("overlays"))
        .expect("deploy/overlays")
        .map(|e| e.expect("deploy/overlays entry").path())
        .filter(|p| p.join("kustomization.yaml").is_file())
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

/// The base's objects: rendered by kubectl kustomize when it is installed,
/// else (after a loud note) read as they stand from the files its
/// kustomization lists (no generated ConfigMap, no image rewrite). Each comes
/// with where it came from.
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
    let kustomization =
        yaml_documents(&fs::read_to_string(base.join("kustomization.yaml")).unwrap()).remove(0);
    let mut objects = Vec::new();
    for file in kustomization["resources"].as_array().unwrap() {
        let file = file.as_str().unwrap();
        for doc in yaml_documents(&fs::read_to_string(base.join(file)).unwrap()) {
            objects.push((format!("deploy/base/{file}"), doc));
        }
    }
    objects
}

/// The `spec` of deploy/'s PrometheusRule (its `groups:`), which is a
/// Prometheus rule file as it stands.
pub fn prometheus_rule_groups() -> Value {
    let (_, rule) = base_objects()
        .into_iter()
        .find(|(_, o)| o["kind"] == "PrometheusRule")
        .expect("deploy/base has a PrometheusRule");
    rule["spec"].clone()
}

/// Writes the rules as a Prometheus rule file at `path`.
pub fn write_rule_file(path: &Path) {
    let yaml = serde_yaml_ng::to_string(&prometheus_rule_groups()).unwrap();
    fs::write(path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
