//! The `oom-probe` command line.

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use oom_probe::{
    check, duration,
    event::Event,
    exit_code,
    kube::names::SourceOptions,
    node,
    pressure::{PressureOptions, V1Level},
    probes::{self, DecisionHook, VictimHook},
    sink::{
        history::{HistoryLimits, HistoryReader},
        output::{Output, OutputFormat},
    },
    watch::{self, Filter, WatchOptions},
};

/// `--version`: the crate version and the git revision it was built from
/// (build.rs; `unknown` without git).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("OOM_PROBE_REVISION"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "oom-probe",
    version = VERSION,
    about = "Reports every Linux OOM kill, with the process, cgroup and memory figures.",
    after_help = "Exit status: 0 done; 1 an error (said on stderr), also when stdout cannot be \
                  written (a pipe whose reader left); 2 a bad command line; 3 `check` found a \
                  blocker. A closed stdout or stderr (>&-) reads as /dev/null."
)]
struct Cli {
    /// Format of the logs on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Stream OOM kills on this node as they happen (for a person in a node shell).
    Watch(EventArgs),
    /// The long-running agent (DaemonSet): JSON lines on stdout, /metrics,
    /// /healthz and /readyz on --listen, state kept in --state-file.
    Run(EventArgs),
    /// Print the events the agent kept in its history store, oldest first
    /// (also while it runs): the same JSON lines as the stream, or a table.
    History(HistoryArgs),
    /// Tell what this node offers and whether oom-probe can work here.
    Check {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (e.g. `oom-probe completions bash >
    /// /etc/bash_completion.d/oom-probe`).
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the man page (oom-probe.1), or write one page per command into
    /// a directory (`cargo xtask dist` does).
    #[command(hide = true)]
    Man {
        /// Write oom-probe.1, oom-probe-watch.1... here instead.
        out_dir: Option<PathBuf>,
    },
}

/// Flags shared by `watch` and `run`; their defaults differ where noted.
#[derive(Args)]
struct EventArgs {
    /// Output format (default: table on a terminal, json otherwise; `run`: json).
    #[arg(long, short)]
    output: Option<OutputFormat>,
    /// Use this victim hook instead of the best available one
    /// (raw-tracepoint, else tp-btf; tp-btf makes aya parse the kernel's BTF).
    #[arg(long, value_enum)]
    hook: Option<VictimHook>,
    /// Use this OOM-decision hook instead of the best available one
    /// (fentry, kprobe).
    #[arg(long, value_enum)]
    decision_hook: Option<DecisionHook>,
    /// Where the kernel offsets resolved from its BTF are kept for the next
    /// start on the same boot (a warm start skips the BTF parse); `none`: no
    /// cache, parse at every start.
    #[arg(long, env = "OOM_PROBE_LAYOUT_CACHE", default_value = probes::layout_cache::DEFAULT_PATH)]
    layout_cache: PathBuf,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    #[arg(long, default_value_t = 256 * 1024)]
    ring_buffer_size: u32,
    /// Node name put in every event and used to select this node's pods
    /// (default: the hostname when oom-probe shares the host's UTS namespace,
    /// else the first name in --node-name-file).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// In a container without NODE_NAME: the host's /etc/hostname, mounted in.
    #[arg(long, default_value = node::HOST_HOSTNAME_FILE)]
    node_name_file: PathBuf,
    /// Exit after this many kills.
    #[arg(long)]
    count: Option<u64>,
    /// Userspace OOM killers whose SIGKILLs are reported as `userspace_kill`,
    /// comma-separated, each `NAME` (its systemd unit's cgroup,
    /// /system.slice/NAME.service) or `NAME@CGROUP` (from the hierarchy
    /// root); at most 32 names. A sender counts only with the name, in the
    /// host's pid namespace and in the cgroup (docs/security.md); empty to
    /// turn off.
    #[arg(long, value_delimiter = ',', default_value = probes::killers::DEFAULT_KILLERS)]
    userspace_killers: Vec<String>,
    /// File that keeps accounted kill counts across restarts, so kills made
    /// while oom-probe was down are reported once (`run`: /var/lib/oom-probe/state.json).
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Time between comparisons with the kernel's per-cgroup kill counters
    /// (at least 100ms).
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    reconcile_interval: Duration,
    /// Address for /metrics, /healthz and /readyz (`run`: 0.0.0.0:9464,
    /// which in a pod is its own IP and loopback; a DaemonSet can name the
    /// pod IP alone with the downward API: --listen=$(POD_IP):9464).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// A kill series that stopped moving leaves /metrics after this long
    /// (at least 1s).
    #[arg(long, default_value = "6h", value_parser = duration::parse)]
    metrics_series_ttl: Duration,
    /// The host's cgroupfs when it is mounted elsewhere (a DaemonSet:
    /// /host/sys/fs/cgroup); default: the cgroup mounts this process sees.
    #[arg(long)]
    cgroupfs: Option<PathBuf>,
    /// The host's /proc when it is mounted elsewhere (a DaemonSet without
    /// hostPID: /host/proc), for the tasks listed with each kill.
    #[arg(long)]
    procfs: Option<PathBuf>,
    /// The container runtime's CRI socket, for pod and container names
    /// without an API server (default: the first of the usual paths that exists).
    #[arg(long)]
    cri_socket: Option<PathBuf>,
    /// kubeconfig for the API server (default: $KUBECONFIG, in-cluster, ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Never talk to a Kubernetes API server.
    #[arg(long)]
    no_kubernetes_api: bool,
    #[command(flatten)]
    filter: FilterArgs,
    /// Do not post Kubernetes Events (they are posted whenever an API server
    /// is configured).
    #[arg(long)]
    no_events: bool,
    /// How long a deleted pod stays nameable (a pod that died with its kill).
    #[arg(long, default_value = "10m", value_parser = duration::parse)]
    retain_deleted_pods: Duration,
    /// Keep every emitted event in this history store (`run`:
    /// /var/lib/oom-probe/history.redb; read it with `oom-probe history`).
    #[arg(long)]
    history_file: Option<PathBuf>,
    /// Keep no history (`run`).
    #[arg(long, conflicts_with = "history_file")]
    no_history: bool,
    /// The history store keeps at most this many events (the newest).
    #[arg(long, default_value_t = HistoryLimits::default().max_events)]
    history_max_events: u64,
    /// The history store drops events older than this (e.g. 12h, 30d).
    #[arg(long, default_value = "30d", value_parser = duration::parse)]
    history_max_age: Duration,
    #[command(flatten)]
    pressure: PressureArgs,
}

/// `memory_pressure` flags (the defaults: see
/// docs/decisions/0066-memory-pressure-defaults-come-from-measurement.md).
#[derive(Args)]
struct PressureArgs {
    /// Do not watch memory pressure (no memory_pressure events).
    #[arg(long)]
    no_pressure: bool,
    /// At most one memory_pressure event per cgroup per this long while the
    /// pressure lasts (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    pressure_interval: Duration,
    /// memory_pressure_end after this long without a pressure notification.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    pressure_clear_after: Duration,
    /// cgroup v1: the memory.pressure_level level that counts (low, medium, critical).
    #[arg(long, default_value = "medium", value_enum)]
    pressure_level: V1Level,
    /// cgroup v2 and the node: PSI trigger, stall time (some) per window that counts.
    #[arg(long, default_value = "100ms", value_parser = duration::parse)]
    pressure_psi_stall: Duration,
    /// PSI trigger window (500ms to 10s).
    #[arg(long, default_value = "1s", value_parser = duration::parse)]
    pressure_psi_window: Duration,
    /// Watch the leaf memory cgroups with a limit under this path (relative
    /// to the memory hierarchy root, e.g. /system.slice; repeatable) instead
    /// of the containers' cgroups.
    #[arg(long = "pressure-cgroup")]
    pressure_cgroups: Vec<String>,
    /// Do not watch the node's /proc/pressure/memory.
    #[arg(long)]
    no_node_pressure: bool,
    /// The node is short of memory when MemAvailable is below this percent
    /// of MemTotal (or it entered direct reclaim): a node memory_pressure
    /// needs a shortage as well as PSI (0: only direct reclaim).
    #[arg(long, value_name = "PERCENT", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pressure_node_available: u8,
}

/// `--namespace/--pod/--container`, shared by `watch`, `run` and `history`:
/// which kills are printed, matched after pods are named (metrics, Events
/// and the history store still see every kill).
#[derive(Args)]
struct FilterArgs {
    /// Print only kills in this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Print only kills in this pod.
    #[arg(long)]
    pod: Option<String>,
    /// Print only kills in this container.
    #[arg(long)]
    container: Option<String>,
}

impl From<FilterArgs> for Filter {
    fn from(args: FilterArgs) -> Self {
        Filter {
            namespace: args.namespace,
            pod: args.pod,
            container: args.container,
        }
    }
}

/// `oom-probe history`'s flags.
#[derive(Args)]
struct HistoryArgs {
    /// The agent's history store.
    #[arg(long, default_value = AGENT_HISTORY_FILE)]
    history_file: PathBuf,
    /// Only events stored within this long before now (e.g. 90m, 24h, 7d).
    #[arg(long, value_parser = duration::parse)]
    since: Option<Duration>,
    /// Only events of these types (comma-separated).
    #[arg(long = "type", value_enum, value_delimiter = ',')]
    types: Vec<EventType>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Output format (default: table on a terminal, json otherwise).
    #[arg(long, short)]
    output: Option<OutputFormat>,
}

/// The `type` of an event, as in its JSON.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EventType {
    #[value(name = "oom_kill")]
    OomKill,
    #[value(name = "userspace_kill")]
    UserspaceKill,
    #[value(name = "oom_kill_unobserved")]
    OomKillUnobserved,
    #[value(name = "eviction")]
    Eviction,
    #[value(name = "memory_pressure")]
    MemoryPressure,
    #[value(name = "memory_pressure_end")]
    MemoryPressureEnd,
}

impl EventType {
    fn of(event: &Event) -> Self {
        match event {
            Event::OomKill(_) => Self::OomKill,
            Event::UserspaceKill(_) => Self::UserspaceKill,
            Event::OomKillUnobserved(_) => Self::OomKillUnobserved,
            Event::Eviction(_) => Self::Eviction,
            Event::MemoryPressure(_) => Self::MemoryPressure,
            Event::MemoryPressureEnd(_) => Self::MemoryPressureEnd,
        }
    }
}

const AGENT_LISTEN: &str = "0.0.0.0:9464";
const AGENT_STATE_FILE: &str = "/var/lib/oom-probe/state.json";
const AGENT_HISTORY_FILE: &str = "/var/lib/oom-probe/history.redb";

fn main() {
    probes::startup_trace("main");
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let result = match cli.command {
        Command::Watch(args) => watch_options(args, false).and_then(run_watch),
        Command::Run(args) => watch_options(args, true).and_then(run_watch),
        Command::History(args) => run_history(args),
        Command::Check { json } => run_check(json),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "oom-probe",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { out_dir } => write_man(out_dir),
    };
    if let Err(err) = result {
        tracing::error!("{err:#}");
        std::process::exit(exit_code::FAILURE);
    }
}

/// The man page on stdout, or every command's page written into `out_dir`.
fn write_man(out_dir: Option<PathBuf>) -> Result<()> {
    let command = Cli::command();
    match out_dir {
        Some(dir) => clap_mangen::generate_to(command, dir)?,
        None => clap_mangen::Man::new(command).render(&mut std::io::stdout())?,
    }
    Ok(())
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(oom_probe::DEFAULT_LOG_FILTER));
    // A log line that cannot be written (stderr closed: the reader of a
    // pipe went away) is dropped; tracing's default would panic on its own
    // error report to the same stderr and end the agent with exit code 101.
    // Colours only for a person: stderr is a terminal and NO_COLOR
    // (no-color.org: set and not empty) is not.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn watch_options(args: EventArgs, agent: bool) -> Result<WatchOptions> {
    let terminal = std::io::stdout().is_terminal() && !agent;
    let userspace_killers: Vec<String> = args
        .userspace_killers
        .into_iter()
        .filter(|k| !k.is_empty())
        .collect();
    probes::killers::Killers::parse(&userspace_killers)?;
    probes::killers::use_cgroupfs(args.cgroupfs.clone());
    let node = node::resolve(args.node_name.as_deref(), &args.node_name_file)?;
    tracing::info!("node name {:?} from {}", node.name, node.source);
    Ok(WatchOptions {
        output: args.output.unwrap_or(if terminal {
            OutputFormat::Table
        } else {
            OutputFormat::Json
        }),
        ring_buffer_bytes: args.ring_buffer_size,
        layout_cache: (args.layout_cache.as_os_str() != "none").then_some(args.layout_cache),
        hooks: args
            .hook
            .map(|h| vec![h])
            .unwrap_or_else(|| VictimHook::ALL.to_vec()),
        decision_hooks: args
            .decision_hook
            .map(|h| vec![h])
            .unwrap_or_else(|| DecisionHook::ALL.to_vec()),
        node: node.name,
        max_events: args.count,
        userspace_killers,
        state_file: args
            .state_file
            .or_else(|| agent.then(|| AGENT_STATE_FILE.into())),
        reconcile_interval: args.reconcile_interval.max(Duration::from_millis(100)),
        listen: args
            .listen
            .or_else(|| agent.then(|| AGENT_LISTEN.parse().expect("valid address"))),
        metrics_series_ttl: args.metrics_series_ttl.max(Duration::from_secs(1)),
        cgroupfs: args.cgroupfs,
        procfs: args.procfs,
        sources: SourceOptions {
            cri_socket: args.cri_socket,
            kubeconfig: args.kubeconfig,
            no_api: args.no_kubernetes_api,
            retain_deleted: args.retain_deleted_pods,
        },
        events: !args.no_events,
        filter: args.filter.into(),
        history: if args.no_history {
            None
        } else {
            args.history_file
                .or_else(|| agent.then(|| AGENT_HISTORY_FILE.into()))
        },
        history_limits: HistoryLimits {
            max_events: args.history_max_events.max(1),
            max_age: args.history_max_age,
        },
        pressure: (!args.pressure.no_pressure).then(|| PressureOptions {
            interval: args.pressure.pressure_interval,
            clear_after: args.pressure.pressure_clear_after,
            v1_level: args.pressure.pressure_level,
            psi_stall: args.pressure.pressure_psi_stall,
            psi_window: args
                .pressure
                .pressure_psi_window
                .clamp(Duration::from_millis(500), Duration::from_secs(10)),
            cgroups: args.pressure.pressure_cgroups,
            node: !args.pressure.no_node_pressure,
            node_available_percent: args.pressure.pressure_node_available,
            ..PressureOptions::default()
        }),
    })
}

fn run_history(args: HistoryArgs) -> Result<()> {
    let reader = HistoryReader::open(&args.history_file)?;
    // Longer ago than the clock can count back, or than 1970: everything.
    let since = args.since.map(|ago| {
        std::time::SystemTime::now()
            .checked_sub(ago)
            .map_or(std::time::UNIX_EPOCH, |t| t.max(std::time::UNIX_EPOCH))
    });
    let filter = Filter::from(args.filter);
    let format = args.output.unwrap_or(if std::io::stdout().is_terminal() {
        OutputFormat::Table
    } else {
        OutputFormat::Json
    });
    let stdout = std::io::stdout().lock();
    let mut json = std::io::BufWriter::new(stdout);
    let mut table = Output::new(OutputFormat::Table, std::io::stdout());
    for stored in reader.read(since)? {
        let event: Event = serde_json::from_str(&stored.json).map_err(|e| {
            anyhow::anyhow!(
                "event {} in {} is not readable: {e}",
                stored.seq,
                args.history_file.display()
            )
        })?;
        if !(args.types.is_empty() || args.types.contains(&EventType::of(&event)))
            || !filter.matches(&event)
        {
            continue;
        }
        match format {
            // The line as the stream printed it, byte for byte.
            OutputFormat::Json => writeln!(json, "{}", stored.json)?,
            OutputFormat::Table => table.write(&event)?,
        }
    }
    json.flush()?;
    Ok(())
}

fn run_watch(options: WatchOptions) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(watch::watch(options))
}

fn run_check(json: bool) -> Result<()> {
    let report = check::run();
    let text = if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.to_text()
    };
    // Not print!: it panics (exit 101) when the reader went away.
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| anyhow::anyhow!("cannot write the report to stdout: {e}"))?;
    if !report.blockers.is_empty() {
        std::process::exit(exit_code::NODE_UNSUPPORTED);
    }
    Ok(())
}
