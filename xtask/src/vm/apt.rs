//! Debian packages the VM needs without installing them on the host: the
//! kernels and a static busybox, found with `apt-cache`, fetched with
//! `apt-get download` and unpacked into the cache, so a fresh machine needs
//! nothing but `cargo xtask vm-test`.
//!
//! Kernels from another Debian release (bullseye's 5.10) come through an
//! [`Apt`] with its own sources list, package lists and archive cache under
//! the VM cache: the machine's apt configuration is neither read nor changed
//! for them, so a clean Debian root with only its own sources can fetch them.
//! The same holds for another architecture's packages (arm64 kernels and
//! busybox on an amd64 machine): its private apt fetches that
//! architecture's lists alone, and the machine's dpkg never learns of it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::arch::Arch;

/// apt, with its package lists refreshed at most once per run (they may be
/// missing or stale on a fresh machine, and refreshing takes seconds).
#[derive(Default)]
pub struct Apt {
    updated: bool,
    /// `-o` options of a private configuration; empty for the machine's.
    options: Vec<String>,
}

/// A Debian suite outside the machine's apt sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// Short name for the cache directory, e.g. `bullseye`.
    pub name: &'static str,
    /// `deb` lines of its sources list (one-line format).
    pub sources: &'static str,
}

impl Apt {
    /// An apt that sees only `suite`'s packages for `arch`: its sources
    /// list, package lists and downloads live in `cache/apt-<name>` (for the
    /// host's architecture) or `cache/apt-<name>-<arch>`, and the machine's
    /// `/etc/apt/sources.list*` are ignored. Signatures are checked against
    /// the keyring the sources name (Debian's archive keyring, which every
    /// Debian system has and which holds the keys of older releases too).
    pub fn private(suite: Suite, arch: Arch, cache: &Path) -> Result<Self> {
        let foreign = arch != Arch::host();
        let root = if foreign {
            cache.join(format!("apt-{}-{}", suite.name, arch.debian()))
        } else {
            cache.join(format!("apt-{}", suite.name))
        };
        for dir in ["lists/partial", "archives/partial"] {
            fs::create_dir_all(root.join(dir))
                .with_context(|| format!("mkdir {}", root.join(dir).display()))?;
        }
        let sources = root.join("sources.list");
        fs::write(&sources, suite.sources)
            .with_context(|| format!("write {}", sources.display()))?;
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        // Lists and downloads of that architecture alone.
        let architecture = [
            format!("APT::Architecture={}", arch.debian()),
            format!("APT::Architectures={}", arch.debian()),
        ];
        let options = [
            format!("Dir::Etc::SourceList={}", path(sources)),
            // No drop-in directory: only the list above.
            format!("Dir::Etc::SourceParts={}", path(root.join("no-parts"))),
            format!("Dir::State::Lists={}", path(root.join("lists"))),
            format!("Dir::Cache={}", path(root.clone())),
            format!("Dir::Cache::Archives={}", path(root.join("archives"))),
            // Only the package lists: no translations, contents or AppStream data.
            "Acquire::Languages=none".to_string(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_string(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".to_string(),
            "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false".to_string(),
        ]
        .into_iter()
        .chain(architecture.into_iter().filter(|_| foreign))
        .flat_map(|option| ["-o".to_string(), option])
        .collect();
        Ok(Self {
            updated: false,
            options,
        })
    }

    /// The output of `apt-cache search --names-only <regex>`; refreshes the
    /// package lists first when nothing matches.
    pub fn search(&mut self, regex: &str) -> Result<String> {
        let found = search(&self.options, regex)?;
        if !found.trim().is_empty() || self.updated {
            return Ok(found);
        }
        self.update()?;
        search(&self.options, regex)
    }

    /// `member` (a path inside `package`, e.g. `boot/vmlinuz-…`) copied to
    /// `cached`; downloads and unpacks the package only when `cached` does not
    /// exist yet, so later runs reuse it.
    pub fn cached_file(&mut self, package: &str, member: &str, cached: &Path) -> Result<PathBuf> {
        if cached.exists() {
            return Ok(cached.to_path_buf());
        }
        let dir = cached.parent().context("cache file has no directory")?;
        let work = dir.join(format!("unpack-{package}"));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).with_context(|| format!("mkdir {}", work.display()))?;
        self.unpack(package, &work)?;
        let mut partial = cached.as_os_str().to_owned();
        partial.push(".partial");
        fs::copy(work.join("root").join(member), &partial)
            .with_context(|| format!("{package} has no {member}"))?;
        fs::rename(&partial, cached)?;
        fs::remove_dir_all(&work)?;
        Ok(cached.to_path_buf())
    }

    /// Downloads `package` into `work` and unpacks it into `work/root`;
    /// refreshes stale package lists once when the download fails.
    fn unpack(&mut self, package: &str, work: &Path) -> Result<()> {
        eprintln!("xtask: downloading {package}");
        let options = self.options.clone();
        let download = || {
            crate::run(
                Command::new("apt-get")
                    .args(&options)
                    // The cache is root's: apt's own _apt user cannot write there.
                    .args(["-o", "APT::Sandbox::User=root", "download", package])
                    .current_dir(work),
            )
        };
        if let Err(error) = download() {
            if self.updated {
                return Err(error);
            }
            self.update()?;
            download()?;
        }
        let deb = fs::read_dir(work)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download {package} left no .deb"))?;
        crate::run(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(work.join("root")),
        )
    }

    fn update(&mut self) -> Result<()> {
        if self.options.is_empty() {
            crate::setup::apt_update_once()?;
        } else {
            eprintln!("xtask: apt-get update (private sources list)");
            crate::run(Command::new("apt-get").args(&self.options).args([
                "-o",
                "APT::Sandbox::User=root",
                "update",
                "-qq",
            ]))?;
        }
        self.updated = true;
        Ok(())
    }
}

fn search(options: &[String], regex: &str) -> Result<String> {
    let output = Command::new("apt-cache")
        .args(options)
        .args(["search", "--names-only", regex])
        .output()
        .context("cannot run apt-cache")?;
    if !output.status.success() {
        bail!(
            "apt-cache search {regex} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
