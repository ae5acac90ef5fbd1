//! `cargo xtask vm-test`: runs the end-to-end tests on every kernel of the
//! matrix (Debian 11's 5.10 and Debian 12's 6.1 and 6.12 cloud kernels, for
//! amd64 or arm64), each in a throwaway QEMU VM, because oom-probe's hooks
//! and BTF offsets depend on the kernel and the host runs only one. The VM boots straight into `vm-init` (crate
//! `xtask/vm-init`), which runs `oom-probe check` and the tests and prints a
//! verdict line that decides pass or fail.

pub mod apt;
pub mod arch;
pub mod artifacts;
mod console;
mod cpio;
mod initramfs;
mod kernels;
mod qemu;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use apt::Apt;
use arch::Arch;
use console::Report;
use kernels::Kernel;

/// Options of `cargo xtask vm-test`.
#[derive(clap::Args, Debug)]
pub struct VmTestArgs {
    /// The architecture of the kernels and of everything in the VM (arm64
    /// is emulated on an amd64 host: TCG only).
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: Arch,
    /// Boot only the kernels of this series (5.10, 6.1, 6.12), or else those whose
    /// release contains this text.
    #[arg(long)]
    kernel: Option<String>,
    /// Boot the remaining kernels after one fails.
    #[arg(long)]
    keep_going: bool,
    /// Seconds a VM may run, from boot to power-off, before it fails
    /// (default: 300 for amd64, 600 for arm64, whose CPU is emulated
    /// instruction by instruction and ran 243 to 300+ s).
    #[arg(long)]
    timeout: Option<u64>,
    /// Use KVM if the CPU has vmx/svm (TCG otherwise, and by default).
    #[arg(long, env = "OOM_PROBE_VM_KVM", value_parser = clap::builder::BoolishValueParser::new())]
    kvm: bool,
    /// Run only this test target of oom-probe-tests (repeatable); by
    /// default the ones whose behaviour depends on the kernel
    /// ([`KERNEL_TESTS`]); the rest need the host (containerd, the source
    /// tree) and skip loudly in a VM.
    #[arg(long = "test", value_name = "NAME")]
    tests: Vec<String>,
    /// Run these static executables as the tests instead of building the
    /// end-to-end tests of oom-probe-tests (repeatable).
    #[arg(long = "test-exe", value_name = "PATH", conflicts_with = "tests")]
    test_exes: Vec<PathBuf>,
}

/// The end-to-end test targets worth running on every kernel (`pressure`:
/// cgroup v2 and node PSI, which the host's cgroup v1 cannot show;
/// `late_snapshot`: v2's `memory.current` and `memory.stat` read late).
pub const KERNEL_TESTS: [&str; 7] = [
    "capture",
    "context",
    "agent",
    "kubernetes",
    "errors",
    "pressure",
    "late_snapshot",
];

impl VmTestArgs {
    /// What `cargo xtask test` runs for `arch`: every kernel, or only those
    /// of series `kernel`, with every kernel test.
    pub fn for_test_suite(arch: Arch, kernel: Option<&str>) -> Self {
        Self {
            arch,
            kernel: kernel.map(String::from),
            keep_going: true,
            timeout: Some(900),
            kvm: std::env::var("OOM_PROBE_VM_KVM").is_ok_and(|v| v == "1" || v == "true"),
            tests: Vec::new(),
            test_exes: Vec::new(),
        }
    }
}

/// One kernel's result.
struct Outcome {
    kernel: Kernel,
    report: Report,
    run: qemu::Run,
    verdict: Result<(), String>,
}

/// Runs the VM matrix; fails when any selected kernel does not pass.
/// Returns the tests passed and failed over all kernels.
pub fn run(args: VmTestArgs) -> Result<(u64, u64)> {
    let matrix = run_matrix(args)?;
    match matrix.failure {
        Some(failure) => bail!(failure),
        None => Ok((matrix.passed, matrix.failed)),
    }
}

/// The counts of a kernel-matrix run that booted, whatever its verdict.
pub struct Matrix {
    /// Tests passed over every kernel.
    pub passed: u64,
    /// Tests failed over every kernel.
    pub failed: u64,
    /// Why the matrix failed (a kernel that did not boot or had a failing
    /// test), or `None` when every kernel passed.
    pub failure: Option<String>,
}

/// Boots the kernels and runs the tests like [`run`], but returns the counts
/// even when a kernel failed, so that the test suite can add them up.
pub fn run_matrix(mut args: VmTestArgs) -> Result<Matrix> {
    if args.tests.is_empty() && args.test_exes.is_empty() {
        args.tests = KERNEL_TESTS.iter().map(|t| t.to_string()).collect();
    }
    let arch = args.arch;
    crate::setup::apt_install(&[arch.qemu()])?;
    let mut apt = Apt::default();
    let cache = cache_dir()?;
    let kernels = kernels::newest(&mut apt, arch, &cache)?;
    let kernels = kernels::select(kernels, args.kernel.as_deref())?;
    let vmlinuzes = kernels
        .iter()
        .map(|kernel| kernel.vmlinuz(&mut apt, &cache))
        .collect::<Result<Vec<_>>>()?;
    let target = artifacts::target_dir()?;
    let initramfs = if arch == Arch::host() {
        target.join("vm").join("initramfs.cpio")
    } else {
        let name = format!("initramfs-{}.cpio", arch.debian());
        target.join("vm").join(name)
    };
    build_initramfs(&mut apt, &cache, &args, &initramfs)?;
    let accel = qemu::Accel::choose(args.kvm, arch);
    let labels: Vec<String> = kernels.iter().map(label).collect();
    let vms = kernels.iter().zip(&vmlinuzes).zip(&labels);
    let vms = vms.map(|((kernel, vmlinuz), label)| {
        let log = target
            .join("vm-logs")
            .join(format!("{}.log", kernel.release));
        let vm = qemu::Vm {
            label,
            arch,
            vmlinuz,
            initramfs: &initramfs,
            accel,
            timeout: Duration::from_secs(args.timeout.unwrap_or(arch.default_timeout())),
            log,
        };
        (kernel, vm)
    });
    let outcomes = boot_each(vms, args.keep_going)?;
    println!("\n{}", summary(&outcomes, arch, accel));
    finish(&outcomes, kernels.len())
}

/// The prefix of a kernel's console lines: its series, and its
/// architecture when not the host's (both matrices may run in one suite).
fn label(kernel: &Kernel) -> String {
    if kernel.arch == Arch::host() {
        kernel.series.to_string()
    } else {
        format!("{} {}", kernel.arch.debian(), kernel.series)
    }
}

/// Boots the VMs in turn, stopping at the first failure unless `keep_going`.
fn boot_each<'a>(
    vms: impl Iterator<Item = (&'a Kernel, qemu::Vm<'a>)>,
    keep_going: bool,
) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    for (kernel, vm) in vms {
        let outcome = boot(kernel, &vm)?;
        let failed = outcome.verdict.is_err();
        outcomes.push(outcome);
        if failed && !keep_going {
            break;
        }
    }
    Ok(outcomes)
}

/// Builds the static executables and writes the initramfs to `path`.
fn build_initramfs(apt: &mut Apt, cache: &Path, args: &VmTestArgs, path: &Path) -> Result<()> {
    let busybox = initramfs::busybox(apt, args.arch, cache)?;
    artifacts::ensure_target(args.arch)?;
    let toolchain = crate::setup::build_toolchain()?;
    let binaries = artifacts::build_binaries(&toolchain, args.arch)?;
    let tests = if args.test_exes.is_empty() {
        artifacts::build_tests(&toolchain, args.arch, &args.tests)?
    } else {
        named(&args.test_exes)?
    };
    let names: Vec<&str> = tests.iter().map(|(name, _)| name.as_str()).collect();
    eprintln!(
        "xtask: writing {} with tests {}",
        path.display(),
        names.join(", ")
    );
    initramfs::write(
        &initramfs::Contents {
            binaries: &binaries,
            busybox: &busybox,
            arch: args.arch,
            tests: &tests,
        },
        path,
    )
}

/// Test executables given on the command line, named by their file names.
fn named(test_exes: &[PathBuf]) -> Result<Vec<(String, PathBuf)>> {
    test_exes
        .iter()
        .map(|exe| {
            let name = exe
                .file_name()
                .with_context(|| format!("{} has no file name", exe.display()))?;
            Ok((name.to_string_lossy().into_owned(), exe.clone()))
        })
        .collect()
}

/// Boots one kernel and judges its run.
fn boot(kernel: &Kernel, vm: &qemu::Vm) -> Result<Outcome> {
    println!("\n=== {} ({}) ===", kernel.release, vm.vmlinuz.display());
    let run = qemu::run(vm)?;
    let report = console::parse(&run.console);
    let verdict = verdict(&report, &run, vm.timeout);
    println!(
        "xtask: {}: vm-init started {} after QEMU; {} in all; {}; log {}",
        kernel.release,
        seconds(run.boot_time),
        seconds(Some(run.run_time)),
        verdict
            .as_ref()
            .map_or_else(|e| format!("FAIL: {e}"), |()| "PASS".into()),
        vm.log.display()
    );
    Ok(Outcome {
        kernel: kernel.clone(),
        report,
        run,
        verdict,
    })
}

/// vm-init's verdict line decides; without one, why it is missing.
fn verdict(report: &Report, run: &qemu::Run, timeout: Duration) -> Result<(), String> {
    if let Some(verdict) = &report.verdict {
        return verdict.clone();
    }
    let stage = if report.kernel.is_some() {
        "vm-init started but printed no verdict"
    } else {
        "the kernel never reached vm-init"
    };
    Err(match run.exit {
        Some(status) => format!("{stage}; QEMU exited with {status}"),
        None => format!("{stage} within the {} s timeout", timeout.as_secs()),
    })
}

/// The table printed at the end: one row per kernel that was booted.
fn summary(outcomes: &[Outcome], arch: Arch, accel: qemu::Accel) -> String {
    let mut rows = vec![[
        "kernel".to_string(),
        "cgroup".into(),
        "hooks".into(),
        "boot".into(),
        "total".into(),
        "tests".into(),
        "result".into(),
    ]];
    for outcome in outcomes {
        let report = &outcome.report;
        let check = report.check.as_ref();
        rows.push([
            report
                .kernel
                .clone()
                .unwrap_or_else(|| outcome.kernel.release.clone()),
            check.map_or("?".into(), |c| c.cgroup_mode.clone()),
            check.map_or("?".into(), |c| {
                let total = c.available.len() + c.unavailable.len();
                format!("{} of {total}", c.available.len())
            }),
            seconds(outcome.run.boot_time),
            seconds(Some(outcome.run.run_time)),
            format!("{} passed, {} failed", report.passed, report.failed),
            match &outcome.verdict {
                Ok(()) => "PASS".into(),
                Err(reason) => format!("FAIL: {reason}"),
            },
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    let mut table = format!("VM test matrix ({}, {accel:?}):\n", arch.debian());
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    for outcome in outcomes {
        if let Some(check) = &outcome.report.check {
            table.push_str(&hook_lines(&outcome.kernel.release, check));
        }
    }
    table
}

/// Which hooks `oom-probe check` could attach on one kernel, and which not.
fn hook_lines(release: &str, check: &console::Check) -> String {
    let list = |hooks: &[String]| match hooks {
        [] => "none".to_string(),
        hooks => hooks.join(", "),
    };
    let mut lines = format!(
        "{release}: hooks available: {}; unavailable: {}\n",
        list(&check.available),
        list(&check.unavailable)
    );
    if let Some(source) = &check.victim_task {
        lines.push_str(&format!("{release}: victim task from {source}\n"));
    }
    lines
}

/// Prints the test total over all kernels; Ok only when every selected
/// kernel was booted and passed.
fn finish(outcomes: &[Outcome], selected: usize) -> Result<Matrix> {
    let tests_passed: u64 = outcomes.iter().map(|o| o.report.passed).sum();
    let tests_failed: u64 = outcomes.iter().map(|o| o.report.failed).sum();
    println!("tests: {tests_passed} passed, {tests_failed} failed");
    let passed = outcomes.iter().filter(|o| o.verdict.is_ok()).count();
    let failure = (passed < selected).then(|| {
        format!(
            "{} of {selected} kernels failed ({} not booted)",
            selected - passed,
            selected - outcomes.len()
        )
    });
    if failure.is_none() {
        println!("xtask: {selected} of {selected} kernels passed");
    }
    Ok(Matrix {
        passed: tests_passed,
        failed: tests_failed,
        failure,
    })
}

/// Where kernels and busybox are kept between runs:
/// `$XDG_CACHE_HOME/oom-probe/vm`, else `~/.cache/oom-probe/vm`.
fn cache_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    let dir = base.join("oom-probe").join("vm");
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    Ok(dir)
}

fn seconds(duration: Option<Duration>) -> String {
    duration.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}
