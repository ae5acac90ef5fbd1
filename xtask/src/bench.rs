//! `cargo xtask bench`: which phases a run measures, in what order, with
//! what arguments. Every figure comes from real OOM kills in memory cgroups
//! the bench creates (and removes); nothing here is a timed assertion. The
//! figures are printed as tables and written as JSON (`report`).
//!
//! The phases, one file each:
//! 1. `startup`: exec of `oom-probe watch` to its "watching" line, cold
//!    (no layout cache) and warm, side by side with a bare aya loader of the
//!    same eBPF object (xtask/bare-loader) and bpftrace.
//! 2. `cgroup_costs`: naming a cgroup id and a reconciliation tick with
//!    100, 1,000 and 5,000 cgroups (`--cgroups-only`).
//! 3. `latency`, side by side on the same kills: oom-probe as `watch` runs
//!    it, oom-probe with the agent's state file and history store, bpftrace
//!    on `oom:mark_victim`, and a /dev/kmsg regex reader like
//!    node-problem-detector's (`kmsg`). Latency is from the kernel's
//!    timestamp of the kill to the moment the bench's reader thread has the
//!    tool's line from its stdout pipe (`sightings`; `--latency-only`).
//! 4. `footprint`: oom-probe's RSS and CPU time idle.
//! 5. `kubernetes`: latency with pod names from a warm store of 250 pods
//!    served by a local API server, and the RSS with that store.
//! 6. `churn`: the agent's RSS idle and after 10,000 kills across 2,000
//!    cgroups created and removed (`--churn-only`).
//! 7. `bursts`: N processes killed at once in N cgroups, at several ring
//!    buffer sizes, each repeated: events reported against the kernel's own
//!    counters, and the spread of lost records per size (`--bursts-only`).
//! 8. `pressure`: RSS, CPU time and open fds of oom-probe watching 10, 100
//!    and 1,000 memory cgroups for `memory_pressure`, against
//!    `--no-pressure` (`--pressure-only`).
//! 9. `hostile`: the agent's `/healthz` latency during a storm of 2,000
//!    kills, and its RSS under 400 slow clients that send half a request
//!    header and hold (`--hostile-only`).
//! 10. `hook_costs`: what the agent's eBPF programs cost the node's process
//!     exits and signals: each program's runs and run time from the kernel's
//!     BPF statistics, and the workload's wall time with the agent and
//!     without it, alternating (`--hook-costs-only`).
//!
//! `measure` holds what the phases share (process figures, starting and
//! stopping tools), `stats` the statistics over samples.

mod bursts;
mod cgroup_costs;
mod churn;
mod footprint;
mod hook_costs;
mod hostile;
mod kmsg;
mod kubernetes;
mod latency;
pub(crate) mod measure;
mod pressure;
mod report;
mod sightings;
mod startup;
mod stats;

use std::path::PathBuf;

use anyhow::Result;

use crate::setup;
pub use kmsg::reader as kmsg_reader;
use report::Results;

/// What `cargo xtask bench` was asked for.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Sequential kills for the latency figures (at least 200 for the README).
    #[arg(long, default_value_t = 200)]
    kills: usize,
    /// Burst sizes (processes killed at once).
    #[arg(long, value_delimiter = ',', default_value = "50,200,500")]
    bursts: Vec<usize>,
    /// Ring buffer sizes to try in the bursts, in bytes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4096,16384,65536,262144,1048576"
    )]
    ring_sizes: Vec<u32>,
    /// Seconds oom-probe sits idle for the idle footprint.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/results.json")]
    json: PathBuf,
    /// Runs of each start-up measurement (the median is printed).
    #[arg(long, default_value_t = 9)]
    startup_runs: usize,
    /// Another oom-probe binary (e.g. an older build) whose start-up and
    /// footprint are measured in the same run, interleaved with this one's.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Cgroup counts for the naming and reconciliation costs.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    cgroups: Vec<usize>,
    /// Times each burst is repeated, for the spread of lost records.
    #[arg(long, default_value_t = 5)]
    burst_repeats: usize,
    /// How many watched cgroups the pressure phase measures with.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pressure_cgroups: Vec<usize>,
    /// Seconds oom-probe watches them, per count.
    #[arg(long, default_value_t = 60)]
    pressure_seconds: u64,
    /// Run only the pressure phase.
    #[arg(long)]
    pressure_only: bool,
    /// Run only the naming and reconciliation costs (`--cgroups`).
    #[arg(long, conflicts_with = "pressure_only")]
    cgroups_only: bool,
    /// Kills for the churn phase (RSS after them against idle).
    #[arg(long, default_value_t = 10_000)]
    churn_kills: usize,
    /// Cgroups the churn's kills are spread over, each created, killed in
    /// and removed.
    #[arg(long, default_value_t = 2_000)]
    churn_cgroups: usize,
    /// Run only the churn phase.
    #[arg(long, conflicts_with_all = ["pressure_only", "cgroups_only"])]
    churn_only: bool,
    /// Run only the Kubernetes phase (250 pods in the store).
    #[arg(long, conflicts_with_all = ["pressure_only", "cgroups_only", "churn_only"])]
    kubernetes_only: bool,
    /// Run only the side-by-side latency (with `--bursts-only`: both).
    #[arg(long, conflicts_with_all = ["pressure_only", "cgroups_only"])]
    latency_only: bool,
    /// Run only the bursts (with `--latency-only`: both).
    #[arg(long, conflicts_with_all = ["pressure_only", "cgroups_only"])]
    bursts_only: bool,
    /// Kills in the hostile phase's storm (`/healthz` asked meanwhile).
    #[arg(long, default_value_t = 2_000)]
    storm_kills: usize,
    /// Slow clients in the hostile phase (half a request header, held).
    #[arg(long, default_value_t = 400)]
    slow_clients: usize,
    /// Run only the hostile phase (kill storm, slow clients).
    #[arg(
        long,
        conflicts_with_all = [
            "pressure_only",
            "cgroups_only",
            "churn_only",
            "kubernetes_only",
            "latency_only",
            "bursts_only",
        ]
    )]
    hostile_only: bool,
    /// Process exits per round of the hook-costs phase (spawn and wait for
    /// `true`).
    #[arg(long, default_value_t = 2_000)]
    hook_exits: usize,
    /// Signals per round of the hook-costs phase (SIGUSR1 to a child that
    /// ignores it).
    #[arg(long, default_value_t = 100_000)]
    hook_signals: usize,
    /// Rounds of the hook-costs phase (without and with the agent,
    /// alternating which goes first).
    #[arg(long, default_value_t = 6)]
    hook_rounds: usize,
    /// Run only the hook-costs phase (exits and signals, with the agent
    /// and without).
    #[arg(
        long,
        conflicts_with_all = [
            "pressure_only",
            "cgroups_only",
            "churn_only",
            "kubernetes_only",
            "latency_only",
            "bursts_only",
            "hostile_only",
        ]
    )]
    hook_costs_only: bool,
}

/// Pods in the API server's store for the Kubernetes phase.
const KUBERNETES_PODS: usize = 250;

/// Sets up (toolchain, bpftrace, tracefs), builds the release binaries the
/// bench runs, then runs the phases asked for.
pub fn run(args: &BenchArgs) -> Result<()> {
    let toolchain = setup::build_toolchain()?;
    setup::apt_install(&[("bpftrace", "bpftrace")])?;
    // bpftrace finds oom:mark_victim through tracefs.
    setup::mount_tracefs();
    crate::cargo(
        &toolchain,
        &[
            "build",
            "--release",
            "--package",
            "oom-probe",
            "--package",
            "oom-probe-tests",
            "--package",
            "bare-aya-loader",
            "--bins",
        ],
    )?;
    let results = measure_phases(args)?;
    results.print();
    results.write(&args.json)
}

/// Runs the phases `args` select, with binaries already built in
/// `target/release`: one phase (or latency and bursts) for an `--*-only`
/// flag, else all of them, the pressure phase first.
fn measure_phases(args: &BenchArgs) -> Result<Results> {
    let mut results = Results::new();
    let kubernetes = || kubernetes::kubernetes_names(args.kills.min(100), KUBERNETES_PODS);
    let churn = || {
        churn::churn_footprint(
            &measure::oom_probe_binary().to_string_lossy(),
            "target/release/oom-hog",
            args.churn_kills,
            args.churn_cgroups,
        )
    };
    let cgroups = || {
        args.cgroups
            .iter()
            .map(|&n| cgroup_costs::cgroup_costs(n))
            .collect::<Result<Vec<_>>>()
    };
    let bursts = || bursts::bursts(&args.bursts, &args.ring_sizes, args.burst_repeats);
    let hostile = || {
        hostile::hostile(
            &measure::oom_probe_binary().to_string_lossy(),
            args.storm_kills,
            args.slow_clients,
        )
    };
    let hooks = || hook_costs::hook_costs(args.hook_exits, args.hook_signals, args.hook_rounds);
    if args.hook_costs_only {
        results.hook_costs = Some(hooks()?);
    } else if args.hostile_only {
        results.hostile = Some(hostile()?);
    } else if args.kubernetes_only {
        results.kubernetes = Some(kubernetes()?);
    } else if args.churn_only {
        results.churn = Some(churn()?);
    } else if args.latency_only || args.bursts_only {
        results.note = Some("other engineers built and tested on the same 2 cores during this run");
        if args.latency_only {
            results.side_by_side = Some(latency::side_by_side(args.kills)?);
        }
        if args.bursts_only {
            results.bursts = Some(bursts()?);
            results.hostile = Some(hostile()?);
        }
    } else if args.cgroups_only {
        results.cgroups = Some(cgroups()?);
    } else {
        results.pressure = Some(
            args.pressure_cgroups
                .iter()
                .map(|&n| pressure::pressure_footprint(n, args.pressure_seconds))
                .collect::<Result<Vec<_>>>()?,
        );
        if !args.pressure_only {
            results.startup = Some(startup::measure(
                args.startup_runs,
                args.baseline.as_deref(),
            )?);
            results.cgroups = Some(cgroups()?);
            results.side_by_side = Some(latency::side_by_side(args.kills)?);
            results.idle = Some(footprint::idle(args.idle_seconds)?);
            results.kubernetes = Some(kubernetes()?);
            results.churn = Some(churn()?);
            results.bursts = Some(bursts()?);
            results.hook_costs = Some(hooks()?);
        }
    }
    Ok(results)
}
