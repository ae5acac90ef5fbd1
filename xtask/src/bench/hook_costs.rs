//! What the agent's eBPF programs cost the rest of the node: the kernel's
//! own run-time statistics (`BPF_ENABLE_STATS`, run count and run time per
//! program) of each program `oom-probe watch` holds, over a known workload
//! of process exits and signals, and the workload's wall time with the
//! agent and without it, in alternating rounds of one run.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    thread,
    time::Instant,
};

use anyhow::{Context, Result};
use aya::{
    programs::loaded_programs,
    sys::{enable_stats, Stats},
};
use serde::Serialize;

use super::{
    measure::{load_average, oom_probe, spawn_until_ready, stop},
    stats::{median_tenth, tenth},
};

/// How the per-program figures are measured (`stats_measure` in the JSON).
pub(crate) const STATS_MEASURE: &str = "the kernel's BPF run-time statistics \
    (BPF_ENABLE_STATS): run count and run time of each program the agent holds, \
    read before and after the workload in a pass of their own (the statistics \
    add a clock read to every run, so the timed passes run without them); every \
    exit and signal on the node in that window runs the hooks, not only the workload's";

/// The phase's figures (`hook_costs` in the JSON).
#[derive(Debug, Serialize)]
pub(crate) struct HookCosts {
    /// Rounds, each timing the workloads without the agent and with it (in
    /// alternating order) and counting the agent's programs in a third pass.
    pub(crate) rounds: usize,
    /// [`STATS_MEASURE`].
    pub(crate) stats_measure: &'static str,
    /// `/proc/loadavg` (1, 5, 15 min) before the first round.
    pub(crate) load_average_before: Vec<f64>,
    /// And after the last.
    pub(crate) load_average_after: Vec<f64>,
    /// One entry per workload: `exits`, then `signals`.
    pub(crate) workloads: Vec<WorkloadCost>,
}

/// One workload's figures over all rounds.
#[derive(Debug, Serialize)]
pub(crate) struct WorkloadCost {
    /// `exits` (spawn and wait for `true`: an exit, and the parent's
    /// SIGCHLD) or `signals` (SIGUSR1 sent to a child that ignores it).
    pub(crate) workload: &'static str,
    /// Exits or signals per round and pass.
    pub(crate) per_round: usize,
    /// The workload's wall time without the agent, ms, one per round.
    pub(crate) wall_ms_without: Vec<f64>,
    /// With the agent attached (statistics off), ms, one per round.
    pub(crate) wall_ms_with: Vec<f64>,
    /// Median of [`Self::wall_ms_without`], ms.
    pub(crate) median_wall_ms_without: Option<f64>,
    /// Median of [`Self::wall_ms_with`], ms.
    pub(crate) median_wall_ms_with: Option<f64>,
    /// The agent's programs in the statistics passes, summed over rounds,
    /// by name; programs that never ran included.
    pub(crate) programs: Vec<ProgramCost>,
    /// All the programs' run time per 10,000 of the workload (exits or
    /// signals), ns.
    pub(crate) hook_ns_per_10k: f64,
}

/// One program's runs and run time in the statistics passes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct ProgramCost {
    /// The program's name as the kernel keeps it (15 bytes at most).
    pub(crate) program: String,
    /// Runs counted by the kernel.
    pub(crate) runs: u64,
    /// Their total run time, ns.
    pub(crate) run_time_ns: u64,
    /// Run time per run, ns (a tenth); null when it never ran.
    pub(crate) mean_ns_per_run: Option<f64>,
}

/// A program's counters at one instant: name, run count, run time in ns.
#[derive(Clone, Debug, PartialEq)]
struct ProgramSample {
    id: u32,
    name: String,
    runs: u64,
    run_time_ns: u64,
}

/// The two workloads, in report order.
#[derive(Clone, Copy)]
enum Workload {
    Exits,
    Signals,
}

impl Workload {
    const ALL: [Workload; 2] = [Workload::Exits, Workload::Signals];

    fn name(self) -> &'static str {
        match self {
            Workload::Exits => "exits",
            Workload::Signals => "signals",
        }
    }
}

/// Sums of the timed passes and statistics passes of one workload.
#[derive(Default)]
struct Tally {
    without: Vec<f64>,
    with: Vec<f64>,
    programs: BTreeMap<String, (u64, u64)>,
}

/// Runs `rounds` rounds of `exits` process exits and `signals` signals:
/// each round times both workloads without the agent and with `oom-probe
/// watch` (as it ships: default hooks and userspace killers), the order
/// alternating between rounds, then counts the agent's programs over one
/// more pass with the kernel's run-time statistics on.
pub(crate) fn hook_costs(exits: usize, signals: usize, rounds: usize) -> Result<HookCosts> {
    let load_before = load_average();
    let target = SignalTarget::start()?;
    let sizes = [exits, signals];
    let mut tallies = [Tally::default(), Tally::default()];
    for round in 0..rounds {
        let agent_first = round % 2 == 1;
        if !agent_first {
            for (tally, workload) in tallies.iter_mut().zip(Workload::ALL) {
                let n = sizes[workload as usize];
                tally.without.push(run_workload(workload, n, &target)?);
            }
        }
        let mut agent = start_agent()?;
        for (tally, workload) in tallies.iter_mut().zip(Workload::ALL) {
            let n = sizes[workload as usize];
            tally.with.push(run_workload(workload, n, &target)?);
        }
        let counted = count_programs(agent.id(), &sizes, &target);
        stop(&mut agent);
        for (tally, deltas) in tallies.iter_mut().zip(counted?) {
            add_deltas(&mut tally.programs, &deltas);
        }
        if agent_first {
            for (tally, workload) in tallies.iter_mut().zip(Workload::ALL) {
                let n = sizes[workload as usize];
                tally.without.push(run_workload(workload, n, &target)?);
            }
        }
        eprintln!("bench: hook costs round {} of {rounds} done", round + 1);
    }
    drop(target);
    let workloads = tallies
        .into_iter()
        .zip(Workload::ALL)
        .map(|(tally, workload)| {
            workload_cost(workload.name(), sizes[workload as usize], rounds, tally)
        })
        .collect();
    Ok(HookCosts {
        rounds,
        stats_measure: STATS_MEASURE,
        load_average_before: load_before,
        load_average_after: load_average(),
        workloads,
    })
}

/// The figures of one workload from its tally over `rounds` rounds of `n`.
fn workload_cost(name: &'static str, n: usize, rounds: usize, tally: Tally) -> WorkloadCost {
    let programs: Vec<ProgramCost> = tally
        .programs
        .into_iter()
        .map(|(program, (runs, run_time_ns))| ProgramCost {
            program,
            runs,
            run_time_ns,
            mean_ns_per_run: mean_ns(run_time_ns, runs),
        })
        .collect();
    let total_ns: u64 = programs.iter().map(|p| p.run_time_ns).sum();
    WorkloadCost {
        workload: name,
        per_round: n,
        median_wall_ms_without: median_tenth(tally.without.clone()),
        median_wall_ms_with: median_tenth(tally.with.clone()),
        wall_ms_without: tally.without,
        wall_ms_with: tally.with,
        programs,
        hook_ns_per_10k: per_10k(total_ns, n * rounds),
    }
}

/// Run time per run, a tenth of a ns; `None` for no runs.
fn mean_ns(run_time_ns: u64, runs: u64) -> Option<f64> {
    (runs > 0).then(|| tenth(run_time_ns as f64 / runs as f64))
}

/// `total_ns` spread over `count` workload items, per 10,000 of them (a
/// tenth of a ns); 0 for no items.
fn per_10k(total_ns: u64, count: usize) -> f64 {
    if count == 0 {
        return 0.0;
    }
    tenth(total_ns as f64 * 10_000.0 / count as f64)
}

/// `after - before` of each program by id, added by name to `into` as
/// `(runs, run time ns)`; a program in `after` alone counts from zero.
fn add_deltas(into: &mut BTreeMap<String, (u64, u64)>, deltas: &[ProgramSample]) {
    for d in deltas {
        let entry = into.entry(d.name.clone()).or_default();
        entry.0 += d.runs;
        entry.1 += d.run_time_ns;
    }
}

/// Each program of `after` less its sample of `before` (same id).
fn deltas(before: &[ProgramSample], after: &[ProgramSample]) -> Vec<ProgramSample> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            ProgramSample {
                id: a.id,
                name: a.name.clone(),
                runs: a.runs - b.map_or(0, |b| b.runs.min(a.runs)),
                run_time_ns: a.run_time_ns - b.map_or(0, |b| b.run_time_ns.min(a.run_time_ns)),
            }
        })
        .collect()
}

/// With the statistics on, each workload once, the agent's (`pid`)
/// programs read around each: the deltas, one list per workload.
fn count_programs(
    pid: u32,
    sizes: &[usize; 2],
    target: &SignalTarget,
) -> Result<[Vec<ProgramSample>; 2]> {
    let ids = program_ids(pid)?;
    let stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS (needs root)")?;
    let start = sample_programs(&ids)?;
    run_workload(Workload::Exits, sizes[0], target)?;
    let mid = sample_programs(&ids)?;
    run_workload(Workload::Signals, sizes[1], target)?;
    let end = sample_programs(&ids)?;
    drop(stats);
    Ok([deltas(&start, &mid), deltas(&mid, &end)])
}

/// The counters of the programs with `ids`, now.
fn sample_programs(ids: &[u32]) -> Result<Vec<ProgramSample>> {
    let mut samples = Vec::new();
    for info in loaded_programs() {
        let info = info.context("listing the loaded BPF programs")?;
        if ids.contains(&info.id()) {
            samples.push(ProgramSample {
                id: info.id(),
                name: String::from_utf8_lossy(info.name()).into_owned(),
                runs: info.run_count(),
                run_time_ns: info.run_time().as_nanos() as u64,
            });
        }
    }
    Ok(samples)
}

/// The ids of the BPF programs process `pid` holds, from the `prog_id:`
/// lines of its `/proc/<pid>/fdinfo/*` (another agent on the node, such as
/// a test's, is not counted).
fn program_ids(pid: u32) -> Result<Vec<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let text = fs::read_to_string(entry?.path()).unwrap_or_default();
        ids.extend(prog_id(&text));
    }
    ids.sort_unstable();
    ids.dedup();
    anyhow::ensure!(
        !ids.is_empty(),
        "oom-probe (pid {pid}) holds no BPF program"
    );
    Ok(ids)
}

/// The `prog_id:` of one fdinfo text (a BPF program's fd), if any.
fn prog_id(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("prog_id:")?.trim().parse().ok())
}

/// Runs `n` of `workload`; its wall time, ms (a tenth).
fn run_workload(workload: Workload, n: usize, target: &SignalTarget) -> Result<f64> {
    let started = Instant::now();
    match workload {
        Workload::Exits => {
            for _ in 0..n {
                let status = Command::new("true")
                    .stdin(Stdio::null())
                    .status()
                    .context("running true")?;
                anyhow::ensure!(status.success(), "true failed: {status}");
            }
        }
        Workload::Signals => {
            for _ in 0..n {
                // SAFETY: kill has no memory-safety preconditions.
                let rc = unsafe { libc::kill(target.child.id() as i32, libc::SIGUSR1) };
                anyhow::ensure!(rc == 0, "kill: {}", std::io::Error::last_os_error());
            }
        }
    }
    Ok(tenth(started.elapsed().as_secs_f64() * 1e3))
}

/// `oom-probe watch` as it ships, ready; its stdout drained (other kills
/// on the node print lines).
fn start_agent() -> Result<Child> {
    let (child, mut stdout, _stderr) = spawn_until_ready(&mut oom_probe(), false)?;
    thread::spawn(move || {
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    Ok(child)
}

/// A `sleep` that ignores SIGUSR1, the signals' target; killed on drop.
struct SignalTarget {
    child: Child,
}

impl SignalTarget {
    fn start() -> Result<Self> {
        let mut command = Command::new("sleep");
        command.arg("3600").stdin(Stdio::null());
        // SAFETY: signal(2) is async-signal-safe; the disposition
        // SIG_IGN survives exec.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGUSR1, libc::SIG_IGN);
                Ok(())
            });
        }
        let child = command.spawn().context("starting sleep")?;
        Ok(Self { child })
    }
}

impl Drop for SignalTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: u32, name: &str, runs: u64, run_time_ns: u64) -> ProgramSample {
        ProgramSample {
            id,
            name: name.into(),
            runs,
            run_time_ns,
        }
    }

    #[test]
    fn reads_the_program_id_of_a_bpf_fd_only() {
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\n\
            prog_type:\t26\nprog_jited:\t1\nprog_tag:\t3b185187f1855c4c\n\
            memlock:\t4096\nprog_id:\t1234\nrun_time_ns:\t0\nrun_cnt:\t0\n";
        assert_eq!(prog_id(prog), Some(1234));
        let map = "pos:\t0\nflags:\t02000002\nmap_type:\t27\nmap_id:\t77\n";
        assert_eq!(prog_id(map), None);
        assert_eq!(prog_id("pos:\t0\nflags:\t0100002\nmnt_id:\t26\n"), None);
    }

    #[test]
    fn deltas_are_per_id_and_a_new_program_counts_from_zero() {
        let before = [sample(7, "signal_generate", 100, 5_000)];
        let after = [
            sample(7, "signal_generate", 350, 17_500),
            sample(9, "process_exit_ra", 40, 2_000),
        ];
        assert_eq!(
            deltas(&before, &after),
            [
                sample(7, "signal_generate", 250, 12_500),
                sample(9, "process_exit_ra", 40, 2_000),
            ]
        );
    }

    #[test]
    fn rounds_add_up_by_name_across_agents() {
        // Each round's agent loads its programs anew, under new ids.
        let mut tally = Tally::default();
        add_deltas(
            &mut tally.programs,
            &[sample(7, "signal_generate", 250, 12_500)],
        );
        add_deltas(
            &mut tally.programs,
            &[
                sample(11, "signal_generate", 750, 25_000),
                sample(12, "mark_victim_raw", 0, 0),
            ],
        );
        tally.without = vec![30.0, 10.0, 20.0];
        tally.with = vec![12.0, 40.0, 22.0];
        let cost = workload_cost("signals", 500, 2, tally);
        assert_eq!(
            cost.programs,
            [
                ProgramCost {
                    program: "mark_victim_raw".into(),
                    runs: 0,
                    run_time_ns: 0,
                    mean_ns_per_run: None,
                },
                ProgramCost {
                    program: "signal_generate".into(),
                    runs: 1000,
                    run_time_ns: 37_500,
                    mean_ns_per_run: Some(37.5),
                },
            ]
        );
        // 37,500 ns over 1,000 signals: 375,000 ns per 10,000.
        assert_eq!(cost.hook_ns_per_10k, 375_000.0);
        assert_eq!(cost.median_wall_ms_without, Some(20.0));
        assert_eq!(cost.median_wall_ms_with, Some(22.0));
        assert_eq!(cost.wall_ms_with, [12.0, 40.0, 22.0]);
    }

    #[test]
    fn means_round_to_a_tenth_and_nothing_divides_by_zero() {
        assert_eq!(mean_ns(1_000, 3), Some(333.3));
        assert_eq!(mean_ns(0, 0), None);
        assert_eq!(per_10k(25, 3), 83_333.3);
        assert_eq!(per_10k(25, 0), 0.0);
    }
}
