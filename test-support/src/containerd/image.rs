//! The image the test pods run: an OCI archive of `oom-hog` and the
//! libraries it links, written here (there is no registry) and imported
//! into the daemon.

use std::{
    collections::BTreeSet,
    env,
    fs::{self, File},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use oom_probe_cri::v1::{ImageSpec, ImageStatusRequest};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Containerd, IMAGE};

impl Containerd {
    /// Builds the image archive and imports it with `ctr`, then waits until
    /// the CRI's own image store has it.
    pub(super) fn import_image(&self) -> Result<()> {
        let archive = self.dir.join("image.tar");
        write_image_archive(
            &archive,
            &crate::built_binary("oom-hog", "OOM_HOG_BIN", "oom-probe-tests"),
        )?;
        self.import_archive(&archive, IMAGE)
    }

    /// Imports an OCI image layout archive (as [`write_oci_archive`] makes)
    /// named `image` and waits until the CRI's image store lists it.
    pub fn import_archive(&self, archive: &Path, image: &str) -> Result<()> {
        let output = self.ctr(&["images", "import", &archive.display().to_string()])?;
        if !output.status.success() {
            bail!(
                "ctr images import failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let deadline = Instant::now() + crate::START_TIMEOUT;
        loop {
            let spec = ImageSpec {
                image: image.into(),
                ..Default::default()
            };
            let status = self.images(|mut c| async move {
                let request = ImageStatusRequest {
                    image: Some(spec),
                    verbose: false,
                };
                c.image_status(request).await
            })?;
            if status.image.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the CRI never listed the imported image {image}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Writes an OCI image layout archive (what `ctr images import` reads) of
/// one layer holding `hog` as `/oom-hog` plus the shared libraries it
/// links, at the paths the dynamic loader looks for them. Entrypoint
/// `/oom-hog --pause`: the sandbox's pause process.
fn write_image_archive(archive: &Path, hog: &Path) -> Result<()> {
    let mut files = vec![(PathBuf::from("oom-hog"), fs::read(hog)?, 0o755)];
    for library in shared_libraries(hog)? {
        let inside = library.strip_prefix("/").unwrap_or(&library).to_path_buf();
        let bytes = fs::read(&library).with_context(|| format!("read {}", library.display()))?;
        files.push((inside, bytes, 0o755));
    }
    let config = json!({"Entrypoint": ["/oom-hog"], "Cmd": ["--pause"]});
    write_oci_archive(archive, IMAGE, &files, config)
}

/// Writes an OCI image layout archive (what `ctr images import` and
/// `docker load` read) named `name`, of one layer holding `files` (path
/// inside the image without the leading `/`, bytes, mode; parent
/// directories are added) and the image config's `config` object
/// (`Entrypoint`, `Cmd`...), for this machine's architecture.
pub fn write_oci_archive(
    archive: &Path,
    name: &str,
    files: &[(PathBuf, Vec<u8>, u32)],
    config: serde_json::Value,
) -> Result<()> {
    let arch = match env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no OCI name for architecture {other}"),
    };
    write_oci_archive_for(archive, name, arch, files, config)
}

/// [`write_oci_archive`] for the OCI architecture `arch` (`amd64`,
/// `arm64`). The config's `org.opencontainers.image.*` labels are also
/// the manifest's annotations (and its descriptor's in the index), where
/// registries and `skopeo inspect` look for them.
pub fn write_oci_archive_for(
    archive: &Path,
    name: &str,
    arch: &str,
    files: &[(PathBuf, Vec<u8>, u32)],
    config: serde_json::Value,
) -> Result<()> {
    let annotations: serde_json::Map<String, serde_json::Value> = config["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.starts_with("org.opencontainers.image."))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let mut layer = tar::Builder::new(Vec::new());
    let dirs: BTreeSet<&Path> = files
        .iter()
        .flat_map(|(inside, _, _)| inside.ancestors().skip(1))
        .filter(|d| !d.as_os_str().is_empty())
        .collect();
    for dir in dirs {
        let mut header = tar_header(tar::EntryType::Directory, 0o755, 0);
        layer.append_data(&mut header, dir, std::io::empty())?;
    }
    for (inside, bytes, mode) in files {
        let mut header = tar_header(tar::EntryType::Regular, *mode, bytes.len() as u64);
        layer.append_data(&mut header, inside, bytes.as_slice())?;
    }
    let layer = layer.into_inner()?;
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    }))?;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    });
    if !annotations.is_empty() {
        manifest["annotations"] = json!(annotations);
    }
    let manifest = serde_json::to_vec(&manifest)?;
    let mut manifest_descriptor =
        descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    manifest_descriptor["platform"] = json!({"architecture": arch, "os": "linux"});
    let mut descriptor_annotations = annotations;
    descriptor_annotations.insert("io.containerd.image.name".into(), json!(name));
    manifest_descriptor["annotations"] = json!(descriptor_annotations);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_descriptor],
    }))?;
    let mut out = tar::Builder::new(File::create(archive)?);
    let mut add = |path: String, bytes: &[u8]| -> Result<()> {
        let mut header = tar_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        Ok(out.append_data(&mut header, path, bytes)?)
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json".into(), &index)?;
    for blob in [&layer, &config, &manifest] {
        let hex = digest(blob).trim_start_matches("sha256:").to_string();
        add(format!("blobs/sha256/{hex}"), blob)?;
    }
    out.into_inner()?;
    Ok(())
}

fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": digest(bytes), "size": bytes.len()})
}

/// The shared libraries `binary` loads, loader included, as `ldd` lists
/// them; none for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd")?;
    if !output.status.success() {
        return Ok(Vec::new()); // "not a dynamic executable"
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect())
}
