//! Project tasks: `cargo xtask <task>`. Each one installs what it needs on a
//! fresh machine first, so the README's two commands are all a person types.

mod bench;
mod dist;
mod fuzz;
mod setup;
mod soak;
mod test_counts;
mod vm;

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "oom-probe project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain (nightly rust-src, bpf-linker) and mount tracefs.
    Setup,
    /// Set up, build and run `oom-probe watch` on this node (as root); extra
    /// arguments go to `oom-probe watch`.
    Watch {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run everything CI runs: fmt, cargo-deny, clippy, fuzzing (20 s a target), unit and end-to-end tests, the kernel matrix.
    Test {
        /// `arm64`: boot the whole arm64 kernel matrix too (by default none
        /// yet: see `kernel_matrix`).
        #[arg(long, value_enum)]
        arch: Option<vm::arch::Arch>,
    },
    /// Set up, build release binaries and measure latency, bursts and
    /// footprint next to bpftrace and a kmsg reader (root; prints a table and
    /// writes JSON).
    Bench(bench::BenchArgs),
    /// Set up, build release binaries and run the agent under continuous
    /// kills in cgroups created and removed all the time (root; `--minutes`,
    /// default 10): checks every kill is counted once and prints the RSS
    /// curve.
    Soak(soak::SoakArgs),
    /// Set up and build the static (musl) oom-probe the image holds; print
    /// its path, and copy it to --out if given (the Dockerfile's build stage).
    Static {
        /// Where to copy the binary.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// The architecture to build for (arm64: with Debian's cross gcc).
        #[arg(long, value_enum, default_value = "amd64")]
        arch: vm::arch::Arch,
    },
    /// Build what a release publishes into one folder (target/dist): the
    /// static binary, the image as an OCI archive, shell completions, man
    /// pages and SHA256SUMS.
    Dist(dist::DistArgs),
    /// Boot each kernel of the matrix (5.10, 6.1, 6.12) under QEMU and run the
    /// end-to-end tests in it.
    VmTest(vm::VmTestArgs),
    /// Set up (cargo-fuzz, nightly) and run every fuzz target of fuzz/ for
    /// a bounded time on its committed seeds; fails on a crash. Prints the
    /// executions and coverage each reached.
    Fuzz(fuzz::FuzzArgs),
    /// The /dev/kmsg regex reader the benchmark compares against.
    #[command(hide = true)]
    KmsgReader,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::build_toolchain().map(drop),
        Task::Watch { args } => watch(&args),
        Task::Test { arch } => test(arch == Some(vm::arch::Arch::Arm64)),
        Task::Bench(args) => bench::run(&args),
        Task::Soak(args) => soak::run(&args),
        Task::KmsgReader => bench::kmsg_reader(),
        Task::Static { out, arch } => {
            let binary = static_binary(arch)?;
            if let Some(out) = out {
                std::fs::copy(&binary, &out).with_context(|| {
                    format!("cannot copy {} to {}", binary.display(), out.display())
                })?;
            }
            println!("{}", binary.display());
            Ok(())
        }
        Task::Dist(args) => dist::run(&args),
        Task::VmTest(args) => vm::run(args).map(drop),
        Task::Fuzz(args) => fuzz::run(&args),
    }
}

/// Sets up (eBPF toolchain, musl target and C compiler) and builds the
/// static oom-probe for `arch`; returns its path.
fn static_binary(arch: vm::arch::Arch) -> Result<std::path::PathBuf> {
    let toolchain = setup::build_toolchain()?;
    vm::artifacts::ensure_target(arch)?;
    vm::artifacts::build_oom_probe(&toolchain, arch)
}

fn watch(args: &[String]) -> Result<()> {
    let toolchain = setup::build_toolchain()?;
    setup::mount_tracefs();
    cargo(
        &toolchain,
        &["build", "--release", "--package", "oom-probe"],
    )?;
    let status = Command::new("target/release/oom-probe")
        .arg("watch")
        .args(args)
        .status()
        .context("cannot start target/release/oom-probe")?;
    if !status.success() {
        bail!("oom-probe watch exited with {status}");
    }
    Ok(())
}

fn test(whole_arm64_matrix: bool) -> Result<()> {
    let toolchain = setup::build_toolchain()?;
    // The end-to-end tests run real containers under a private containerd
    // (deploy/examples' pods in an image of the static busybox), and a real
    // Prometheus (and promtool) for the alerts and dashboard; the table is
    // checked in a real terminal, tmux's.
    setup::apt_install(&[
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("busybox", "busybox-static"),
        ("promtool", "prometheus"),
        ("tmux", "tmux"),
    ])?;
    setup::mount_tracefs();
    setup::cargo_deny()?;
    cargo(&toolchain, &["fmt", "--all", "--check"])?;
    // Licenses, banned crates and sources of every dependency (deny.toml);
    // offline and quick, so it runs on every test run. On a fresh machine
    // nothing is downloaded yet: fetch the locked crates first.
    cargo(&toolchain, &["fetch", "--locked"])?;
    cargo(
        &toolchain,
        &["deny", "--offline", "check", "licenses", "bans", "sources"],
    )?;
    cargo(
        &toolchain,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    cargo(&toolchain, &["build", "--workspace", "--bins"])?;
    // The static oom-probe of the kernel matrix (built here, reused by it):
    // the image test builds the Dockerfile's `prebuilt` target from it.
    vm::artifacts::ensure_target(vm::arch::Arch::Amd64)?;
    let static_oom_probe =
        vm::artifacts::build_binaries(&toolchain, vm::arch::Arch::Amd64)?.oom_probe;
    // The end-to-end tests fail rather than skip when they cannot run; never
    // let an inherited OOM_PROBE_ALLOW_SKIP turn that into a silent pass.
    // Debian's real earlyoom for the userspace-killer tests, unpacked (not
    // installed: an installed earlyoom starts its service on this node).
    let earlyoom = vm::apt::Apt::default().cached_file(
        "earlyoom",
        "usr/bin/earlyoom",
        &std::path::PathBuf::from("target/tools/earlyoom"),
    )?;
    let mut test = setup::cargo_command(&toolchain);
    // --no-fail-fast: one run reports every failing test binary, and the
    // kernel matrix runs even when a host test failed, so that a CI log
    // shows every failure at once.
    test.args(["test", "--workspace", "--no-fail-fast"])
        .env("OOM_PROBE_STATIC_BIN", &static_oom_probe)
        .env("OOM_PROBE_EARLYOOM", std::path::absolute(&earlyoom)?)
        .env_remove("OOM_PROBE_ALLOW_SKIP");
    let host = test_counts::run_counting_tests(&mut test)?;
    if host.failure.is_none() {
        println!("xtask: fmt, clippy, unit and end-to-end tests passed on the host");
    }
    let matrix = kernel_matrix(whole_arm64_matrix)?;
    // Every parser of outside input, fuzzed for a bounded time on its
    // seeds; after the tests, so a crash does not hide their results.
    let fuzzing = fuzz::run(&fuzz::FuzzArgs::for_test_suite()).err();
    println!(
        "tests: {} passed, {} failed",
        host.passed + matrix.passed,
        host.failed + matrix.failed
    );
    if let Some(fuzzing) = &fuzzing {
        println!("fuzzing failed: {fuzzing:#}");
    }
    if !host.failed_tests.is_empty() {
        println!("failing host tests:");
        for name in &host.failed_tests {
            println!("    {name}");
        }
    }
    let failures: Vec<String> = [
        host.failure,
        matrix.failure.map(|m| format!("kernel matrix: {m}")),
        fuzzing.map(|f| format!("fuzzing: {f:#}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if failures.is_empty() {
        println!("xtask: fmt, clippy, unit, end-to-end, kernel-matrix tests and fuzzing passed");
        Ok(())
    } else {
        bail!("{}", failures.join("; "))
    }
}

/// The QEMU kernel matrices, unless `OOM_PROBE_SKIP_VM=1` (said loudly; CI
/// never sets it): every amd64 kernel, and every arm64 kernel when
/// `whole_arm64_matrix` (`--arch arm64`). Not by default yet: the static
/// aarch64 build (fat LTO, one codegen unit) took 17 min 43 s from zero on
/// this 2-core machine, which with its VM would take CI from about 44 to
/// about 70 minutes; one arm64 kernel every run (6.12: every hook) waits
/// for a cheaper build profile of the VM's binaries (issue 31).
fn kernel_matrix(whole_arm64_matrix: bool) -> Result<vm::Matrix> {
    if std::env::var_os("OOM_PROBE_SKIP_VM").is_some_and(|v| v == "1") {
        eprintln!(
            "\n*** SKIPPED the kernel matrix (cargo xtask vm-test): OOM_PROBE_SKIP_VM=1 ***\n"
        );
        return Ok(vm::Matrix {
            passed: 0,
            failed: 0,
            failure: None,
        });
    }
    let amd64 = vm::run_matrix(vm::VmTestArgs::for_test_suite(vm::arch::Arch::Amd64, None))?;
    if !whole_arm64_matrix {
        eprintln!(
            "\n*** NOT RUN: the arm64 kernel matrix (cargo xtask test --arch arm64, or \
             cargo xtask vm-test --arch arm64) ***\n"
        );
        return Ok(amd64);
    }
    let arm64 = vm::run_matrix(vm::VmTestArgs::for_test_suite(vm::arch::Arch::Arm64, None))?;
    let failure = [("amd64", amd64.failure), ("arm64", arm64.failure)]
        .into_iter()
        .filter_map(|(arch, failure)| Some(format!("{arch}: {}", failure?)))
        .collect::<Vec<_>>();
    Ok(vm::Matrix {
        passed: amd64.passed + arm64.passed,
        failed: amd64.failed + arm64.failed,
        failure: (!failure.is_empty()).then(|| failure.join("; ")),
    })
}

/// Runs cargo with the environment the eBPF build needs.
pub(crate) fn cargo(toolchain: &setup::EbpfToolchain, args: &[&str]) -> Result<()> {
    run(setup::cargo_command(toolchain).args(args))
}

/// Runs a command, echoing it; fails on a non-zero exit.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
