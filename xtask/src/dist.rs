//! `cargo xtask dist`: what a release publishes, in one folder
//! (target/dist): the static binary, the image as an OCI archive (labelled
//! with its source, version and revision), shell completions, the man pages
//! and SHA256SUMS over all of them.

use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};
use oom_probe_test_support::{containerd::write_oci_archive_for, image::build_stage};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `cargo xtask dist`'s flags.
#[derive(clap::Args)]
pub struct DistArgs {
    /// The folder to fill (emptied first; default: target/dist).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Package this static oom-probe instead of building one (its own
    /// `--version` gives the version and revision).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The repository URL for the image's org.opencontainers.image.source
    /// (default: `git remote get-url origin`).
    #[arg(long)]
    source: Option<String>,
}

/// A platform a release ships for.
pub struct Platform {
    /// The Rust target the static binary is built for (what
    /// [`crate::static_binary`] builds for this one).
    pub rust_target: &'static str,
    /// Its name in OCI image configs and file names (`amd64`, `arm64`).
    pub oci_arch: &'static str,
}

/// The platforms of a release. arm64 (`aarch64-unknown-linux-musl`,
/// `arm64`) is one more entry once the static build and the kernel matrix
/// cover it; completions and man pages come from the binary that runs here.
pub const PLATFORMS: &[Platform] = &[Platform {
    rust_target: crate::vm::artifacts::TARGET,
    oci_arch: "amd64",
}];

/// The file holding the sums, in `sha256sum` format.
pub const SUMS: &str = "SHA256SUMS";

/// Builds the static binary (unless `--binary`) and fills the folder.
pub fn run(args: &DistArgs) -> Result<()> {
    let source = match &args.source {
        Some(source) => source.clone(),
        None => git(&["remote", "get-url", "origin"])
            .context("no git remote origin to name the image's source: pass --source URL")?,
    };
    let platform = &PLATFORMS[0];
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => {
            ensure!(
                platform.rust_target == crate::vm::artifacts::TARGET,
                "no static build for {} yet",
                platform.rust_target
            );
            // build.rs stamps it; only here is the tree's state known.
            std::env::set_var("OOM_PROBE_REVISION", checkout_revision());
            crate::static_binary(crate::vm::arch::Arch::Amd64)?
        }
    };
    let out = match &args.out {
        Some(out) => out.clone(),
        None => crate::vm::artifacts::target_dir()?.join("dist"),
    };
    let dist = assemble(&binary, platform, &source, &out)?;
    println!(
        "oom-probe {} (revision {}) in {}:",
        dist.version,
        dist.revision,
        out.display()
    );
    for file in &dist.files {
        println!("    {}", file.display());
    }
    println!(
        "check: (cd {out} && sha256sum --check {SUMS}); {out}/{binary} --version\n\
         push:  skopeo copy oci-archive:{out}/{image} docker://<registry>/oom-probe:{version}",
        out = out.display(),
        binary = dist.binary.display(),
        image = dist.image.display(),
        version = dist.version,
    );
    Ok(())
}

/// What [`assemble`] wrote.
#[derive(Debug)]
pub struct Dist {
    /// The version and revision the binary's `--version` gave.
    pub version: String,
    pub revision: String,
    /// Every file written, relative to the folder, sorted; SHA256SUMS last.
    pub files: Vec<PathBuf>,
    /// The binary's file name (`oom-probe-<version>-linux-<arch>`).
    pub binary: PathBuf,
    /// The OCI archive's file name (`<binary>.oci.tar`).
    pub image: PathBuf,
}

/// Fills `out` (emptied first) from the static `binary` for `platform`:
/// the binary, its completions (bash, zsh, fish) and man pages, the image
/// built from the Dockerfile's `prebuilt` stage as an OCI archive, and
/// SHA256SUMS.
pub fn assemble(binary: &Path, platform: &Platform, source: &str, out: &Path) -> Result<Dist> {
    let (version, revision) = version_of(binary)?;
    empty_folder(out)?;
    let name = PathBuf::from(format!("oom-probe-{version}-linux-{}", platform.oci_arch));
    let installed = out.join(&name);
    fs::copy(binary, &installed)
        .with_context(|| format!("cannot copy {} to {}", binary.display(), out.display()))?;
    fs::set_permissions(&installed, fs::Permissions::from_mode(0o755))?;

    fs::create_dir(out.join("completions"))?;
    for (shell, file) in [
        ("bash", "oom-probe.bash"),
        ("zsh", "_oom-probe"),
        ("fish", "oom-probe.fish"),
    ] {
        let script = output_of(Command::new(&installed).args(["completions", shell]))?;
        ensure!(
            !script.is_empty(),
            "oom-probe completions {shell} printed nothing"
        );
        fs::write(out.join("completions").join(file), script)?;
    }
    let man = out.join("man");
    fs::create_dir(&man)?;
    output_of(Command::new(&installed).arg("man").arg(&man))?;

    let repository = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent folder")?;
    let name_text = name.to_str().context("a file name that is not UTF-8")?;
    let image = build_stage(
        &repository.join("Dockerfile"),
        out,
        "prebuilt",
        &[
            ("BINARY", name_text),
            ("VERSION", &version),
            ("REVISION", &revision),
            ("SOURCE", source),
        ],
    )?;
    let archive = PathBuf::from(format!("{name_text}.oci.tar"));
    write_oci_archive_for(
        &out.join(&archive),
        &format!("oom-probe:{version}"),
        platform.oci_arch,
        &image.files,
        Value::Object(image.config),
    )?;

    let mut files = files_under(out, Path::new(""))?;
    files.sort();
    let mut sums = fs::File::create(out.join(SUMS))?;
    for file in &files {
        let bytes = fs::read(out.join(file))?;
        writeln!(sums, "{}  {}", hex(&Sha256::digest(&bytes)), file.display())?;
    }
    files.push(SUMS.into());
    Ok(Dist {
        version,
        revision,
        files,
        binary: name,
        image: archive,
    })
}

/// The version and revision in `binary --version`: `oom-probe 0.1.0
/// (revision 0123abcd4567)`.
pub fn version_of(binary: &Path) -> Result<(String, String)> {
    let text = output_of(Command::new(binary).arg("--version"))?;
    parse_version(&text).with_context(|| format!("{} --version said {text:?}", binary.display()))
}

fn parse_version(text: &str) -> Option<(String, String)> {
    let rest = text.trim().strip_prefix("oom-probe ")?;
    let (version, revision) = rest.split_once(" (revision ")?;
    let revision = revision.strip_suffix(')')?;
    (!version.is_empty() && !revision.is_empty() && !revision.contains(char::is_whitespace))
        .then(|| (version.to_string(), revision.to_string()))
}

/// The checkout's `git rev-parse --short=12 HEAD`, `-dirty` when tracked
/// files have changes; `unknown` without git.
fn checkout_revision() -> String {
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
    if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}

/// A git command's trimmed output, `None` when it fails or prints nothing.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// Runs `command`; its stdout, or an error with its stderr.
fn output_of(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Makes `out` an empty folder; refuses a non-empty one that is not a
/// former dist folder (no SHA256SUMS), so a wrong `--out` loses nothing.
fn empty_folder(out: &Path) -> Result<()> {
    if out.exists() {
        let empty = fs::read_dir(out)?.next().is_none();
        if !empty && !out.join(SUMS).exists() {
            bail!(
                "{} holds files but no {SUMS}: not emptied (give an empty or new --out)",
                out.display()
            );
        }
        fs::remove_dir_all(out)?;
    }
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

/// Every file under `root/below`, relative to `root`.
fn files_under(root: &Path, below: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(root.join(below))? {
        let entry = entry?;
        let relative = below.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            files.extend(files_under(root, &relative)?);
        } else {
            files.push(relative);
        }
    }
    Ok(files)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
