//! The VM's root filesystem: one uncompressed "newc" cpio with vm-init as
//! `/init`, oom-probe, the memory hog, a static busybox (the tests run `sh`,
//! `mount`, `dd`…) and the test executables.
//!
//! Busybox's applet links are listed by running it, so only for the host's
//! own architecture; another architecture's initramfs holds busybox alone,
//! and vm-init makes the links at boot (`busybox --install -s /bin`).

use std::{
    fs,
    io::BufWriter,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use vm_init::{OOM_HOG_BIN, OOM_PROBE_BIN, TESTS_DIR};

use super::{apt::Apt, arch::Arch, artifacts::Binaries, cpio::CpioWriter, kernels::BOOKWORM};

/// Directories created before anything is put in them; vm-init mounts over
/// the ones that need a filesystem.
const DIRS: &[&str] = &["bin", "dev", "proc", "sys", "tmp", "tests"];

/// What goes into the initramfs besides its fixed directories.
pub struct Contents<'a> {
    /// vm-init, oom-probe and oom-hog.
    pub binaries: &'a Binaries,
    /// A static busybox, whose applets become `/bin/<applet>` links.
    pub busybox: &'a Path,
    /// The architecture of all of them.
    pub arch: Arch,
    /// (name, executable) of each test; each goes to `/tests/<name>`.
    pub tests: &'a [(String, PathBuf)],
}

/// Debian's static busybox for `arch`, unpacked into `cache` on first use:
/// its shell and tools are what the end-to-end tests shell out to. The
/// host's comes from the machine's apt, another architecture's from
/// bookworm (the machine's release) through a private apt.
pub fn busybox(apt: &mut Apt, arch: Arch, cache: &Path) -> Result<PathBuf> {
    if arch == Arch::host() {
        return apt.cached_file("busybox-static", "bin/busybox", &cache.join("busybox"));
    }
    Apt::private(BOOKWORM, arch, cache)?.cached_file(
        "busybox-static",
        "bin/busybox",
        &cache.join(format!("busybox-{}", arch.debian())),
    )
}

/// Writes the initramfs to `path`.
pub fn write(contents: &Contents, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let file = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    for dir in DIRS {
        cpio.dir(dir)?;
    }
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    let binaries = contents.binaries;
    add_executable(&mut cpio, "init", &binaries.vm_init)?;
    add_executable(&mut cpio, OOM_PROBE_BIN, &binaries.oom_probe)?;
    add_executable(&mut cpio, OOM_HOG_BIN, &binaries.oom_hog)?;
    add_executable(&mut cpio, "bin/busybox", contents.busybox)?;
    // Busybox has no applet named like oom-probe or oom-hog; `applets` leaves
    // out the one named `busybox`, which would replace the binary by a loop.
    if contents.arch == Arch::host() {
        for applet in applets(contents.busybox)? {
            cpio.symlink(&format!("bin/{applet}"), "busybox")?;
        }
    }
    for (name, exe) in contents.tests {
        add_executable(&mut cpio, &format!("{TESTS_DIR}/{name}"), exe)?;
    }
    cpio.finish()?;
    Ok(())
}

fn add_executable<W: std::io::Write>(
    cpio: &mut CpioWriter<W>,
    path: &str,
    source: &Path,
) -> Result<()> {
    let data = fs::read(source).with_context(|| format!("read {}", source.display()))?;
    cpio.file(path, 0o755, &data)?;
    Ok(())
}

/// The applet names of `busybox`, from `busybox --list`, except `busybox`
/// itself (Debian's build lists it).
fn applets(busybox: &Path) -> Result<Vec<String>> {
    let output = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("cannot run {}", busybox.display()))?;
    if !output.status.success() {
        bail!("{} --list failed with {}", busybox.display(), output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|applet| !applet.is_empty() && !applet.contains('/') && *applet != "busybox")
        .map(String::from)
        .collect())
}
