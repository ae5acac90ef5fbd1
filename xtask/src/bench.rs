//! `cargo xtask bench`: measured figures, printed as a table and written as
//! JSON. Every figure comes from real OOM kills in memory cgroups this
//! benchmark creates (and removes); nothing here is a timed assertion.
//!
//! 1. start-up: exec of `oom-probe watch` to its "watching" line, cold
//!    (no layout cache) and warm, side by side with a bare aya loader of the
//!    same eBPF object (xtask/bare-loader) and bpftrace.
//! 2. latency, side by side on the same kills: oom-probe as `watch` runs it,
//!    oom-probe with the agent's state file and history store, bpftrace on
//!    `oom:mark_victim`, and a /dev/kmsg regex reader like
//!    node-problem-detector's (each a process of its own, so its RSS counts).
//!    Latency is from the kernel's timestamp of the kill (`bpf_ktime_get_ns`
//!    in `mark_victim`: oom-probe's `kernel_time_ns`, bpftrace's `nsecs`;
//!    kmsg's own stamp, in microseconds) to the moment the bench's reader
//!    thread has the tool's line from its stdout pipe (CLOCK_MONOTONIC).
//!    The load average is read before and after (`--latency-only`).
//! 3. bursts: N processes killed at once in N cgroups, at several ring
//!    buffer sizes, each repeated: events reported against the kernel's own
//!    counters, and the spread of lost records per size (`--bursts-only`).
//! 4. footprint: oom-probe's RSS and CPU time idle and during the bursts.
//! 5. Kubernetes: latency with pod names from a warm store of 250 pods
//!    served by a local API server, and the RSS with that store.
//! 6. churn (xtask/src/churn.rs): the agent's RSS idle and after 10,000
//!    kills across 2,000 cgroups created and removed (`--churn-only`).
//! 7. pressure: RSS, CPU time and open fds of oom-probe watching 10, 100
//!    and 1,000 memory cgroups for `memory_pressure`, all quiet and with one
//!    of them held at its limit, against `--no-pressure`
//!    (`--pressure-only` runs just this phase).
//!
//! About 600 lines: one phase per README figure, each short, sharing the
//! process and sighting plumbing at the bottom.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc::{self, Receiver, Sender},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use oom_probe_cgroupfs::{clock::monotonic_ns, testing::MemoryCgroup};
use oom_probe_test_support::spawn_until_ready;
use serde_json::{json, Value};

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
}

/// One kill as one tool saw it.
struct Sighting {
    tool: &'static str,
    pid: u32,
    latency_ns: Option<u64>,
    /// The event named the victim's pod.
    named_pod: bool,
}

const MIB: u64 = 1 << 20;

/// oom-probe's default `--ring-buffer-size` (bytes): every phase but the
/// bursts (which vary it) measures the agent as it ships.
const DEFAULT_RING: u32 = 256 * 1024;

/// What the latency figures measure, printed and written with them.
const LATENCY_MEASURES: &str = "from the kernel's timestamp of the kill (bpf_ktime_get_ns in \
    mark_victim: kernel_time_ns, bpftrace's nsecs; kmsg: its own microsecond stamp) to the line \
    in the bench's reader thread, read from the tool's stdout pipe (CLOCK_MONOTONIC)";

/// Runs every phase with binaries already built in `target/release`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let churn = || {
        crate::churn::churn_footprint(
            &oom_probe_binary().to_string_lossy(),
            "target/release/oom-hog",
            args.churn_kills,
            args.churn_cgroups,
        )
    };
    if args.kubernetes_only {
        let k8s = kubernetes_enrichment(args.kills.min(100), 250)?;
        println!(
            "with Kubernetes names ({} pods in the store, warm): RSS {} KiB (anonymous {}, file-backed {}), {} of {} kills named",
            cell(&k8s["pods_in_store"]),
            cell(&k8s["rss_kib_with_store"]),
            cell(&k8s["anon_kib_with_store"]),
            cell(&k8s["file_kib_with_store"]),
            cell(&k8s["named"]),
            cell(&k8s["kills"])
        );
        let results = json!({"machine": machine(), "date": humantime_now(), "kubernetes": k8s});
        return write_json(&args.json, &results);
    }
    if args.churn_only {
        let results = json!({
            "machine": machine(),
            "date": humantime_now(),
            "churn": churn()?,
        });
        crate::churn::print_churn(&results["churn"]);
        return write_json(&args.json, &results);
    }
    if args.latency_only || args.bursts_only {
        let mut results = json!({
            "machine": machine(),
            "date": humantime_now(),
            "note": "other engineers built and tested on the same 2 cores during this run",
        });
        if args.latency_only {
            results["side_by_side"] = side_by_side(args.kills)?;
            print_side_by_side(&results);
        }
        if args.bursts_only {
            results["bursts"] = bursts(args)?;
            print_bursts(&results);
        }
        return write_json(&args.json, &results);
    }
    if args.cgroups_only {
        let cgroups = args
            .cgroups
            .iter()
            .map(|&n| cgroup_scaling(n))
            .collect::<Result<Vec<_>>>()?;
        let results = json!({
            "machine": machine(),
            "date": humantime_now(),
            "cgroups": cgroups,
        });
        print_cgroups(&results);
        return write_json(&args.json, &results);
    }
    let pressure = args
        .pressure_cgroups
        .iter()
        .map(|&n| pressure_footprint(n, args.pressure_seconds))
        .collect::<Result<Vec<_>>>()?;
    if args.pressure_only {
        let results = json!({
            "machine": machine(),
            "date": humantime_now(),
            "pressure": pressure,
        });
        print_pressure(&results);
        return write_json(&args.json, &results);
    }
    let startup = measure_startup(args.startup_runs, args.baseline.as_deref())?;
    let cgroups = args
        .cgroups
        .iter()
        .map(|&n| cgroup_scaling(n))
        .collect::<Result<Vec<_>>>()?;
    let side_by_side = side_by_side(args.kills)?;
    let idle = idle_footprint(args.idle_seconds)?;
    let kubernetes = kubernetes_enrichment(args.kills.min(100), 250)?;
    let churn = churn()?;
    let bursts = bursts(args)?;
    let results = json!({
        "machine": machine(),
        "date": humantime_now(),
        "startup": startup,
        "cgroups": cgroups,
        "side_by_side": side_by_side,
        "idle": idle,
        "kubernetes": kubernetes,
        "churn": churn,
        "bursts": bursts,
        "pressure": pressure,
    });
    print_table(&results);
    crate::churn::print_churn(&results["churn"]);
    print_pressure(&results);
    write_json(&args.json, &results)
}

/// The bursts at every size and ring size, each repeated: every run, and
/// per size the spread of lost records (min, median, max) over the runs.
/// The repeats are interleaved (every ring size once, then again), so a
/// burst of load from elsewhere on the machine spreads over the sizes.
fn bursts(args: &BenchArgs) -> Result<Value> {
    let mut rows = Vec::new();
    for &n in &args.bursts {
        let mut runs: Vec<Vec<Value>> = vec![Vec::new(); args.ring_sizes.len()];
        for _ in 0..args.burst_repeats.max(1) {
            for (i, &ring) in args.ring_sizes.iter().enumerate() {
                runs[i].push(burst(n, ring)?);
            }
        }
        for (&ring, runs) in args.ring_sizes.iter().zip(runs) {
            let mut lost: Vec<u64> = runs
                .iter()
                .map(|r| r["lost"].as_u64().unwrap_or(0))
                .collect();
            lost.sort_unstable();
            let missing = runs
                .iter()
                .filter(|r| {
                    r["reported"].as_u64().unwrap_or(0) + r["lost"].as_u64().unwrap_or(0)
                        < r["kernel_counted"].as_u64().unwrap_or(0)
                })
                .count();
            rows.push(json!({
                "processes": n,
                "ring_buffer_bytes": ring,
                "lost_min": lost.first(),
                "lost_median": lost.get(lost.len() / 2),
                "lost_max": lost.last(),
                "runs_with_loss": lost.iter().filter(|&&l| l > 0).count(),
                "runs_reported_plus_lost_short_of_kernel": missing,
                "runs": runs,
            }));
        }
    }
    Ok(Value::Array(rows))
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages.
fn load_average() -> Value {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let averages: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    json!(averages)
}

fn write_json(path: &std::path::Path, results: &Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, serde_json::to_string_pretty(results)?)?;
    println!("\nwritten to {}", path.display());
    Ok(())
}

/// oom-probe watching `n` memory cgroups (each with a 64 MiB limit, under
/// one parent given as `--pressure-cgroup`) for `seconds`: RSS at the end,
/// CPU time over the window (start-up excluded), open fds. Three runs: all
/// quiet; one of them held at its limit by `oom-hog --reclaim` for the
/// whole window (notifications, file reads and a `memory_pressure` event a
/// minute); and all quiet with `--no-pressure`.
fn pressure_footprint(n: usize, seconds: u64) -> Result<Value> {
    let parent = MemoryCgroup::create(64 * MIB * n as u64)?;
    let children = (0..n)
        .map(|_| parent.create_child(Some(64 * MIB)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut figures = Vec::new();
    for (pressure, held) in [(true, false), (true, true), (false, false)] {
        let mut command = oom_probe();
        command.args(["--no-history", "--pressure-cgroup", parent.relative_path()]);
        if !pressure {
            command.arg("--no-pressure");
        }
        let (mut child, stdout, _stderr) = spawn_until_ready(&mut command, false)?;
        // Other kills on the node are printed too: keep the pipe drained,
        // counting the pressure events.
        let events = thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
                .filter(|line| line.contains("\"type\":\"memory_pressure\""))
                .count()
        });
        let mut holder = match (held, children.first()) {
            (true, Some(cgroup)) => Some(hold_at_limit(cgroup, seconds + 5)?),
            _ => None,
        };
        // Let the hog reach the limit before the window starts.
        if holder.is_some() {
            thread::sleep(Duration::from_secs(3));
        }
        let before = process_stats(child.id());
        thread::sleep(Duration::from_secs(seconds));
        let after = process_stats(child.id());
        let fds = fs::read_dir(format!("/proc/{}/fd", child.id()))
            .map(|d| d.count())
            .unwrap_or(0);
        stop(&mut child);
        if let Some(hog) = &mut holder {
            let _ = hog.kill();
            let _ = hog.wait();
        }
        figures.push(json!({
            "rss_kib": after.rss_kib,
            "cpu_ms": after.cpu_ms.saturating_sub(before.cpu_ms),
            "open_fds": fds,
            "memory_pressure_events": events.join().unwrap_or(0),
        }));
    }
    drop(children);
    Ok(json!({
        "watched_cgroups": n,
        "seconds": seconds,
        "with_pressure": figures[0],
        "one_held_at_limit": figures[1],
        "no_pressure": figures[2],
    }))
}

/// Holds `cgroup` (64 MiB limit) at its limit for `seconds`, as the
/// pressure tests do: on v1 anon just under the limit plus a file set
/// re-read through the rest; on v2 anon above `memory.high`, churned.
fn hold_at_limit(cgroup: &MemoryCgroup, seconds: u64) -> Result<Child> {
    let files =
        std::env::temp_dir().join(format!("oom-probe-bench-pressure-{}", std::process::id()));
    let (anon_mb, files_mb, churn_kb) = if cgroup.is_v2() {
        cgroup.write("memory.high", &(32 * MIB).to_string())?;
        (34, 0, 512)
    } else {
        (59, 16, 0)
    };
    Ok(hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .arg("--reclaim")
        .arg(&files)
        .args(["--mb", &anon_mb.to_string()])
        .args(["--files-mb", &files_mb.to_string()])
        .args(["--churn-kb", &churn_kb.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .stdout(Stdio::null())
        .spawn()?)
}

fn print_pressure(results: &Value) {
    println!(
        "\nmemory_pressure watching ({}); CPU over the window, after start-up:",
        cell(&results["machine"])
    );
    println!(
        "{:>8} {:>5} | {:>8} {:>7} {:>5} | {:>8} {:>7} {:>6} | {:>8} {:>7}",
        "cgroups",
        "s",
        "RSS KiB",
        "CPU ms",
        "fds",
        "RSS KiB",
        "CPU ms",
        "events",
        "RSS KiB",
        "CPU ms"
    );
    println!(
        "{:>14} | {:>22} | {:>23} | {:>16}",
        "", "quiet", "one held at its limit", "--no-pressure"
    );
    for p in results["pressure"].as_array().into_iter().flatten() {
        println!(
            "{:>8} {:>5} | {:>8} {:>7} {:>5} | {:>8} {:>7} {:>6} | {:>8} {:>7}",
            cell(&p["watched_cgroups"]),
            cell(&p["seconds"]),
            cell(&p["with_pressure"]["rss_kib"]),
            cell(&p["with_pressure"]["cpu_ms"]),
            cell(&p["with_pressure"]["open_fds"]),
            cell(&p["one_held_at_limit"]["rss_kib"]),
            cell(&p["one_held_at_limit"]["cpu_ms"]),
            cell(&p["one_held_at_limit"]["memory_pressure_events"]),
            cell(&p["no_pressure"]["rss_kib"]),
            cell(&p["no_pressure"]["cpu_ms"])
        );
    }
}

/// The oom-probe binary measured: `$OOM_PROBE_BIN`, else the release build.
fn oom_probe_binary() -> PathBuf {
    std::env::var_os("OOM_PROBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "target/release/oom-probe".into())
}

fn oom_probe() -> Command {
    oom_probe_at(&oom_probe_binary())
}

fn oom_probe_at(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["watch", "--output", "json"])
        .stdin(Stdio::null());
    command
}

fn hog() -> Command {
    Command::new("target/release/oom-hog")
}

/// Start-up, interleaved run by run so every tool sees the same machine
/// load: oom-probe cold (its layout cache removed first: one parse of the
/// kernel's BTF) and warm (the cache of the run before: no parse), the
/// `baseline` binary if given, the bare aya loader of the same eBPF object
/// (`xtask/bare-loader`: `Ebpf::load` and the raw mark_victim program), and
/// bpftrace with one probe. Each: the median over `runs` of exec to the
/// ready line (oom-probe: "watching", probes attached; the bare loader:
/// "attached"; bpftrace: "Attaching 1 probe"), with the peak (VmHWM) and
/// the RSS one second after.
fn measure_startup(runs: usize, baseline: Option<&Path>) -> Result<Value> {
    let cache = PathBuf::from("target/bench/kernel-layout.json");
    let object = ebpf_object()?;
    let with_cache = {
        let cache = cache.clone();
        move |binary: &Path| {
            let mut command = oom_probe_at(binary);
            command.arg("--layout-cache").arg(&cache);
            command
        }
    };
    let release = PathBuf::from("target/release/oom-probe");
    let mut tools: Vec<(&str, String, MakeCommand)> = vec![
        (
            "oom-probe cold",
            release.display().to_string(),
            Box::new({
                let release = release.clone();
                let cache = cache.clone();
                let with_cache = with_cache.clone();
                move || {
                    let _ = fs::remove_file(&cache);
                    with_cache(&release)
                }
            }),
        ),
        (
            "oom-probe warm",
            release.display().to_string(),
            Box::new({
                let release = release.clone();
                move || with_cache(&release)
            }),
        ),
    ];
    if let Some(path) = baseline {
        let path = path.to_path_buf();
        tools.push((
            "baseline",
            path.display().to_string(),
            Box::new(move || oom_probe_at(&path)),
        ));
    }
    tools.push((
        "bare aya loader",
        "target/release/bare-aya-loader".into(),
        Box::new({
            let object = object.clone();
            move || {
                let mut command = Command::new("target/release/bare-aya-loader");
                command.arg(&object).arg("raw");
                command
            }
        }),
    ));
    let mut samples: Vec<Vec<(f64, u64, u64)>> = vec![Vec::new(); tools.len()];
    let mut bpftrace = Vec::new();
    for _ in 0..runs.max(1) {
        for (i, (name, _, command)) in tools.iter().enumerate() {
            let mut command = command();
            let started = Instant::now();
            // Its pipes stay open: a log line to a closed stderr stops it.
            let (mut child, stdout, _stderr) = if name.starts_with("bare") {
                spawn_until_stdout(&mut command, "attached")?
            } else {
                let (child, stdout, stderr) = spawn_until_ready(&mut command, false)?;
                (child, stdout, Some(stderr))
            };
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            // Drain stdout: kills elsewhere on the node would fill the pipe
            // and block the tool, which then never stops.
            let drain = thread::spawn(move || {
                let _ = std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink());
            });
            thread::sleep(Duration::from_secs(1));
            let stats = process_stats(child.id());
            samples[i].push((ms, stats.hwm_kib, stats.rss_kib));
            stop(&mut child);
            let _ = drain.join();
        }
        if let Ok(ms) = bpftrace_startup() {
            bpftrace.push(ms);
        }
    }
    let _ = fs::remove_file(&cache);
    let median = |mut values: Vec<f64>| -> Value {
        if values.is_empty() {
            return Value::Null;
        }
        values.sort_by(f64::total_cmp);
        json!((values[values.len() / 2] * 10.0).round() / 10.0)
    };
    let mut rows = Vec::new();
    for ((name, binary, _), runs) in tools.iter().zip(samples) {
        rows.push(json!({
            "tool": name,
            "binary": binary,
            "startup_ms": median(runs.iter().map(|r| r.0).collect()),
            "startup_ms_all": runs.iter().map(|r| (r.0 * 10.0).round() / 10.0).collect::<Vec<_>>(),
            "hwm_kib": median(runs.iter().map(|r| r.1 as f64).collect()),
            "rss_kib_after_1s": median(runs.iter().map(|r| r.2 as f64).collect()),
        }));
    }
    rows.push(json!({
        "tool": "bpftrace",
        "startup_ms": median(bpftrace.clone()),
        "startup_ms_all": bpftrace,
    }));
    Ok(json!({ "runs": runs, "object": object.display().to_string(), "tools": rows }))
}

/// Makes the command of one start-up run (and prepares for it).
type MakeCommand = Box<dyn Fn() -> Command>;

/// The eBPF object oom-probe's build made (the newest in the release build
/// directory): what the bare aya loader loads.
fn ebpf_object() -> Result<PathBuf> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in fs::read_dir("target/release/build").context("no release build")? {
        let path = entry?.path().join("out/oom-probe-ebpf");
        if let Ok(modified) = fs::metadata(&path).and_then(|m| m.modified()) {
            if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
                newest = Some((modified, path));
            }
        }
    }
    newest
        .map(|(_, path)| path)
        .context("no oom-probe-ebpf object under target/release/build")
}

/// Starts `command` and waits for a stdout line containing `needle`.
fn spawn_until_stdout(
    command: &mut Command,
    needle: &str,
) -> Result<(Child, ChildStdout, Option<Receiver<String>>)> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the bare aya loader")?;
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while stdout.read_line(&mut line)? > 0 {
        if line.contains(needle) {
            return Ok((child, stdout.into_inner(), None));
        }
        line.clear();
    }
    stop(&mut child);
    bail!("the bare aya loader never said {needle:?}")
}

/// Exec of bpftrace with one mark_victim probe to its "Attaching" line.
fn bpftrace_startup() -> Result<f64> {
    let started = Instant::now();
    let mut child = Command::new("bpftrace")
        .args([
            "-e",
            "tracepoint:oom:mark_victim { printf(\"%d\\n\", args->pid); }",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run bpftrace")?;
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut attached = None;
    for line in stdout.lines().map_while(Result::ok) {
        if line.contains("Attaching") {
            attached = Some(started.elapsed().as_secs_f64() * 1000.0);
            break;
        }
    }
    stop(&mut child);
    attached.context("bpftrace never said it was attaching")
}

/// The cost of naming a cgroup id and of a reconciliation tick with `n`
/// cgroups present (created here, under one parent, and removed after):
/// - naming by kernfs file handle (what oom-probe does), per id, over up to
///   100 ids, against one walk of the hierarchy (the fallback, and what
///   every unknown id cost before);
/// - a full reconciliation (walk, and every cgroup's kill counter read),
///   in CPU time, which oom-probe does only when the node's kill count says
///   a kill may be unaccounted for;
/// - oom-probe's own CPU per tick with `--reconcile-interval 0.1` for 5 s
///   (the steady state: one read of /proc/vmstat per tick): measured by
///   oom-probe around each tick (thread CPU clock,
///   `oom_probe_reconcile_cpu_seconds_total` over
///   `oom_probe_reconcile_ticks_total`), with the walks in the window (kills
///   elsewhere on the node cause some); the process's whole CPU over the
///   ticks it really ran is printed beside it.
fn cgroup_scaling(n: usize) -> Result<Value> {
    use oom_probe_cgroupfs::{counters, resolver::CgroupResolver, testing::memory_root};
    use std::os::unix::fs::MetadataExt;
    let (root, _) = memory_root()?;
    let parent = MemoryCgroup::create(64 * MIB)?;
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        children.push(parent.create_child(None)?);
    }
    let total = CgroupResolver::new(&root).walk().len();
    let ids: Vec<u64> = children
        .iter()
        .rev()
        .take(100)
        .filter_map(|c| fs::metadata(c.path()).ok().map(|m| m.ino()))
        .collect();
    let mut by_handle = CgroupResolver::new(&root);
    by_handle.path_of(fs::metadata(&root)?.ino()); // decides how to look up
    let lookup = format!("{:?}", by_handle.lookup());
    let started = thread_cpu_ns();
    let wall = Instant::now();
    let named = ids
        .iter()
        .filter(|&&id| by_handle.path_of(id).is_some())
        .count();
    let handle_cpu_ns = thread_cpu_ns() - started;
    let handle_wall = wall.elapsed();
    let started = thread_cpu_ns();
    let walked = CgroupResolver::new(&root)
        .walk_only()
        .path_of(ids[0])
        .is_some();
    let walk_cpu_ns = thread_cpu_ns() - started;
    let started = thread_cpu_ns();
    let resolver = CgroupResolver::new(&root);
    let counted = resolver
        .walk()
        .iter()
        .filter(|(_, path)| {
            counters::oom_kills(
                &root.join(path.trim_start_matches('/')),
                counters::Scope::Local,
            )
            .is_ok()
        })
        .count();
    let full_cpu_ns = thread_cpu_ns() - started;
    let (tx, _rx) = mpsc::channel();
    let listen = oom_probe_test_support::free_loopback_addr();
    let mut tool = start_oom_probe(
        &tx,
        "oom-probe",
        DEFAULT_RING,
        &["--reconcile-interval", "0.1", "--listen", &listen],
    )?;
    thread::sleep(Duration::from_secs(1)); // past the first (baseline) walk
    let before = process_stats(tool.child.id());
    let metrics_before = reconcile_metrics(&listen)?;
    let seconds = 5;
    thread::sleep(Duration::from_secs(seconds));
    let after = process_stats(tool.child.id());
    let metrics_after = reconcile_metrics(&listen)?;
    stop(&mut tool.child);
    let [ticks, walks, tick_cpu_s] = std::array::from_fn(|i| metrics_after[i] - metrics_before[i]);
    drop(children);
    drop(parent);
    Ok(json!({
        "cgroups_created": n,
        "cgroups_in_hierarchy": total,
        "lookup": lookup,
        "named_by_handle": named,
        "name_by_handle_us": handle_cpu_ns as f64 / named.max(1) as f64 / 1000.0,
        "name_by_handle_wall_us": handle_wall.as_secs_f64() * 1e6 / named.max(1) as f64,
        "walk_found": walked,
        "name_by_walk_us": walk_cpu_ns as f64 / 1000.0,
        "full_reconcile_cpu_ms": full_cpu_ns as f64 / 1e6,
        "counters_read": counted,
        "agent_tick_cpu_ms": tick_cpu_s * 1e3 / ticks.max(1.0),
        "agent_ticks": ticks,
        "agent_walks": walks,
        "agent_process_cpu_ms_per_tick": after.cpu_ms.saturating_sub(before.cpu_ms) as f64
            / ticks.max(1.0),
        "agent_rss_kib": after.rss_kib,
    }))
}

/// Prints the naming and reconciliation costs of `results["cgroups"]`.
fn print_cgroups(results: &Value) {
    println!("\ncost with the node's cgroups (naming one id; a reconciliation tick):");
    println!(
        "{:>8} {:>8} {:>10} {:>11} {:>12} {:>14} {:>12} {:>16}",
        "cgroups",
        "lookup",
        "handle us",
        "walk us",
        "full tick ms",
        "agent tick ms",
        "ticks/walks",
        "process ms/tick"
    );
    for row in results["cgroups"].as_array().into_iter().flatten() {
        let number = |v: &Value| v.as_f64().map_or("-".into(), |v| format!("{v:.3}"));
        println!(
            "{:>8} {:>8} {:>10} {:>11} {:>12} {:>14} {:>12} {:>16}",
            cell(&row["cgroups_in_hierarchy"]),
            cell(&row["lookup"]),
            number(&row["name_by_handle_us"]),
            number(&row["name_by_walk_us"]),
            number(&row["full_reconcile_cpu_ms"]),
            number(&row["agent_tick_cpu_ms"]),
            format!(
                "{}/{}",
                cell(&row["agent_ticks"]),
                cell(&row["agent_walks"])
            ),
            number(&row["agent_process_cpu_ms_per_tick"])
        );
    }
}

/// `[ticks, walks, CPU seconds]` of oom-probe's reconciliation so far, from
/// its /metrics at `listen`.
fn reconcile_metrics(listen: &str) -> Result<[f64; 3]> {
    let (_, text) = oom_probe_test_support::http_get(listen, "/metrics")?;
    let value = |name: &str| -> Result<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .with_context(|| format!("no {name} in oom-probe's /metrics"))
    };
    Ok([
        value("oom_probe_reconcile_ticks_total")?,
        value("oom_probe_reconcile_walks_total")?,
        value("oom_probe_reconcile_cpu_seconds_total")?,
    ])
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A tool under test: its process, and its stderr lines where it is ours.
struct Running {
    name: &'static str,
    child: Child,
    stderr: Option<Receiver<String>>,
}

fn side_by_side(kills: usize) -> Result<Value> {
    let load_before = load_average();
    let (tx, rx) = mpsc::channel();
    // The agent's files (`run` keeps them in /var/lib/oom-probe).
    let files = std::env::temp_dir().join(format!("oom-probe-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&files);
    fs::create_dir_all(&files)?;
    let state = files.join("state.json").to_string_lossy().into_owned();
    let store = files.join("history.redb").to_string_lossy().into_owned();
    let mut tools = vec![
        start_oom_probe(&tx, "oom-probe", DEFAULT_RING, &[])?,
        start_oom_probe(
            &tx,
            "oom-probe +files",
            DEFAULT_RING,
            &["--state-file", &state, "--history-file", &store],
        )?,
    ];
    let mut notes = vec![
        "oom-probe +files: with the agent's state file and history store (as `run`)".to_string(),
    ];
    match start_bpftrace(&tx) {
        Ok(tool) => tools.push(tool),
        Err(err) => notes.push(format!("bpftrace unavailable: {err:#}")),
    }
    tools.push(start_kmsg_reader(&tx)?);
    thread::sleep(Duration::from_secs(3)); // bpftrace compiles its script first
    let cgroup = MemoryCgroup::create(16 * MIB)?;
    let mut pids = Vec::new();
    for _ in 0..kills {
        let mut child = hog()
            .arg("--cgroup")
            .arg(cgroup.path())
            .args(["--comm", "bench-hog", "--mb", "64"])
            .spawn()?;
        pids.push(child.id());
        child.wait()?;
    }
    thread::sleep(Duration::from_secs(2));
    let sightings: Vec<Sighting> = rx.try_iter().filter(|s| pids.contains(&s.pid)).collect();
    let mut rows = Vec::new();
    for tool in &mut tools {
        let stats = process_stats(tool.child.id());
        let mut latencies: Vec<u64> = sightings
            .iter()
            .filter(|s| s.tool == tool.name)
            .filter_map(|s| s.latency_ns)
            .collect();
        let caught = sightings.iter().filter(|s| s.tool == tool.name).count();
        latencies.sort_unstable();
        rows.push(json!({
            "tool": tool.name,
            "kills": kills,
            "caught": caught,
            "latency_us": percentiles(&latencies),
            "rss_kib": stats.rss_kib,
            "names_container": tool.name.starts_with("oom-probe"),
        }));
        stop(&mut tool.child);
    }
    let _ = fs::remove_dir_all(&files);
    let kernel = cgroup.kernel_oom_kills()?;
    Ok(json!({
        "kernel_counted": kernel,
        "latency_measures": LATENCY_MEASURES,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "tools": rows,
        "notes": notes,
    }))
}

/// Pods the store holds in the Kubernetes phase.
const BENCH_NODE: &str = "bench-node";

fn kubernetes_enrichment(kills: usize, pods: usize) -> Result<Value> {
    use oom_probe_test_support::apiserver::{pod, ApiServer};
    let server = ApiServer::start()?;
    let uid = |i: usize| format!("00000000-0000-4000-8000-{i:012}");
    let container_id = "5e".repeat(32);
    for i in 0..pods {
        let mut p = pod("bench", &format!("pod-{i}"), &uid(i), BENCH_NODE);
        p["spec"]["containers"] =
            json!([{"name": "app", "resources": {"limits": {"memory": "16Mi"}}}]);
        p["status"]["containerStatuses"] = json!([{
            "name": "app", "containerID": format!("containerd://{}", if i == 0 { container_id.clone() } else { format!("{i:064}") }),
            "image": "app", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}},
        }]);
        server.apply_pod(p);
    }
    // pod-0's cgroup, laid out as the kubelet's cgroupfs driver does.
    let top = MemoryCgroup::create(16 * MIB)?;
    let kubepods = top.create_child_named("kubepods", None)?;
    let burstable = kubepods.create_child_named("burstable", None)?;
    let pod_cgroup = burstable.create_child_named(&format!("pod{}", uid(0)), None)?;
    let container = pod_cgroup.create_child_named(&container_id, None)?;
    let leaf = container.path();
    let (tx, rx) = mpsc::channel();
    let kubeconfig = server.kubeconfig().to_string_lossy().into_owned();
    let mut tool = start_oom_probe(
        &tx,
        "oom-probe",
        DEFAULT_RING,
        &["--kubeconfig", &kubeconfig, "--node-name", BENCH_NODE],
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .requests()
        .iter()
        .any(|r| r.query("watch") == Some("true"))
    {
        if Instant::now() > deadline {
            bail!("oom-probe never watched the local API server");
        }
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_secs(1));
    let with_store = process_stats(tool.child.id());
    let mut pids = Vec::new();
    for _ in 0..kills {
        let mut child = hog()
            .arg("--cgroup")
            .arg(leaf)
            .args(["--comm", "bench-pod", "--mb", "64"])
            .spawn()?;
        pids.push(child.id());
        child.wait()?;
    }
    thread::sleep(Duration::from_secs(2));
    stop(&mut tool.child);
    let sightings: Vec<Sighting> = rx.try_iter().filter(|s| pids.contains(&s.pid)).collect();
    let mut latencies: Vec<u64> = sightings.iter().filter_map(|s| s.latency_ns).collect();
    latencies.sort_unstable();
    drop((container, pod_cgroup, burstable, kubepods, top)); // children first
    Ok(json!({
        "pods_in_store": pods,
        "kills": kills,
        "caught": sightings.len(),
        "named": sightings.iter().filter(|s| s.named_pod).count(),
        "latency_us": percentiles(&latencies),
        "rss_kib_with_store": with_store.rss_kib,
        "anon_kib_with_store": with_store.anon_kib,
        "file_kib_with_store": with_store.file_kib,
    }))
}

fn start_oom_probe(
    tx: &Sender<Sighting>,
    name: &'static str,
    ring: u32,
    extra_args: &[&str],
) -> Result<Running> {
    let mut command = oom_probe();
    command
        .args([
            "--ring-buffer-size",
            &ring.to_string(),
            "--userspace-killers",
            "",
        ])
        .args(extra_args);
    let (child, stdout, stderr) = spawn_until_ready(&mut command, false)?;
    let stdout = BufReader::new(stdout);
    let tx = tx.clone();
    thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let now = monotonic_ns();
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let (Some(pid), Some(kernel)) = (
                event["victim"]["pid"].as_u64(),
                event["kernel_time_ns"].as_u64(),
            ) else {
                continue;
            };
            let _ = tx.send(Sighting {
                tool: name,
                pid: pid as u32,
                latency_ns: Some(now.saturating_sub(kernel)),
                named_pod: event["kubernetes"]["pod"].is_string(),
            });
        }
    });
    Ok(Running {
        name,
        child,
        stderr: Some(stderr),
    })
}

fn start_bpftrace(tx: &Sender<Sighting>) -> Result<Running> {
    let script =
        r#"tracepoint:oom:mark_victim { printf("%lld %d %s\n", nsecs, args->pid, comm); }"#;
    let mut child = Command::new("bpftrace")
        .args(["-B", "line", "-e", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run bpftrace (apt-get install bpftrace)")?;
    forward_sightings(&mut child, tx, "bpftrace", 1);
    Ok(Running {
        name: "bpftrace",
        child,
        stderr: None,
    })
}

/// node-problem-detector's rule: `Killed process \d+ (.+) total-vm:...`.
fn start_kmsg_reader(tx: &Sender<Sighting>) -> Result<Running> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("kmsg-reader")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    // kmsg stamps records in microseconds.
    forward_sightings(&mut child, tx, "kmsg regex", 1000);
    Ok(Running {
        name: "kmsg regex",
        child,
        stderr: None,
    })
}

/// Reads `<kernel time> <pid> ...` lines from a tool's stdout and sends a
/// sighting per line; `ns_per_unit` converts the tool's time unit.
fn forward_sightings(
    child: &mut Child,
    tx: &Sender<Sighting>,
    tool: &'static str,
    ns_per_unit: u64,
) {
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let tx = tx.clone();
    thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let now = monotonic_ns();
            let mut fields = line.split_whitespace();
            let (Some(Ok(time)), Some(Ok(pid))) = (
                fields.next().map(str::parse::<u64>),
                fields.next().map(str::parse::<u32>),
            ) else {
                continue;
            };
            let latency_ns = Some(now.saturating_sub(time * ns_per_unit));
            let _ = tx.send(Sighting {
                tool,
                pid,
                latency_ns,
                named_pod: false,
            });
        }
    });
}

/// The kmsg reader process: prints `<usec> <pid>` for each OOM kill line.
pub fn kmsg_reader() -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut kmsg = fs::File::open("/dev/kmsg").context("open /dev/kmsg")?;
    kmsg.seek(SeekFrom::End(0))?;
    let mut buffer = vec![0u8; 8192];
    let stdout = std::io::stdout();
    loop {
        // Each read returns one record: "prio,seq,usec,flags;message".
        let n = match kmsg.read(&mut buffer) {
            Ok(n) => n,
            Err(err) if err.raw_os_error() == Some(libc::EPIPE) => continue, // overwritten records
            Err(err) => return Err(err.into()),
        };
        let record = String::from_utf8_lossy(&buffer[..n]);
        let Some((header, message)) = record.split_once(';') else {
            continue;
        };
        let Some(usec) = header.split(',').nth(2) else {
            continue;
        };
        let Some(rest) = message.split("Killed process ").nth(1) else {
            continue;
        };
        let Some(pid) = rest.split_whitespace().next() else {
            continue;
        };
        if rest.contains("total-vm:") {
            writeln!(stdout.lock(), "{usec} {pid}")?;
        }
    }
}

fn idle_footprint(seconds: u64) -> Result<Value> {
    let (tx, _rx) = mpsc::channel();
    let mut tool = start_oom_probe(&tx, "oom-probe", DEFAULT_RING, &[])?;
    let before = process_stats(tool.child.id());
    thread::sleep(Duration::from_secs(seconds));
    let after = process_stats(tool.child.id());
    stop(&mut tool.child);
    Ok(json!({
        "seconds": seconds,
        "rss_kib": after.rss_kib,
        "anon_kib": after.anon_kib,
        "file_kib": after.file_kib,
        "cpu_ms": after.cpu_ms.saturating_sub(before.cpu_ms),
    }))
}

fn burst(n: usize, ring: u32) -> Result<Value> {
    let (tx, rx): (Sender<Sighting>, Receiver<Sighting>) = mpsc::channel();
    let mut tool = start_oom_probe(&tx, "oom-probe", ring, &[])?;
    let cgroups: Vec<MemoryCgroup> = (0..n)
        .map(|_| MemoryCgroup::create(8 * MIB))
        .collect::<std::io::Result<_>>()?;
    let before = process_stats(tool.child.id());
    let load = load_average();
    let started = Instant::now();
    let mut hogs: Vec<Child> = cgroups
        .iter()
        .map(|c| {
            hog()
                .arg("--cgroup")
                .arg(c.path())
                .args(["--comm", "burst-hog", "--mb", "32"])
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let pids: Vec<u32> = hogs.iter().map(Child::id).collect();
    for hog in &mut hogs {
        hog.wait()?;
    }
    let killed_in = started.elapsed();
    thread::sleep(Duration::from_secs(2));
    let during = process_stats(tool.child.id());
    let kernel: u64 = cgroups
        .iter()
        .map(|c| c.kernel_oom_kills().unwrap_or(0))
        .sum();
    stop(&mut tool.child);
    thread::sleep(Duration::from_millis(200));
    let lost = lost_from_stderr(&tool);
    let reported = rx.try_iter().filter(|s| pids.contains(&s.pid)).count() as u64;
    Ok(json!({
        "processes": n,
        "ring_buffer_bytes": ring,
        "kernel_counted": kernel,
        "reported": reported,
        "lost": lost,
        "rss_kib": during.rss_kib,
        "cpu_ms": during.cpu_ms.saturating_sub(before.cpu_ms),
        "killed_in_ms": killed_in.as_millis() as u64,
        "load_average": load,
        "kernel_kills_per_s": kernel as f64 / killed_in.as_secs_f64().max(1e-3),
        "cpu_us_per_kill": (during.cpu_ms.saturating_sub(before.cpu_ms) * 1000) as f64
            / reported.max(1) as f64,
    }))
}

/// The lost-record total oom-probe printed on stderr as it stopped.
fn lost_from_stderr(tool: &Running) -> u64 {
    let Some(lines) = &tool.stderr else { return 0 };
    lines
        .try_iter()
        .filter_map(|line| {
            line.split(" record(s) lost")
                .next()?
                .rsplit(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// RSS (KiB, from `/proc/<pid>/status`) and CPU time (ms, utime + stime
/// from `/proc/<pid>/stat`) of a process; 0 for what could not be read.
pub(crate) struct ProcessStats {
    pub(crate) rss_kib: u64,
    /// The anonymous part of the RSS (RssAnon: heap, stacks).
    pub(crate) anon_kib: u64,
    /// The file-backed part (RssFile: mostly the binary's own code).
    pub(crate) file_kib: u64,
    /// Peak RSS (VmHWM).
    pub(crate) hwm_kib: u64,
    pub(crate) cpu_ms: u64,
}

pub(crate) fn process_stats(pid: u32) -> ProcessStats {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    let rss_kib = field("VmRSS:");
    let hwm_kib = field("VmHWM:");
    let anon_kib = field("RssAnon:");
    let file_kib = field("RssFile:");
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of comm: utime and stime are the 12th and 13th.
    let ticks: u64 = stat
        .rsplit(')')
        .next()
        .map(|rest| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ProcessStats {
        rss_kib,
        anon_kib,
        file_kib,
        hwm_kib,
        cpu_ms: ticks * 1000 / hz,
    }
}

/// SIGTERM, then SIGKILL if the tool is still there 5 s later: bpftrace
/// once caught a SIGTERM that came while it attached and never exited,
/// which held a whole bench run.
fn stop(child: &mut Child) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("bench: pid {} ignored SIGTERM for 5 s: SIGKILL", child.id());
    let _ = child.kill();
    let _ = child.wait();
}

fn percentiles(sorted: &[u64]) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize] / 1000;
    json!({ "p50": at(0.5), "p99": at(0.99), "max": at(1.0) })
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split(':')
                .nth(1)
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    format!("{cores} x {cpu}, kernel {}", kernel.trim())
}

fn humantime_now() -> String {
    let output = Command::new("date").arg("-u").arg("+%Y-%m-%d").output();
    output
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A JSON value as plain text, so width specifiers apply.
fn cell(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::from("-"),
        other => other.to_string(),
    }
}

fn print_table(results: &Value) {
    println!(
        "oom-probe benchmark on {} ({})",
        cell(&results["machine"]),
        cell(&results["date"])
    );
    let startup = &results["startup"];
    println!(
        "\nstart-up, median of {} runs (exec to the ready line; oom-probe: probes attached):",
        cell(&startup["runs"])
    );
    println!(
        "{:<12} {:>11} {:>13} {:>16}",
        "tool", "start ms", "peak KiB", "RSS KiB at 1 s"
    );
    for tool in startup["tools"].as_array().into_iter().flatten() {
        println!(
            "{:<12} {:>11} {:>13} {:>16}",
            cell(&tool["tool"]),
            cell(&tool["startup_ms"]),
            cell(&tool["hwm_kib"]),
            cell(&tool["rss_kib_after_1s"])
        );
    }
    print_cgroups(results);
    print_side_by_side(results);
    let k8s = &results["kubernetes"];
    println!(
        "\nwith Kubernetes names ({} pods in the store, warm): {} of {} kills named, latency p50 {} us, p99 {} us, max {} us; RSS {} KiB (anonymous {}, file-backed {})",
        cell(&k8s["pods_in_store"]),
        cell(&k8s["named"]),
        cell(&k8s["kills"]),
        cell(&k8s["latency_us"]["p50"]),
        cell(&k8s["latency_us"]["p99"]),
        cell(&k8s["latency_us"]["max"]),
        cell(&k8s["rss_kib_with_store"]),
        cell(&k8s["anon_kib_with_store"]),
        cell(&k8s["file_kib_with_store"])
    );
    let idle = &results["idle"];
    println!(
        "\nidle {} s: RSS {} KiB (anonymous {}, file-backed {}), CPU {} ms",
        cell(&idle["seconds"]),
        cell(&idle["rss_kib"]),
        cell(&idle["anon_kib"]),
        cell(&idle["file_kib"]),
        cell(&idle["cpu_ms"])
    );
    print_bursts(results);
}

fn print_side_by_side(results: &Value) {
    let side = &results["side_by_side"];
    println!(
        "\nside by side, {} sequential kills (kernel counted {}):",
        cell(&side["tools"][0]["kills"]),
        cell(&side["kernel_counted"])
    );
    println!(
        "{:<16} {:>7} {:>10} {:>10} {:>10} {:>9} {:>15}",
        "tool", "caught", "p50 us", "p99 us", "max us", "RSS KiB", "names container"
    );
    println!("latency {}", cell(&side["latency_measures"]));
    println!(
        "load average (1, 5, 15 min) before {}, after {}",
        side["load_average_before"], side["load_average_after"]
    );
    for tool in side["tools"].as_array().into_iter().flatten() {
        let latency = &tool["latency_us"];
        println!(
            "{:<16} {:>7} {:>10} {:>10} {:>10} {:>9} {:>15}",
            cell(&tool["tool"]),
            cell(&tool["caught"]),
            cell(&latency["p50"]),
            cell(&latency["p99"]),
            cell(&latency["max"]),
            cell(&tool["rss_kib"]),
            if tool["names_container"] == true {
                "yes"
            } else {
                "no"
            }
        );
    }
    for note in side["notes"].as_array().into_iter().flatten() {
        println!("note: {}", cell(note));
    }
}

fn print_bursts(results: &Value) {
    println!("\nbursts (all killed at once, one cgroup each), every run:");
    println!(
        "{:>9} {:>10} {:>8} {:>9} {:>6} {:>9} {:>7} {:>8} {:>10} {:>14}",
        "processes",
        "ring bytes",
        "kernel",
        "reported",
        "lost",
        "RSS KiB",
        "CPU ms",
        "kills/s",
        "CPU us/kill",
        "load avg 1 min"
    );
    for b in results["bursts"].as_array().into_iter().flatten() {
        for run in b["runs"].as_array().into_iter().flatten() {
            println!(
                "{:>9} {:>10} {:>8} {:>9} {:>6} {:>9} {:>7} {:>8.0} {:>10.0} {:>14}",
                cell(&b["processes"]),
                cell(&b["ring_buffer_bytes"]),
                cell(&run["kernel_counted"]),
                cell(&run["reported"]),
                cell(&run["lost"]),
                cell(&run["rss_kib"]),
                cell(&run["cpu_ms"]),
                run["kernel_kills_per_s"].as_f64().unwrap_or(0.0),
                run["cpu_us_per_kill"].as_f64().unwrap_or(0.0),
                cell(&run["load_average"][0])
            );
        }
    }
    println!(
        "\nlost records, spread over the runs of each size (min / median / max; runs with a loss):"
    );
    println!(
        "{:>9} {:>10} {:>20} {:>14} {:>22}",
        "processes", "ring bytes", "lost min/median/max", "runs w/ loss", "reported+lost < kernel"
    );
    for b in results["bursts"].as_array().into_iter().flatten() {
        println!(
            "{:>9} {:>10} {:>20} {:>14} {:>22}",
            cell(&b["processes"]),
            cell(&b["ring_buffer_bytes"]),
            format!(
                "{}/{}/{}",
                cell(&b["lost_min"]),
                cell(&b["lost_median"]),
                cell(&b["lost_max"])
            ),
            format!(
                "{}/{}",
                cell(&b["runs_with_loss"]),
                b["runs"].as_array().map_or(0, Vec::len)
            ),
            cell(&b["runs_reported_plus_lost_short_of_kernel"])
        );
    }
}
