//! `cargo xtask dist`'s folder, checked the way a user and a registry read
//! it: the sums with `sha256sum -c`, the binary by running it, the OCI
//! archive by following index, manifest and config by digest.

use std::{collections::BTreeMap, io::Read, process::Command};

use super::*;

/// The files of a tar archive: path to (bytes, mode).
fn untar(bytes: &[u8]) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mode = entry.header().mode().unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(path, (data, mode));
    }
    files
}

/// The blob a descriptor points at, checked against its digest and size.
fn blob<'a>(layout: &'a BTreeMap<String, (Vec<u8>, u32)>, descriptor: &Value) -> &'a [u8] {
    let digest = descriptor["digest"].as_str().unwrap();
    let hex_digest = digest.strip_prefix("sha256:").unwrap();
    let (bytes, _) = &layout[&format!("blobs/sha256/{hex_digest}")];
    assert_eq!(hex(&Sha256::digest(bytes)), hex_digest, "{digest}");
    assert_eq!(descriptor["size"].as_u64(), Some(bytes.len() as u64));
    bytes
}

/// Whether `revision` (without a `-dirty` mark) is a commit of this
/// repository; `None` when git cannot say (no git, a tarball).
fn is_a_commit(revision: &str) -> Option<bool> {
    git(&["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--git-dir"])?;
    let commit = revision.trim_end_matches("-dirty");
    let status = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "cat-file", "-e"])
        .arg(format!("{commit}^{{commit}}"))
        .status()
        .ok()?;
    Some(commit.len() == 12 && status.success())
}

#[test]
fn dist_fills_one_folder_with_what_a_release_needs() {
    // The workspace's own oom-probe (cargo xtask test builds it first),
    // stripped so that the folder stays small (42 MB, not 235); the checks
    // do not depend on how it was built.
    let built = oom_probe_test_support::oom_probe_bin();
    assert!(
        built.exists(),
        "{}: run cargo build -p oom-probe first",
        built.display()
    );
    let scratch = std::env::temp_dir().join(format!("oom-probe-dist-test-{}", std::process::id()));
    fs::create_dir_all(&scratch).unwrap();
    let binary = scratch.join("oom-probe");
    let status = Command::new("strip")
        .arg("--strip-all")
        .arg(&built)
        .arg("-o")
        .arg(&binary)
        .status()
        .expect("run strip (binutils)");
    assert!(status.success());
    let out = scratch.join("dist");
    let source = "https://example.invalid/oom-probe.git";
    let dist = assemble(&binary, &PLATFORMS[0], source, &out).unwrap();

    // Every file is summed, and the sums verify as a user checks them.
    let sums = fs::read_to_string(out.join(SUMS)).unwrap();
    let summed: Vec<&str> = sums
        .lines()
        .map(|l| l.split_once("  ").unwrap().1)
        .collect();
    let expected: Vec<String> = dist.files[..dist.files.len() - 1]
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    assert_eq!(summed, expected);
    assert_eq!(
        files_under(&out, Path::new("")).unwrap().len(),
        dist.files.len()
    );
    let check = Command::new("sha256sum")
        .args(["--check", "--strict", SUMS])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // The binary runs and names the revision it was built from.
    assert_eq!(
        dist.binary,
        PathBuf::from(format!("oom-probe-{}-linux-amd64", dist.version))
    );
    let (version, revision) = version_of(&out.join(&dist.binary)).unwrap();
    assert_eq!(
        (version.as_str(), revision.as_str()),
        (env!("CARGO_PKG_VERSION"), dist.revision.as_str())
    );
    // (The binary may be older than HEAD: `cargo test -p xtask` does not
    // rebuild it.)
    if let Some(commit) = is_a_commit(&revision) {
        assert!(commit, "{revision} is not a commit of this repository");
    }

    // Completions and man pages, non-empty, naming the commands.
    for file in [
        "completions/oom-probe.bash",
        "completions/_oom-probe",
        "completions/oom-probe.fish",
        "man/oom-probe.1",
        "man/oom-probe-watch.1",
        "man/oom-probe-run.1",
        "man/oom-probe-history.1",
        "man/oom-probe-check.1",
    ] {
        let text = fs::read_to_string(out.join(file)).unwrap();
        let words: &[&str] = if file.ends_with("oom-probe.1") || file.starts_with("completions") {
            &["watch", "run", "history", "check"]
        } else {
            &[".TH oom-probe-"]
        };
        for word in words {
            assert!(text.contains(word), "{file} lacks {word}");
        }
    }

    // The OCI archive: layout, index, manifest, config, layer.
    let layout = untar(&fs::read(out.join(&dist.image)).unwrap());
    assert_eq!(layout["oci-layout"].0, br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: Value = serde_json::from_slice(&layout["index.json"].0).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(manifests[0]["platform"]["architecture"], "amd64");
    let manifest: Value = serde_json::from_slice(blob(&layout, &manifests[0])).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config: Value = serde_json::from_slice(blob(&layout, &manifest["config"])).unwrap();
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/oom-probe"])
    );
    for (key, value) in [
        ("org.opencontainers.image.source", source),
        ("org.opencontainers.image.version", dist.version.as_str()),
        ("org.opencontainers.image.revision", dist.revision.as_str()),
    ] {
        assert_eq!(
            config["config"]["Labels"][key], value,
            "label {key}: {config}"
        );
        assert_eq!(
            manifest["annotations"][key], value,
            "annotation {key}: {manifest}"
        );
        assert_eq!(
            manifests[0]["annotations"][key], value,
            "index {key}: {index}"
        );
    }
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let layer = untar(blob(&layout, &layers[0]));
    let (inside, mode) = &layer["oom-probe"];
    assert_eq!(*mode & 0o777, 0o755);
    assert!(
        *inside == fs::read(&binary).unwrap(),
        "the image's /oom-probe is not the binary"
    );
    let diff_id = format!("sha256:{}", hex(&Sha256::digest(blob(&layout, &layers[0]))));
    assert_eq!(config["rootfs"]["diff_ids"][0], diff_id.as_str());

    fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn only_an_empty_or_former_dist_folder_is_emptied() {
    let scratch = std::env::temp_dir().join(format!("oom-probe-dist-empty-{}", std::process::id()));
    let former = scratch.join("former");
    fs::create_dir_all(former.join("man")).unwrap();
    fs::write(former.join(SUMS), "").unwrap();
    fs::write(former.join("man/oom-probe.1"), "old").unwrap();
    empty_folder(&former).unwrap();
    assert_eq!(fs::read_dir(&former).unwrap().count(), 0);
    let other = scratch.join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("keep.txt"), "mine").unwrap();
    let refused = empty_folder(&other).unwrap_err();
    assert!(refused.to_string().contains("not emptied"), "{refused:#}");
    assert!(other.join("keep.txt").exists());
    empty_folder(&scratch.join("new")).unwrap();
    assert!(scratch.join("new").is_dir());
    fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn version_lines_parse_into_version_and_revision() {
    assert_eq!(
        parse_version("oom-probe 0.1.0 (revision 0123abcd4567-dirty)\n"),
        Some(("0.1.0".into(), "0123abcd4567-dirty".into()))
    );
    for bad in [
        "oom-probe 0.1.0",
        "other 0.1.0 (revision x)",
        "oom-probe 0.1.0 (revision )",
    ] {
        assert_eq!(parse_version(bad), None, "{bad}");
    }
}
