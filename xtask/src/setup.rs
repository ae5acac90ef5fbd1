//! Installs what building the eBPF side needs, and is quick when it is there.
//!
//! aya-build compiles `oom-probe-ebpf` with `cargo +<toolchain> -Z
//! build-std=core`, so it needs a toolchain with rust-src, and bpf-linker built
//! against the same LLVM as that toolchain. Nightly is preferred; without it,
//! stable with `RUSTC_BOOTSTRAP=1` and its own rust-src works too.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// The bpf-linker release this project builds with (LLVM 22, as rustc 1.95+).
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// The cargo-deny release `cargo xtask test` checks dependencies with.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Which toolchain builds the eBPF object, and how.
pub struct EbpfToolchain {
    name: String,
    needs_bootstrap: bool,
}

impl EbpfToolchain {
    /// The rustup toolchain's name (`nightly`, or `stable` with
    /// `RUSTC_BOOTSTRAP=1`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A `cargo` command that builds the eBPF side with `toolchain`
/// (oom-probe's build.rs reads `OOM_PROBE_EBPF_TOOLCHAIN`).
pub fn cargo_command(toolchain: &EbpfToolchain) -> Command {
    let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.env("OOM_PROBE_EBPF_TOOLCHAIN", &toolchain.name);
    if toolchain.needs_bootstrap {
        command.env("RUSTC_BOOTSTRAP", "1");
    }
    command
}

/// Everything a build needs: the eBPF toolchain, its rust-src and
/// bpf-linker. (The CRI client's code is generated in the tree: no protoc.)
pub fn build_toolchain() -> Result<EbpfToolchain> {
    ebpf_toolchain()
}

/// Makes sure the eBPF toolchain, its rust-src and bpf-linker are installed.
pub fn ebpf_toolchain() -> Result<EbpfToolchain> {
    let toolchain = if rustup(&["run", "nightly", "rustc", "--version"]).is_ok() {
        EbpfToolchain {
            name: "nightly".into(),
            needs_bootstrap: false,
        }
    } else {
        eprintln!("xtask: no nightly toolchain; building eBPF with stable and RUSTC_BOOTSTRAP=1");
        EbpfToolchain {
            name: "stable".into(),
            needs_bootstrap: true,
        }
    };
    let sysroot = PathBuf::from(rustup(&[
        "run",
        &toolchain.name,
        "rustc",
        "--print",
        "sysroot",
    ])?);
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        eprintln!("xtask: installing rust-src for {}", toolchain.name);
        rustup(&[
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &toolchain.name,
        ])?;
    }
    install_bpf_linker(&toolchain.name, &sysroot)?;
    Ok(toolchain)
}

/// bpf-linker must load the same major LLVM as the toolchain emits; building
/// it against the toolchain's own libLLVM guarantees that with no system LLVM.
fn install_bpf_linker(toolchain: &str, sysroot: &Path) -> Result<()> {
    // Run through rustup so the toolchain's libLLVM is on the library path.
    if rustup(&["run", toolchain, "bpf-linker", "--version"])
        .is_ok_and(|version| version.contains(BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    let lib = fs::read_dir(sysroot.join("lib"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("libLLVM.so.")
                || (name.starts_with("libLLVM-") && name.ends_with(".so"))
        })
        .with_context(|| format!("no libLLVM in {}/lib", sysroot.display()))?;
    let prefix = env::temp_dir().join("oom-probe-llvm-prefix");
    fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link)?;
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {}",
        lib.display()
    );
    let status = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            BPF_LINKER_LLVM_FEATURE,
        ])
        .env("LLVM_PREFIX", &prefix)
        .status()?;
    if !status.success() {
        bail!("cargo install bpf-linker failed with {status}");
    }
    Ok(())
}

/// Installs cargo-deny from crates.io (`cargo install --locked`) unless
/// this version is there; for `cargo deny check` in the test suite.
pub fn cargo_deny() -> Result<()> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let installed = Command::new(&cargo)
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains(CARGO_DENY_VERSION)
        });
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-deny {CARGO_DENY_VERSION}");
    let status = Command::new(&cargo)
        .args([
            "install",
            "cargo-deny",
            "--locked",
            "--version",
            CARGO_DENY_VERSION,
        ])
        .status()?;
    if !status.success() {
        bail!("cargo install cargo-deny failed with {status}");
    }
    Ok(())
}

/// The cargo-fuzz release `cargo xtask fuzz` (and `test`) runs the fuzz
/// targets with.
const CARGO_FUZZ_VERSION: &str = "0.13.1";

/// Installs cargo-fuzz from crates.io (`cargo install --locked`) unless
/// this version is there.
pub fn cargo_fuzz() -> Result<()> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let installed = Command::new(&cargo)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains(CARGO_FUZZ_VERSION)
        });
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    let status = Command::new(&cargo)
        .args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ])
        .status()?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed with {status}");
    }
    Ok(())
}

/// tp_btf and raw tracepoints do not need tracefs, but kprobes without the
/// kprobe PMU and `oom-probe check`'s report do; mount it when it is missing.
pub fn mount_tracefs() {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").is_dir() {
        return;
    }
    let mounted = Command::new("mount")
        .args(["-t", "tracefs", "nodev"])
        .arg(tracing)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "xtask: warning: could not mount tracefs at {}",
            tracing.display()
        );
    }
}

fn rustup(args: &[&str]) -> Result<String> {
    let out = Command::new("rustup")
        .args(args)
        .output()
        .context("cannot run rustup")?;
    if !out.status.success() {
        bail!(
            "rustup {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `rustup target add <target>` (quick when it is there): the musl targets
/// of the static builds.
pub fn rustup_target(target: &str) -> Result<()> {
    rustup(&["target", "add", target]).map(drop)
}

/// Installs Debian packages whose command is missing, running `apt-get
/// update` once first. Each pair is (command, package).
pub fn apt_install(needed: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(command, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {command}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    apt_update_once()?;
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !install.success() {
        bail!(
            "apt-get install {} failed with {install}",
            missing.join(" ")
        );
    }
    Ok(())
}

/// `apt-get update`, at most once per xtask run: before the first install or
/// package download that needs it.
pub fn apt_update_once() -> Result<()> {
    static UPDATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !UPDATED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        let update = Command::new("apt-get").args(["update", "-qq"]).status()?;
        if !update.success() {
            bail!("apt-get update failed with {update}");
        }
    }
    Ok(())
}
