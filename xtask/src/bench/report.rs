//! The bench's report: every phase's figures in one [`Results`], printed as
//! tables and written as JSON (keys sorted, as in docs/bench/*.json).

use std::{fmt::Write as _, fs, path::Path};

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::{
    bursts::BurstSize, cgroup_costs::CgroupCosts, churn::Churn, footprint::Idle,
    hook_costs::HookCosts, hostile::Hostile, kubernetes::KubernetesNames, latency::SideBySide,
    measure, pressure::PressureFootprint, startup::Startup,
};

/// What one bench run measured; a phase not run is absent from the JSON.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Results {
    /// [`measure::machine`].
    pub(crate) machine: String,
    /// The day of the run, UTC, `YYYY-MM-DD`.
    pub(crate) date: String,
    /// A caveat on the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) startup: Option<Startup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cgroups: Option<Vec<CgroupCosts>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) side_by_side: Option<SideBySide>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) idle: Option<Idle>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kubernetes: Option<KubernetesNames>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) churn: Option<Churn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bursts: Option<Vec<BurstSize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pressure: Option<Vec<PressureFootprint>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hostile: Option<Hostile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hook_costs: Option<HookCosts>,
}

impl Results {
    /// No figures yet: this machine, today.
    pub(crate) fn new() -> Self {
        Self {
            machine: measure::machine(),
            date: measure::today(),
            ..Self::default()
        }
    }

    /// Every table, in the order the full run measures.
    pub(crate) fn print(&self) {
        println!("oom-probe benchmark on {} ({})", self.machine, self.date);
        if let Some(startup) = &self.startup {
            print_startup(startup);
        }
        if let Some(cgroups) = &self.cgroups {
            print_cgroups(cgroups);
        }
        if let Some(side) = &self.side_by_side {
            print_side_by_side(side);
        }
        if let Some(k8s) = &self.kubernetes {
            print_kubernetes(k8s);
        }
        if let Some(idle) = &self.idle {
            println!(
                "\nidle {} s: RSS {} KiB (anonymous {}, file-backed {}), CPU {} ms",
                idle.seconds, idle.rss_kib, idle.anon_kib, idle.file_kib, idle.cpu_ms
            );
        }
        if let Some(bursts) = &self.bursts {
            print_bursts(bursts);
        }
        if let Some(churn) = &self.churn {
            print_churn(churn);
        }
        if let Some(pressure) = &self.pressure {
            print_pressure(&self.machine, pressure);
        }
        if let Some(hostile) = &self.hostile {
            print_hostile(hostile);
        }
        if let Some(hooks) = &self.hook_costs {
            print_hook_costs(hooks);
        }
    }

    /// Writes the JSON to `path` (its directory created), keys sorted.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        // Through a `Value`: its maps sort their keys, as the committed
        // results (built with `json!`) have them.
        fs::write(path, to_sorted_json(self)?)?;
        println!("\nwritten to {}", path.display());
        Ok(())
    }
}

/// `value` as pretty JSON with every object's keys sorted.
fn to_sorted_json(value: &impl Serialize) -> Result<String> {
    Ok(serde_json::to_string_pretty(&serde_json::to_value(value)?)?)
}

/// A figure as its JSON text (strings unquoted, null as `-`), so width
/// specifiers apply and floats print as they are written.
fn cell(value: impl Serialize) -> String {
    match serde_json::to_value(value).unwrap_or(Value::Null) {
        Value::String(text) => text,
        Value::Null => String::from("-"),
        other => other.to_string(),
    }
}

fn print_startup(startup: &Startup) {
    println!(
        "\nstart-up, median of {} runs (exec to the ready line; oom-probe: probes attached):",
        startup.runs
    );
    println!(
        "{:<12} {:>11} {:>13} {:>16}",
        "tool", "start ms", "peak KiB", "RSS KiB at 1 s"
    );
    for tool in &startup.tools {
        println!(
            "{:<12} {:>11} {:>13} {:>16}",
            tool.tool,
            cell(tool.startup_ms),
            cell(tool.hwm_kib),
            cell(tool.rss_kib_after_1s)
        );
    }
}

/// The naming and reconciliation costs, one row per cgroup count.
fn print_cgroups(rows: &[CgroupCosts]) {
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
    for row in rows {
        println!(
            "{:>8} {:>8} {:>10.3} {:>11.3} {:>12.3} {:>14.3} {:>12} {:>16.3}",
            row.cgroups_in_hierarchy,
            row.lookup,
            row.name_by_handle_us,
            row.name_by_walk_us,
            row.full_reconcile_cpu_ms,
            row.agent_tick_cpu_ms,
            format!("{}/{}", cell(row.agent_ticks), cell(row.agent_walks)),
            row.agent_process_cpu_ms_per_tick
        );
    }
}

fn print_side_by_side(side: &SideBySide) {
    println!(
        "\nside by side, {} sequential kills (kernel counted {}):",
        cell(side.tools.first().map(|t| t.kills)),
        side.kernel_counted
    );
    println!(
        "{:<16} {:>7} {:>10} {:>10} {:>10} {:>9} {:>15}",
        "tool", "caught", "p50 us", "p99 us", "max us", "RSS KiB", "names container"
    );
    println!("latency {}", side.latency_measures);
    println!(
        "load average (1, 5, 15 min) before {}, after {}",
        cell(&side.load_average_before),
        cell(&side.load_average_after)
    );
    for tool in &side.tools {
        let latency = tool.latency_us;
        println!(
            "{:<16} {:>7} {:>10} {:>10} {:>10} {:>9} {:>15}",
            tool.tool,
            tool.caught,
            cell(latency.map(|l| l.p50)),
            cell(latency.map(|l| l.p99)),
            cell(latency.map(|l| l.max)),
            tool.rss_kib,
            if tool.names_container { "yes" } else { "no" }
        );
    }
    for note in &side.notes {
        println!("note: {note}");
    }
}

/// The Kubernetes phase's one line.
fn print_kubernetes(k8s: &KubernetesNames) {
    let latency = k8s.latency_us;
    println!(
        "\nwith Kubernetes names ({} pods in the store, warm): {} of {} kills named, latency p50 {} us, p99 {} us, max {} us; RSS {} KiB (anonymous {}, file-backed {})",
        k8s.pods_in_store,
        k8s.named,
        k8s.kills,
        cell(latency.map(|l| l.p50)),
        cell(latency.map(|l| l.p99)),
        cell(latency.map(|l| l.max)),
        k8s.rss_kib_with_store,
        k8s.anon_kib_with_store,
        k8s.file_kib_with_store
    );
}

fn print_bursts(bursts: &[BurstSize]) {
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
    for b in bursts {
        for run in &b.runs {
            println!(
                "{:>9} {:>10} {:>8} {:>9} {:>6} {:>9} {:>7} {:>8.0} {:>10.0} {:>14}",
                b.processes,
                b.ring_buffer_bytes,
                run.kernel_counted,
                run.reported,
                run.lost,
                run.rss_kib,
                run.cpu_ms,
                run.kernel_kills_per_s,
                run.cpu_us_per_kill,
                cell(run.load_average.first())
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
    for b in bursts {
        let mut lost = String::new();
        let _ = write!(
            lost,
            "{}/{}/{}",
            cell(b.lost_min),
            cell(b.lost_median),
            cell(b.lost_max)
        );
        println!(
            "{:>9} {:>10} {:>20} {:>14} {:>22}",
            b.processes,
            b.ring_buffer_bytes,
            lost,
            format!("{}/{}", b.runs_with_loss, b.runs.len()),
            b.runs_reported_plus_lost_short_of_kernel
        );
    }
}

/// The churn phase's figures.
fn print_churn(churn: &Churn) {
    println!(
        "\nchurn (oom-probe run: state, history, metrics): {} kills counted by the kernel in {} \
         cgroups made and removed, {} reported or unobserved, in {:.0} s",
        churn.kernel_kills,
        churn.cgroups_created_and_removed,
        churn.reported_plus_unobserved,
        churn.churn_seconds
    );
    println!(
        "{:<24} {:>9} {:>10} {:>10}",
        "", "RSS KiB", "anon KiB", "file KiB"
    );
    for (label, rss) in [("idle", churn.idle), ("after, quiet again", churn.after)] {
        println!(
            "{:<24} {:>9} {:>10} {:>10}",
            label, rss.rss_kib, rss.anon_kib, rss.file_kib
        );
    }
    println!(
        "RSS after - idle: {} KiB (anonymous {} KiB); peak {} KiB; history file {} bytes",
        churn.rss_growth_kib, churn.anon_growth_kib, churn.peak_kib, churn.history_file_bytes
    );
}

/// The hostile phase: `/healthz` during the storm, RSS with slow clients.
fn print_hostile(h: &Hostile) {
    println!(
        "\nhostile (oom-probe run): {} kills counted by the kernel ({} reported) in {:.0} s; \
         /healthz {} asked, {} failed, latency µs {}",
        h.kernel_kills,
        h.reported,
        h.storm_seconds,
        h.healthz_during_storm,
        h.healthz_failed_during_storm,
        cell(h.healthz_during_storm_us)
    );
    println!(
        "{} slow clients ({} connected in {} ms): /healthz {} µs meanwhile; \
         {} closed by the agent {} s later",
        h.slow_clients,
        h.slow_clients_connected,
        h.slow_clients_open_ms,
        cell(h.healthz_with_slow_clients_us),
        h.slow_clients_closed_by_agent,
        h.past_header_timeout_seconds
    );
    println!(
        "{:<24} {:>9} {:>10} {:>10}",
        "", "RSS KiB", "anon KiB", "file KiB"
    );
    for (label, rss) in [
        ("before slow clients", h.rss_before_slow_clients),
        ("with them connected", h.rss_with_slow_clients),
        ("past header timeout", h.rss_after_slow_clients),
    ] {
        println!(
            "{:<24} {:>9} {:>10} {:>10}",
            label, rss.rss_kib, rss.anon_kib, rss.file_kib
        );
    }
    println!("peak {} KiB", h.peak_kib);
}

/// The hook costs: wall times side by side, then each program's runs.
fn print_hook_costs(h: &HookCosts) {
    println!(
        "\nhook costs, {} rounds (without and with oom-probe watch, alternating); \
         load average (1, 5, 15 min) before {}, after {}",
        h.rounds,
        cell(&h.load_average_before),
        cell(&h.load_average_after)
    );
    println!(
        "{:<8} {:>9} {:>15} {:>15} {:>16} {:>10} {:>11} {:>9}",
        "workload",
        "per round",
        "wall ms without",
        "wall ms with",
        "program",
        "runs",
        "ns per run",
        "ns/10k"
    );
    for w in &h.workloads {
        let mut first = true;
        for p in &w.programs {
            let (name, n, without, with, per_10k) = if first {
                (
                    w.workload,
                    w.per_round.to_string(),
                    cell(w.median_wall_ms_without),
                    cell(w.median_wall_ms_with),
                    cell(w.hook_ns_per_10k),
                )
            } else {
                (
                    "",
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                )
            };
            first = false;
            println!(
                "{:<8} {:>9} {:>15} {:>15} {:>16} {:>10} {:>11} {:>9}",
                name,
                n,
                without,
                with,
                p.program,
                p.runs,
                cell(p.mean_ns_per_run),
                per_10k
            );
        }
    }
    println!("wall times: medians; ns/10k: all programs' run time per 10,000 of the workload");
}

/// The pressure phase's table, on `machine`.
fn print_pressure(machine: &str, rows: &[PressureFootprint]) {
    println!("\nmemory_pressure watching ({machine}); CPU over the window, after start-up:");
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
    for p in rows {
        println!(
            "{:>8} {:>5} | {:>8} {:>7} {:>5} | {:>8} {:>7} {:>6} | {:>8} {:>7}",
            p.watched_cgroups,
            p.seconds,
            p.with_pressure.rss_kib,
            p.with_pressure.cpu_ms,
            p.with_pressure.open_fds,
            p.one_held_at_limit.rss_kib,
            p.one_held_at_limit.cpu_ms,
            p.one_held_at_limit.memory_pressure_events,
            p.no_pressure.rss_kib,
            p.no_pressure.cpu_ms
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::bench::{
        bursts::BurstRun,
        hook_costs::{ProgramCost, WorkloadCost, STATS_MEASURE},
        latency::ToolLatency,
        measure::Rss,
        pressure::PressureRun,
        startup::ToolStartup,
        stats::Percentiles,
    };

    /// Every `path: kind` of a JSON value, array elements merged (`[]`).
    fn key_paths(value: &Value, path: &str, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    key_paths(v, &format!("{path}.{key}"), out);
                }
            }
            Value::Array(items) => {
                for v in items {
                    key_paths(v, &format!("{path}[]"), out);
                }
            }
            Value::Number(n) if n.is_f64() => drop(out.insert(format!("{path}: float"))),
            Value::Number(_) => drop(out.insert(format!("{path}: int"))),
            Value::String(_) => drop(out.insert(format!("{path}: string"))),
            Value::Bool(_) => drop(out.insert(format!("{path}: bool"))),
            Value::Null => drop(out.insert(format!("{path}: null"))),
        }
    }

    /// Results with every phase, shaped like a full run's.
    fn full_results() -> Results {
        let latency = Some(Percentiles {
            p50: 1,
            p99: 2,
            max: 3,
        });
        let tool_startup = |tool: &str, binary: Option<&str>| ToolStartup {
            tool: tool.into(),
            binary: binary.map(String::from),
            startup_ms: Some(1.5),
            startup_ms_all: vec![1.5],
            hwm_kib: binary.map(|_| 9336.0),
            rss_kib_after_1s: binary.map(|_| 9336.0),
        };
        let run = BurstRun {
            processes: 50,
            ring_buffer_bytes: 4096,
            kernel_counted: 50,
            reported: 50,
            lost: 0,
            rss_kib: 1,
            cpu_ms: 1,
            killed_in_ms: 1,
            load_average: vec![0.5],
            kernel_kills_per_s: 1.5,
            cpu_us_per_kill: 1.5,
        };
        let pressure = || PressureRun {
            rss_kib: 1,
            cpu_ms: 1,
            open_fds: 1,
            memory_pressure_events: 0,
        };
        let rss = Rss {
            rss_kib: 1,
            anon_kib: 1,
            file_kib: 1,
        };
        Results {
            machine: "m".into(),
            date: "2026-12-07".into(),
            note: None,
            startup: Some(Startup {
                runs: 1,
                object: "o".into(),
                tools: vec![
                    tool_startup("oom-probe cold", Some("target/release/oom-probe")),
                    tool_startup("bpftrace", None),
                ],
            }),
            cgroups: Some(vec![CgroupCosts {
                cgroups_created: 1,
                cgroups_in_hierarchy: 1,
                lookup: "Handle".into(),
                named_by_handle: 1,
                name_by_handle_us: 1.5,
                name_by_handle_wall_us: 1.5,
                walk_found: true,
                name_by_walk_us: 1.5,
                full_reconcile_cpu_ms: 1.5,
                counters_read: 1,
                agent_tick_cpu_ms: 1.5,
                agent_ticks: 1.0,
                agent_walks: 1.0,
                agent_process_cpu_ms_per_tick: 1.5,
                agent_rss_kib: 1,
            }]),
            side_by_side: Some(SideBySide {
                kernel_counted: 1,
                latency_measures: "l",
                load_average_before: vec![0.5],
                load_average_after: vec![0.5],
                tools: vec![ToolLatency {
                    tool: "oom-probe",
                    kills: 1,
                    caught: 1,
                    latency_us: latency,
                    rss_kib: 1,
                    names_container: true,
                }],
                notes: vec!["n".into()],
            }),
            idle: Some(Idle {
                seconds: 1,
                rss_kib: 1,
                anon_kib: 1,
                file_kib: 1,
                cpu_ms: 1,
            }),
            kubernetes: Some(KubernetesNames {
                pods_in_store: 1,
                kills: 1,
                caught: 1,
                named: 1,
                latency_us: latency,
                rss_kib_with_store: 1,
                anon_kib_with_store: 1,
                file_kib_with_store: 1,
            }),
            churn: Some(Churn {
                cgroups_created_and_removed: 1,
                kernel_kills: 1,
                reported_plus_unobserved: 1,
                churn_seconds: 1.5,
                quiet_seconds: 1,
                idle: rss,
                after: rss,
                rss_growth_kib: 1,
                anon_growth_kib: 1,
                peak_kib: 1,
                history_file_bytes: 1,
            }),
            bursts: Some(vec![BurstSize {
                processes: 50,
                ring_buffer_bytes: 4096,
                lost_min: Some(0),
                lost_median: Some(0),
                lost_max: Some(0),
                runs_with_loss: 0,
                runs_reported_plus_lost_short_of_kernel: 0,
                runs: vec![run],
            }]),
            pressure: Some(vec![PressureFootprint {
                watched_cgroups: 1,
                seconds: 1,
                with_pressure: pressure(),
                one_held_at_limit: pressure(),
                no_pressure: pressure(),
            }]),
            hostile: Some(Hostile {
                storm_kills: 1,
                kernel_kills: 1,
                reported: 1,
                storm_seconds: 1.5,
                healthz_during_storm: 1,
                healthz_failed_during_storm: 0,
                healthz_during_storm_us: latency,
                slow_clients: 1,
                slow_clients_connected: 1,
                slow_clients_open_ms: 1,
                healthz_with_slow_clients_us: Some(1),
                slow_clients_closed_by_agent: 1,
                past_header_timeout_seconds: 1,
                rss_before_slow_clients: rss,
                rss_with_slow_clients: rss,
                rss_after_slow_clients: rss,
                peak_kib: 1,
            }),
            hook_costs: Some(HookCosts {
                rounds: 1,
                stats_measure: STATS_MEASURE,
                load_average_before: vec![0.5],
                load_average_after: vec![0.5],
                workloads: vec![WorkloadCost {
                    workload: "exits",
                    per_round: 1,
                    wall_ms_without: vec![1.5],
                    wall_ms_with: vec![1.5],
                    median_wall_ms_without: Some(1.5),
                    median_wall_ms_with: Some(1.5),
                    programs: vec![ProgramCost {
                        program: "p".into(),
                        runs: 1,
                        run_time_ns: 1,
                        mean_ns_per_run: Some(1.5),
                    }],
                    hook_ns_per_10k: 1.5,
                }],
            }),
        }
    }

    /// A full run writes the keys (and number kinds) of the committed full
    /// run built with `json!`, so old and new results compare.
    #[test]
    fn a_full_run_has_the_keys_of_the_committed_results() {
        let committed: Value =
            serde_json::from_str(include_str!("../../../docs/bench/2026-11-30-idle.json")).unwrap();
        let written: Value =
            serde_json::from_str(&to_sorted_json(&full_results()).unwrap()).unwrap();
        let (mut old, mut new) = (BTreeSet::new(), BTreeSet::new());
        key_paths(&committed, "", &mut old);
        key_paths(&written, "", &mut new);
        // Phases added after the committed run: their keys alone are new.
        const ADDED: [&str; 2] = [".hostile.", ".hook_costs."];
        let (added, unknown): (Vec<&String>, Vec<&String>) = new
            .difference(&old)
            .partition(|key| ADDED.iter().any(|phase| key.starts_with(phase)));
        assert_eq!(
            unknown,
            Vec::<&String>::new(),
            "keys the committed results lack"
        );
        assert_eq!(added.len(), 25 + 15, "{added:#?}");
        assert_eq!(
            old.difference(&new).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "keys no longer written"
        );
        assert_eq!(old.len(), 100);
    }

    /// The committed hook-costs runs have the keys (and number kinds) a
    /// run writes now; a null there is a program that never ran.
    #[test]
    fn the_hook_costs_runs_have_the_keys_written() {
        let written: Value =
            serde_json::from_str(&to_sorted_json(&full_results()).unwrap()).unwrap();
        let mut new = BTreeSet::new();
        key_paths(&written["hook_costs"], "", &mut new);
        assert_eq!(new.len(), 15);
        for text in [
            include_str!("../../../docs/bench/2026-12-07-hook-costs.json"),
            include_str!("../../../docs/bench/2026-12-07-hook-costs-first.json"),
        ] {
            let committed: Value = serde_json::from_str(text).unwrap();
            let mut old = BTreeSet::new();
            key_paths(&committed["hook_costs"], "", &mut old);
            old.retain(|key| !key.ends_with(": null"));
            assert_eq!(old, new);
        }
    }

    #[test]
    fn cells_print_as_json_with_null_as_a_dash() {
        assert_eq!(cell(9336.0), "9336.0");
        assert_eq!(cell(Some(37.6)), "37.6");
        assert_eq!(cell(None::<f64>), "-");
        assert_eq!(cell("v2"), "v2");
        assert_eq!(cell([3.66, 1.37]), "[3.66,1.37]");
    }

    #[test]
    fn writes_keys_sorted_and_leaves_out_phases_not_run() {
        let results = Results {
            machine: "2 x cpu".into(),
            date: "2026-12-07".into(),
            idle: Some(Idle {
                seconds: 5,
                rss_kib: 9000,
                anon_kib: 1000,
                file_kib: 8000,
                cpu_ms: 3,
            }),
            ..Results::default()
        };
        let text = to_sorted_json(&results).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["date", "idle", "machine"]);
        let idle = &text[text.find("\"idle\"").unwrap()..];
        assert!(idle.find("\"anon_kib\"").unwrap() < idle.find("\"seconds\"").unwrap());
        // A missing latency is null, as the committed results have it.
        assert_eq!(
            serde_json::to_value(None::<Percentiles>).unwrap(),
            Value::Null
        );
    }
}
