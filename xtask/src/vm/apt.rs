//! Debian packages the VM needs without installing them on the host: the
//! kernels and a static busybox, found with `apt-cache`, fetched with
//! `apt-get download` and unpacked into the cache, so a fresh machine needs
//! nothing but `cargo xtask vm-test`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// apt, with its package lists refreshed at most once per run (they may be
/// missing or stale on a fresh machine, and refreshing takes seconds).
#[derive(Default)]
pub struct Apt {
    updated: bool,
}

impl Apt {
    /// The output of `apt-cache search --names-only <regex>`; refreshes the
    /// package lists first when nothing matches.
    pub fn search(&mut self, regex: &str) -> Result<String> {
        let found = search(regex)?;
        if !found.trim().is_empty() || self.updated {
            return Ok(found);
        }
        self.update()?;
        search(regex)
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
        let download = || {
            crate::run(
                Command::new("apt-get")
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
        crate::setup::apt_update_once()?;
        self.updated = true;
        Ok(())
    }
}

fn search(regex: &str) -> Result<String> {
    let output = Command::new("apt-cache")
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
