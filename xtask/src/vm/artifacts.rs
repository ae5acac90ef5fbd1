//! The static executables that go into the initramfs. The VM has no libc
//! of its own, so everything is built for musl; paths come from cargo's JSON
//! messages rather than from guesses about the target directory layout.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::arch::Arch;
use crate::setup::{self, EbpfToolchain};

/// The target every executable in the VM is built for on the host's own
/// architecture ([`Arch::rust_target`] of the others).
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// The programs of the VM besides the tests.
pub struct Binaries {
    /// PID 1.
    pub vm_init: PathBuf,
    /// The tool under test.
    pub oom_probe: PathBuf,
    /// The memory hog the end-to-end tests get killed.
    pub oom_hog: PathBuf,
}

/// Adds the musl target of `arch` to the toolchain when it lacks it (quick
/// when present), and the C compiler that crates with C code (ring) need.
pub fn ensure_target(arch: Arch) -> Result<()> {
    arch.ensure_target()
}

/// Builds `vm-init`, `oom-probe` and `oom-hog` for `arch`'s musl target.
pub fn build_binaries(toolchain: &EbpfToolchain, arch: Arch) -> Result<Binaries> {
    let built = cargo_executables(
        toolchain,
        arch,
        &[
            "build",
            "-p",
            "vm-init",
            "-p",
            "oom-probe",
            "-p",
            "oom-probe-tests",
            "--bins",
        ],
        "bin",
    )?;
    let find = |name: &str| {
        built
            .iter()
            .find(|(built, _)| built == name)
            .map(|(_, path)| path.clone())
            .with_context(|| format!("cargo built no {name} executable"))
    };
    Ok(Binaries {
        vm_init: find("vm-init")?,
        oom_probe: find("oom-probe")?,
        oom_hog: find("oom-hog")?,
    })
}

/// Builds the static `oom-probe` alone for `arch`'s musl target (what the
/// image holds) and returns its path.
pub fn build_oom_probe(toolchain: &EbpfToolchain, arch: Arch) -> Result<PathBuf> {
    let built = cargo_executables(
        toolchain,
        arch,
        &["build", "-p", "oom-probe", "--bins"],
        "bin",
    )?;
    built
        .into_iter()
        .find(|(name, _)| name == "oom-probe")
        .map(|(_, path)| path)
        .context("cargo built no oom-probe executable")
}

/// Builds the end-to-end tests of `oom-probe-tests` for `arch`'s musl
/// target (only the test targets in `only`, unless it is empty) and returns
/// each test executable with its test name (`capture`, …).
pub fn build_tests(
    toolchain: &EbpfToolchain,
    arch: Arch,
    only: &[String],
) -> Result<Vec<(String, PathBuf)>> {
    let mut args = vec!["test", "--no-run", "-p", "oom-probe-tests"];
    for name in only {
        args.extend(["--test", name]);
    }
    let tests = cargo_executables(toolchain, arch, &args, "test")?;
    if tests.is_empty() {
        bail!("oom-probe-tests has no test executables");
    }
    Ok(tests)
}

/// The directory cargo builds into (honours `CARGO_TARGET_DIR` and config).
pub fn target_dir() -> Result<PathBuf> {
    let output = Command::new(cargo())
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed with {}", output.status);
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// Runs a release cargo build for `arch`'s musl target and returns the
/// executables of the targets of `kind` it produced. The eBPF object is
/// built along (oom-probe's build.rs), with aya-build's `bpf_target_arch`
/// taken from that target: the kprobe reads `pt_regs` of that architecture.
fn cargo_executables(
    toolchain: &EbpfToolchain,
    arch: Arch,
    args: &[&str],
    kind: &str,
) -> Result<Vec<(String, PathBuf)>> {
    let mut command = setup::cargo_command(toolchain);
    arch.cargo_env(&mut command);
    command
        .args(args)
        .args(["--release", "--target", arch.rust_target()])
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit());
    eprintln!("xtask: running {command:?}");
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed with {}", output.status);
    }
    Ok(executables(&String::from_utf8_lossy(&output.stdout), kind))
}

/// (target name, executable) of every `compiler-artifact` message in cargo's
/// JSON output whose target is of `kind` (`bin`, `test`) and is executable.
fn executables(messages: &str, kind: &str) -> Vec<(String, PathBuf)> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == kind))
        })
        .filter_map(|m| {
            let name = m["target"]["name"].as_str()?;
            let executable = m["executable"].as_str()?;
            Some((name.to_string(), PathBuf::from(executable)))
        })
        .collect()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed messages of a real `cargo test --no-run --message-format=json`.
    const MESSAGES: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/test-support#oom-probe-test-support@0.1.0","target":{"kind":["lib"],"crate_types":["lib"],"name":"oom_probe_test_support"},"profile":{"test":false},"executable":null,"fresh":true}
{"reason":"compiler-artifact","target":{"kind":["bin"],"crate_types":["bin"],"name":"oom-hog"},"profile":{"test":false},"executable":"/t/x86_64-unknown-linux-musl/release/oom-hog","fresh":true}
{"reason":"compiler-artifact","target":{"kind":["test"],"crate_types":["bin"],"name":"capture"},"profile":{"test":true},"executable":"/t/x86_64-unknown-linux-musl/release/deps/capture-0123abcd","fresh":false}
{"reason":"build-script-executed","package_id":"path+file:///w/oom-probe#0.1.0","out_dir":"/t/build/out"}
not json at all
{"reason":"compiler-artifact","target":{"kind":["test"],"crate_types":["bin"],"name":"context"},"profile":{"test":true},"executable":"/t/x86_64-unknown-linux-musl/release/deps/context-4567ef00","fresh":false}
{"reason":"build-finished","success":true}
"#;

    #[test]
    fn finds_test_executables() {
        assert_eq!(
            executables(MESSAGES, "test"),
            vec![
                (
                    "capture".to_string(),
                    PathBuf::from("/t/x86_64-unknown-linux-musl/release/deps/capture-0123abcd")
                ),
                (
                    "context".to_string(),
                    PathBuf::from("/t/x86_64-unknown-linux-musl/release/deps/context-4567ef00")
                ),
            ]
        );
    }

    #[test]
    fn finds_binaries_and_skips_libraries() {
        assert_eq!(
            executables(MESSAGES, "bin"),
            vec![(
                "oom-hog".to_string(),
                PathBuf::from("/t/x86_64-unknown-linux-musl/release/oom-hog")
            )]
        );
        assert!(executables(MESSAGES, "lib").is_empty());
    }
}
