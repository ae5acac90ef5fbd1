//! `cargo xtask fuzz`: runs every libFuzzer target of `fuzz/` (cargo-fuzz)
//! for a bounded time on its committed seeds, and fails on a crash.
//!
//! Each target starts from `fuzz/seeds/<target>` (committed, never written)
//! plus `fuzz/corpus/<target>` (what earlier runs found; not committed), and
//! new inputs go to the latter. A crash leaves its input in
//! `fuzz/artifacts/<target>/`; `cargo fuzz run <target> <file>` replays it,
//! and it becomes a unit test beside the parser.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::setup;

/// Every fuzz target (fuzz/Cargo.toml's bins), in the order they run.
pub const TARGETS: [&str; 8] = [
    "cgroup_path",
    "mountinfo",
    "memcg_files",
    "kube_pod",
    "ring_record",
    "state_file",
    "history_record",
    "history_file",
];

/// The seconds each target runs in `cargo xtask test`.
pub const TEST_SECONDS: u64 = 20;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// How long each target runs, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Run only this target (repeatable); all by default.
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
}

impl FuzzArgs {
    /// Every target for [`TEST_SECONDS`]: what `cargo xtask test` runs.
    pub fn for_test_suite() -> Self {
        Self {
            seconds: TEST_SECONDS,
            targets: Vec::new(),
        }
    }
}

/// What one target reached.
struct Reached {
    target: String,
    executions: u64,
    /// libFuzzer's `cov:` (coverage points, edges) and `ft:` (features).
    coverage: u64,
    features: u64,
    corpus: u64,
}

/// Sets up (eBPF toolchain, cargo-fuzz, a C++ compiler for libFuzzer),
/// builds the targets and runs each for `args.seconds`.
pub fn run(args: &FuzzArgs) -> Result<()> {
    let targets: Vec<String> = if args.targets.is_empty() {
        TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        for target in &args.targets {
            if !TARGETS.contains(&target.as_str()) {
                bail!("no fuzz target {target}; there are {}", TARGETS.join(", "));
            }
        }
        args.targets.clone()
    };
    let toolchain = setup::build_toolchain()?;
    setup::apt_install(&[("c++", "g++")])?;
    setup::cargo_fuzz()?;
    crate::run(fuzz_command(&toolchain).arg("build"))?;
    let mut reached = Vec::new();
    for target in &targets {
        reached.push(run_target(&toolchain, target, args.seconds)?);
    }
    println!(
        "\n{:<16} {:>8} {:>12} {:>8} {:>8} {:>8}",
        "TARGET", "SECONDS", "EXECUTIONS", "COV", "FT", "CORPUS"
    );
    for r in &reached {
        println!(
            "{:<16} {:>8} {:>12} {:>8} {:>8} {:>8}",
            r.target, args.seconds, r.executions, r.coverage, r.features, r.corpus
        );
    }
    println!(
        "xtask: {} fuzz targets ran {} s each, no crash",
        reached.len(),
        args.seconds
    );
    Ok(())
}

/// `cargo fuzz` through rustup with the eBPF toolchain (nightly, or stable
/// with `RUSTC_BOOTSTRAP=1`: cargo fuzz needs `-Z` flags).
fn fuzz_command(toolchain: &setup::EbpfToolchain) -> Command {
    // Through rustup, so cargo fuzz's own cargo and rustc are that
    // toolchain's too, whatever toolchain runs xtask.
    let cargo = setup::cargo_command(toolchain);
    let mut command = Command::new("rustup");
    command.args(["run", toolchain.name(), "cargo", "fuzz"]);
    for (key, value) in cargo.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    command.env_remove("CARGO").env_remove("RUSTUP_TOOLCHAIN");
    // What `cargo run` (`cargo xtask`) set for xtask itself: some build
    // scripts (ring's) rerun and rebuild everything above them when
    // CARGO_MANIFEST_DIR differs from the last build's.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&key.as_ref())
        {
            command.env_remove(key.as_ref());
        }
    }
    command
}

fn run_target(toolchain: &setup::EbpfToolchain, target: &str, seconds: u64) -> Result<Reached> {
    let seeds = Path::new("fuzz/seeds").join(target);
    let corpus = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let mut command = fuzz_command(toolchain);
    command
        .args(["run", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .args(["-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048"])
        .stderr(Stdio::piped());
    eprintln!("xtask: running {command:?}");
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {command:?}"))?;
    let stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut reached = Reached {
        target: target.into(),
        executions: 0,
        coverage: 0,
        features: 0,
        corpus: 0,
    };
    let mut tail = Vec::new();
    for line in stderr.lines() {
        let line = line?;
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            reached.executions = n.trim().parse().unwrap_or(0);
        }
        // "#1234 ... cov: 56 ft: 78 corp: 9/1Kb ..." status lines.
        if line.starts_with('#') {
            let value = |key: &str| -> Option<u64> {
                let rest = line.split(key).nth(1)?;
                rest.split(|c: char| !c.is_ascii_digit())
                    .find(|s| !s.is_empty())?
                    .parse()
                    .ok()
            };
            reached.coverage = value(" cov: ").unwrap_or(reached.coverage);
            reached.features = value(" ft: ").unwrap_or(reached.features);
            reached.corpus = value(" corp: ").unwrap_or(reached.corpus);
        }
        tail.push(line);
        if tail.len() > 60 {
            tail.remove(0);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        for line in &tail {
            eprintln!("{line}");
        }
        bail!(
            "fuzz target {target} failed ({status}): the input is in fuzz/artifacts/{target}/; \
             replay it with `cargo fuzz run {target} <file>` and make it a unit test"
        );
    }
    println!(
        "xtask: fuzz {target}: {} executions in {seconds} s, cov {} ft {}, corpus {}",
        reached.executions, reached.coverage, reached.features, reached.corpus
    );
    Ok(reached)
}
