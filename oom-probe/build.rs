//! Builds the eBPF object (crate `oom-probe-ebpf`) with nightly and
//! bpf-linker, so that `cargo build` alone yields a complete binary.
//! `cargo xtask setup` installs both; `OOM_PROBE_EBPF_TOOLCHAIN` names another
//! toolchain (xtask sets `stable` plus `RUSTC_BOOTSTRAP=1` when nightly is absent).
//!
//! Also stamps the git revision into the binary (`OOM_PROBE_REVISION`, shown
//! by `--version` and `oom_probe_build_info`).

use std::process::Command;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../oom-probe-common/src");
    println!("cargo:rerun-if-env-changed=OOM_PROBE_EBPF_TOOLCHAIN");
    println!("cargo:rustc-env=OOM_PROBE_REVISION={}", revision());
    let toolchain = std::env::var("OOM_PROBE_EBPF_TOOLCHAIN").ok();
    // aya-build forwards every line the nested cargo writes on stderr as a
    // `cargo:warning`, so each build showed the eBPF crate's `Compiling` and
    // `Finished` lines as warnings. Quiet, that cargo writes only what is
    // worth a warning (compiler diagnostics, errors); the child inherits it.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "oom-probe-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../oom-probe-ebpf"),
            ..Default::default()
        }],
        match toolchain.as_deref() {
            None | Some("nightly") => aya_build::Toolchain::Nightly,
            Some(other) => aya_build::Toolchain::Custom(other),
        },
    )
}

/// The revision to stamp: `OOM_PROBE_REVISION` when set (`cargo xtask dist`
/// sets it, with `-dirty` for a tree with uncommitted changes), else
/// `git rev-parse --short=12 HEAD`, else `unknown` (a source tarball, no git,
/// or a repository git refuses to read). No `-dirty` here: knowing it would
/// mean re-running this script, and the eBPF build, on every edit.
fn revision() -> String {
    println!("cargo:rerun-if-env-changed=OOM_PROBE_REVISION");
    if let Ok(revision) = std::env::var("OOM_PROBE_REVISION") {
        if !revision.is_empty() {
            return revision;
        }
    }
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
    };
    let Some(revision) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    // Run again when HEAD moves: HEAD itself (a checkout) and the branch it
    // names (a commit), loose or packed; paths as git resolves them, which
    // also holds in a worktree.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        // (a path that does not exist would make cargo run this every time)
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            .filter(|path| std::path::Path::new(path).exists())
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    revision
}
