//! A kubeconfig file pointing at a test API server: what the kube client
//! and the binary (`KUBECONFIG=`, `--kubeconfig`) read.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result};

/// A kubeconfig file in the temporary directory, removed on drop.
pub struct KubeconfigFile {
    path: PathBuf,
}

static NEXT_KUBECONFIG: AtomicU32 = AtomicU32::new(0);

impl KubeconfigFile {
    /// One cluster, one context, no credentials, plain http.
    pub fn for_server(url: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "oom-probe-test-kubeconfig-{}-{}.yaml",
            std::process::id(),
            NEXT_KUBECONFIG.fetch_add(1, Ordering::Relaxed)
        ));
        let text = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: test\n  cluster:\n    server: {url}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\n\
             current-context: test\n\
             users:\n- name: test\n  user: {{}}\n"
        );
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { path })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for KubeconfigFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
