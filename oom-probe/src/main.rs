//! The `oom-probe` command line.

use std::{io::IsTerminal, path::PathBuf, time::Duration};

use anyhow::Result;
use clap::{Parser, Subcommand};
use oom_probe::{
    check,
    output::OutputFormat,
    probes::Hook,
    watch::{self, WatchOptions},
};

#[derive(Parser)]
#[command(
    version,
    about = "Reports every Linux OOM kill, with the process, cgroup and memory figures."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream OOM kills on this node as they happen.
    Watch {
        /// Output format (default: table on a terminal, json otherwise).
        #[arg(long, short)]
        output: Option<OutputFormat>,
        /// Use this victim hook instead of the best available one.
        #[arg(long, value_enum)]
        hook: Option<Hook>,
        /// Ring buffer size in bytes (a power of two, multiple of the page size).
        #[arg(long, default_value_t = 256 * 1024)]
        ring_buffer_size: u32,
        /// Node name put in every event.
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
        /// Exit after this many kills.
        #[arg(long)]
        count: Option<u64>,
        /// Process names whose SIGKILLs are reported as `userspace_kill`
        /// (comma-separated; empty to turn off).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "systemd-oomd,earlyoom,oomd,nohang"
        )]
        userspace_killers: Vec<String>,
        /// File that keeps accounted kill counts across restarts, so kills
        /// made while oom-probe was down are reported once.
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// Seconds between comparisons with the kernel's per-cgroup kill counters.
        #[arg(long, default_value_t = 30.0)]
        reconcile_interval: f64,
    },
    /// Tell what this node offers and whether oom-probe can work here.
    Check {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Watch {
            output,
            hook,
            ring_buffer_size,
            node_name,
            count,
            userspace_killers,
            state_file,
            reconcile_interval,
        } => {
            let options = WatchOptions {
                output: output.unwrap_or(if std::io::stdout().is_terminal() {
                    OutputFormat::Table
                } else {
                    OutputFormat::Json
                }),
                ring_buffer_bytes: ring_buffer_size,
                hooks: hook
                    .map(|h| vec![h])
                    .unwrap_or_else(|| Hook::VICTIM.to_vec()),
                node: node_name.unwrap_or_else(hostname),
                max_events: count,
                userspace_killers: userspace_killers
                    .into_iter()
                    .filter(|k| !k.is_empty())
                    .collect(),
                state_file,
                reconcile_interval: Duration::from_secs_f64(reconcile_interval.max(0.1)),
            };
            run_watch(options)
        }
        Command::Check { json } => run_check(json),
    };
    if let Err(err) = result {
        eprintln!("oom-probe: error: {err:#}");
        std::process::exit(1);
    }
}

fn run_watch(options: WatchOptions) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(watch::watch(options))
}

fn run_check(json: bool) -> Result<()> {
    let report = check::run();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    if !report.blockers.is_empty() {
        std::process::exit(2);
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
