//! Project tasks: `cargo xtask <task>`. Each one installs what it needs on a
//! fresh machine first, so the README's two commands are all a person types.

mod setup;

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
    /// Set up, then run everything CI runs: fmt, clippy, unit and end-to-end tests.
    Test,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::ebpf_toolchain().map(drop),
        Task::Watch { args } => watch(&args),
        Task::Test => test(),
    }
}

fn watch(args: &[String]) -> Result<()> {
    let toolchain = setup::ebpf_toolchain()?;
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

fn test() -> Result<()> {
    let toolchain = setup::ebpf_toolchain()?;
    setup::mount_tracefs();
    cargo(&toolchain, &["fmt", "--all", "--check"])?;
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
    // The end-to-end tests fail rather than skip when they cannot run; never
    // let an inherited OOM_PROBE_ALLOW_SKIP turn that into a silent pass.
    let mut test = setup::cargo_command(&toolchain);
    test.args(["test", "--workspace"])
        .env_remove("OOM_PROBE_ALLOW_SKIP");
    run(&mut test)?;
    println!("xtask: fmt, clippy, unit and end-to-end tests passed");
    Ok(())
}

/// Runs cargo with the environment the eBPF build needs.
fn cargo(toolchain: &setup::EbpfToolchain, args: &[&str]) -> Result<()> {
    run(setup::cargo_command(toolchain).args(args))
}

fn run(command: &mut Command) -> Result<()> {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
