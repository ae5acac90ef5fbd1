//! The start-up phase: exec to the ready line of oom-probe cold (no layout
//! cache) and warm, an optional baseline binary, the bare aya loader of the
//! same eBPF object (xtask/bare-loader) and bpftrace, interleaved run by run
//! so that every tool sees the same machine load.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{
    measure::{oom_probe_at, process_stats, spawn_until_ready, stop},
    stats::{median_tenth, tenth},
};

/// The phase's figures (`startup` in the JSON).
#[derive(Debug, Serialize)]
pub(crate) struct Startup {
    /// Runs of each tool.
    pub(crate) runs: usize,
    /// The eBPF object the bare loader loaded.
    pub(crate) object: String,
    /// One row per tool, bpftrace last.
    pub(crate) tools: Vec<ToolStartup>,
}

/// One tool's start-up over the runs.
#[derive(Debug, Serialize)]
pub(crate) struct ToolStartup {
    /// The tool's name in the table.
    pub(crate) tool: String,
    /// The binary started (absent for bpftrace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) binary: Option<String>,
    /// Median exec to ready line, ms to a tenth; null if it never got ready.
    pub(crate) startup_ms: Option<f64>,
    /// Every run's, in run order.
    pub(crate) startup_ms_all: Vec<f64>,
    /// Median peak RSS (VmHWM) one second after ready (absent for bpftrace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hwm_kib: Option<f64>,
    /// Median RSS one second after ready (absent for bpftrace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rss_kib_after_1s: Option<f64>,
}

/// Makes the command of one start-up run (and prepares for it).
type MakeCommand = Box<dyn Fn() -> Command>;

/// Start-up, interleaved run by run: oom-probe cold (its layout cache
/// removed first: one parse of the kernel's BTF) and warm (the cache of the
/// run before: no parse), the `baseline` binary if given, the bare aya
/// loader (`Ebpf::load` and the raw mark_victim program), and bpftrace with
/// one probe. Each: the median over `runs` of exec to the ready line
/// (oom-probe: "watching", probes attached; the bare loader: "attached";
/// bpftrace: "Attaching 1 probe"), with the peak (VmHWM) and the RSS one
/// second after.
pub(crate) fn measure(runs: usize, baseline: Option<&Path>) -> Result<Startup> {
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
    // Per tool, per run: (ms to ready, VmHWM KiB, RSS KiB after 1 s).
    let mut samples: Vec<Vec<(f64, u64, u64)>> = vec![Vec::new(); tools.len()];
    let mut bpftrace = Vec::new();
    for _ in 0..runs.max(1) {
        for (i, (name, _, command)) in tools.iter().enumerate() {
            samples[i].push(one_run(name, &mut command())?);
        }
        if let Ok(ms) = bpftrace_startup() {
            bpftrace.push(ms);
        }
    }
    let _ = fs::remove_file(&cache);
    let mut rows: Vec<ToolStartup> = tools
        .iter()
        .zip(samples)
        .map(|((name, binary, _), runs)| ToolStartup {
            tool: name.to_string(),
            binary: Some(binary.clone()),
            startup_ms: median_tenth(runs.iter().map(|r| r.0).collect()),
            startup_ms_all: runs.iter().map(|r| tenth(r.0)).collect(),
            hwm_kib: median_tenth(runs.iter().map(|r| r.1 as f64).collect()),
            rss_kib_after_1s: median_tenth(runs.iter().map(|r| r.2 as f64).collect()),
        })
        .collect();
    rows.push(ToolStartup {
        tool: "bpftrace".into(),
        binary: None,
        startup_ms: median_tenth(bpftrace.clone()),
        startup_ms_all: bpftrace,
        hwm_kib: None,
        rss_kib_after_1s: None,
    });
    Ok(Startup {
        runs,
        object: object.display().to_string(),
        tools: rows,
    })
}

/// One start of tool `name`: ms to its ready line, its VmHWM and RSS (KiB)
/// one second later; then stops it.
fn one_run(name: &str, command: &mut Command) -> Result<(f64, u64, u64)> {
    let started = Instant::now();
    // Its pipes stay open: a log line to a closed stderr stops it.
    let (mut child, stdout, _stderr) = if name.starts_with("bare") {
        spawn_until_stdout(command, "attached")?
    } else {
        let (child, stdout, stderr) = spawn_until_ready(command, false)?;
        (child, stdout, Some(stderr))
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    // Drain stdout: kills elsewhere on the node would fill the pipe and
    // block the tool, which then never stops.
    let drain = thread::spawn(move || {
        let _ = std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink());
    });
    thread::sleep(Duration::from_secs(1));
    let stats = process_stats(child.id());
    stop(&mut child);
    let _ = drain.join();
    Ok((ms, stats.hwm_kib, stats.rss_kib))
}

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
) -> Result<(
    Child,
    ChildStdout,
    Option<std::sync::mpsc::Receiver<String>>,
)> {
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

/// Exec of bpftrace with one mark_victim probe to its "Attaching" line, ms.
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
