//! `oom-probe check`: what this node offers and whether oom-probe can work
//! here, in words a person can act on (or JSON, for the VM test matrix).

mod constraint;

use std::{fs, path::Path};

use oom_probe_cgroupfs::Hierarchies;
use serde::Serialize;

use crate::probes::{
    self,
    kernel_offsets::{self, VMLINUX_BTF},
    SignalHook, VictimHook,
};

/// Everything `check` found out.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub kernel: String,
    pub root: bool,
    /// Why the kernel's BTF cannot be used; null when it can.
    pub btf_error: Option<String>,
    /// Offset groups this kernel's BTF lacks (their event fields are null).
    pub missing_offsets: Vec<String>,
    /// Where victim records get the victim's task (and so comm, uid, RSS,
    /// oom_score_adj, ns_pid, silent) from on this kernel; null without BTF.
    pub victim_task: Option<String>,
    pub hooks: Vec<HookStatus>,
    pub tracefs: Option<String>,
    pub cgroup_mode: String,
    pub memory_controller: Option<String>,
    /// Why oom-probe cannot work here; empty when it can.
    pub blockers: Vec<String>,
    /// Per event field, how good it is on this node and why.
    pub fields: Vec<FieldQuality>,
    /// `memory_pressure` on this node: what is watched, how, and why not.
    pub pressure: crate::pressure::PressureCapability,
}

/// How good one event field (or group of fields) is on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldQuality {
    /// The JSON field(s), as the README's field table names them.
    pub field: &'static str,
    pub quality: Quality,
    /// Where the value comes from here, or why it is missing.
    pub why: String,
}

/// `exact`: what the kernel had at the kill; `inferred`: worked out from
/// other facts (may be wrong in the cases `why` names); `unavailable`:
/// always null (or never emitted) on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Exact,
    Inferred,
    Unavailable,
}

impl Quality {
    fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Inferred => "inferred",
            Self::Unavailable => "unavailable",
        }
    }
}

/// What the field qualities depend on.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    /// `feature::*` bits the kernel's BTF allows (0 without BTF).
    pub features: u32,
    /// A decision hook (fentry or kprobe on oom_kill_process) attaches.
    pub decision_hook: Option<String>,
    /// A signal_generate hook attaches (userspace OOM killers).
    pub signal_hook: Option<String>,
    /// A sched_process_exit hook attaches (the end of a killer's SIGTERM).
    pub exit_hook: Option<String>,
    /// How many levels below the root the deepest memory cgroup is now
    /// (past 64 only said to be deeper); `None` when unreadable.
    pub memcg_depth: Option<usize>,
    /// The memory controller is on cgroup v2 (`memory.oom.group` exists).
    pub memory_v2: Option<bool>,
    /// A v2 hierarchy is mounted (for `cgroup_v2_id`).
    pub v2_mounted: bool,
}

/// Field by field, what this node gives.
pub fn field_qualities(facts: &NodeFacts) -> Vec<FieldQuality> {
    use oom_probe_common::feature;
    use Quality::*;
    let has = |bit: u32| facts.features & bit != 0;
    let by_btf = |bit: u32, field: &'static str, what: &str| FieldQuality {
        field,
        quality: if has(bit) { Exact } else { Unavailable },
        why: if has(bit) {
            format!("{what}, read in eBPF at the kill")
        } else {
            format!("this kernel's BTF lacks the offsets for {what}")
        },
    };
    let mut fields = vec![
        FieldQuality {
            field: "victim.pid, trigger.pid, trigger.comm",
            quality: Exact,
            why: "the mark_victim tracepoint".into(),
        },
        by_btf(
            feature::VICTIM_TASK_ARG,
            "victim.{tid,comm,uid,oom_score_adj}",
            "the victim task",
        ),
        by_btf(feature::NS_PID, "victim.ns_pid", "the pid-namespace pid"),
        by_btf(
            feature::RSS,
            "victim.{rss_bytes,total_vm_bytes}",
            "RSS and total_vm",
        ),
        by_btf(
            feature::MEMCG,
            "victim.cgroup_id, memcg.{usage_bytes,limit_bytes}",
            "the memory cgroup's page counters",
        ),
    ];
    fields.push(match (has(feature::CGROUP_V2), facts.v2_mounted) {
        (true, true) => FieldQuality {
            field: "victim.cgroup_v2_id",
            quality: Exact,
            why: "the task's default css_set, read in eBPF".into(),
        },
        (_, false) => FieldQuality {
            field: "victim.cgroup_v2_id",
            quality: Unavailable,
            why: "no cgroup v2 hierarchy is mounted".into(),
        },
        (false, true) => FieldQuality {
            field: "victim.cgroup_v2_id",
            quality: Unavailable,
            why: "this kernel's BTF lacks the css_set offsets".into(),
        },
    });
    fields.extend(constraint::constraint_fields(facts));
    match &facts.decision_hook {
        Some(hook) => {
            for field in ["oom_id", "victim.oom_points, oom_domain_bytes"] {
                fields.push(FieldQuality {
                    field,
                    quality: Exact,
                    why: format!("the kernel's OOM decision, via {hook}"),
                });
            }
        }
        None => {
            let why = "no decision hook (fentry and kprobe on oom_kill_process unavailable)";
            fields.extend([
                FieldQuality {
                    field: "oom_id",
                    quality: Inferred,
                    why: format!(
                        "{why}: one per kill, shared only where memory.oom.group made a group kill possible"
                    ),
                },
                FieldQuality {
                    field: "victim.oom_points, oom_domain_bytes",
                    quality: Unavailable,
                    why: format!("{why}: the badness score and domain size are its arguments"),
                },
            ]);
        }
    }
    fields.push(match facts.memory_v2 {
        Some(true) => FieldQuality {
            field: "group_kill",
            quality: Inferred,
            why: "memory.oom.group of the victim's cgroup and its ancestors, read after the kill"
                .into(),
        },
        Some(false) => FieldQuality {
            field: "group_kill",
            quality: Exact,
            why: "cgroup v1 has no memory.oom.group: always false".into(),
        },
        None => FieldQuality {
            field: "group_kill",
            quality: Unavailable,
            why: "no memory cgroup hierarchy is mounted".into(),
        },
    });
    fields.push(FieldQuality {
        field: "memcg_stat",
        quality: if facts.memory_v2.is_some() {
            Inferred
        } else {
            Unavailable
        },
        why: if facts.memory_v2.is_some() {
            "memory.stat read after the kill; memcg_stat_source says whether it fits the kill (its usage, the victim's RSS, its time)".into()
        } else {
            "no memory cgroup hierarchy is mounted".into()
        },
    });
    fields.push(FieldQuality {
        field: "silent",
        quality: if has(feature::NS_PID) {
            Inferred
        } else {
            Unavailable
        },
        why: if has(feature::NS_PID) {
            "against the container's init pid from the CRI runtime when it answers; else pid 1 of the victim's pid namespace where that is the container's own (a pod without shareProcessNamespace, a container outside Kubernetes), null for a pod that shares one or is unknown".into()
        } else {
            "this kernel's BTF lacks the pid-namespace offsets".into()
        },
    });
    fields.push(FieldQuality {
        field: "container, kubernetes.{pod_uid,container_id,qos_class}",
        quality: Exact,
        why: "the victim's cgroup path (null where it names no container)".into(),
    });
    fields.push(match (&facts.signal_hook, &facts.exit_hook) {
        (Some(hook), Some(exit)) if has(feature::SIGNAL_TASK_ARG) => FieldQuality {
            field: "userspace_kill events",
            quality: Exact,
            why: format!(
                "SIGKILLs from userspace OOM killers, via {hook}; their SIGTERMs that end the \
                 process (signal: SIGTERM), via {exit}"
            ),
        },
        (Some(hook), None) if has(feature::SIGNAL_TASK_ARG) => FieldQuality {
            field: "userspace_kill events",
            quality: Exact,
            why: format!(
                "SIGKILLs from userspace OOM killers, via {hook}; not their SIGTERMs (no \
                 sched_process_exit hook attaches)"
            ),
        },
        _ => FieldQuality {
            field: "userspace_kill events",
            quality: Unavailable,
            why: "no signal_generate hook attaches, or the BTF lacks its task offsets".into(),
        },
    });
    fields
}

/// Whether one hook loaded and attached, and if not, why.
#[derive(Debug, Serialize)]
pub struct HookStatus {
    pub hook: String,
    pub ok: bool,
    pub error: Option<String>,
}

/// Probes the node. Never fails: every problem becomes part of the report.
pub fn run() -> CheckReport {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut blockers = Vec::new();
    let btf = kernel_offsets::load_vmlinux_btf();
    let layout = btf.as_ref().ok().map(kernel_offsets::resolve);
    let missing_offsets = layout.as_ref().map_or_else(Vec::new, |l| l.missing.clone());
    let features = layout.as_ref().map_or(0, |l| l.offsets.features);
    let mut victim_task = layout.as_ref().map(|l| l.victim_task_source().to_string());
    let btf_error = btf.err().map(|e| format!("{e:#}"));
    if let Some(e) = &btf_error {
        blockers.push(e.clone());
    }
    if !root {
        blockers.push("not running as root: oom-probe needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE) to load eBPF".into());
    }
    let hooks = if btf_error.is_none() {
        hook_statuses(&mut blockers)
    } else {
        Vec::new()
    };
    if layout.as_ref().is_some_and(|l| l.victim_task_from_signal()) {
        let signal: Vec<String> = SignalHook::ALL.iter().map(|h| h.to_string()).collect();
        if !hooks.iter().any(|h| h.ok && signal.contains(&h.hook)) {
            if let Some(source) = &mut victim_task {
                source.push_str(
                    "; but no signal_generate hook attaches here, so victims' comm, uid, \
                     RSS, oom_score_adj, ns_pid, cgroup and silent are null",
                );
            }
        }
    }
    let hierarchies = Hierarchies::discover().unwrap_or_default();
    let memory_controller = hierarchies.memory_root().map(|p| {
        let version = if Some(p) == hierarchies.memory_v1.as_deref() {
            "v1"
        } else {
            "v2"
        };
        format!("{version} at {}", p.display())
    });
    let attached = |names: [&str; 2]| {
        hooks
            .iter()
            .find(|h| h.ok && names.contains(&h.hook.as_str()))
            .map(|h| h.hook.clone())
    };
    let facts = NodeFacts {
        features,
        decision_hook: attached(["fentry oom_kill_process", "kprobe oom_kill_process"]),
        signal_hook: attached(["tp_btf signal_generate", "raw_tracepoint signal_generate"]),
        exit_hook: attached([
            "tp_btf sched_process_exit",
            "raw_tracepoint sched_process_exit",
        ]),
        memcg_depth: hierarchies
            .memory_root()
            .and_then(constraint::deepest_cgroup),
        memory_v2: hierarchies
            .memory_root()
            .map(|p| Some(p) != hierarchies.memory_v1.as_deref()),
        v2_mounted: hierarchies.v2.is_some(),
    };
    let pressure = crate::pressure::capability(hierarchies.memory_root(), Path::new("/proc"));
    CheckReport {
        pressure,
        kernel,
        root,
        btf_error,
        missing_offsets,
        victim_task,
        fields: field_qualities(&facts),
        hooks,
        tracefs: tracefs_mount(),
        cgroup_mode: hierarchies.mode().to_string(),
        memory_controller,
        blockers,
    }
}

fn hook_statuses(blockers: &mut Vec<String>) -> Vec<HookStatus> {
    match probes::probe_all_hooks() {
        Ok(results) => {
            let statuses: Vec<_> = results
                .into_iter()
                .map(|(hook, result)| HookStatus {
                    hook: hook.to_string(),
                    ok: result.is_ok(),
                    error: result.err(),
                })
                .collect();
            let victim_names: Vec<String> = VictimHook::ALL.iter().map(|h| h.to_string()).collect();
            if !statuses
                .iter()
                .any(|s| s.ok && victim_names.contains(&s.hook))
            {
                blockers.push("neither tp_btf nor raw_tracepoint can attach to mark_victim".into());
            }
            statuses
        }
        Err(e) => {
            blockers.push(format!("{e:#}"));
            Vec::new()
        }
    }
}

fn tracefs_mount() -> Option<String> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|p| Path::new(p).join("events").is_dir())
        .map(String::from)
}

impl CheckReport {
    /// The report as a person reads it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<18} {v}\n"));
        line("kernel:", self.kernel.clone());
        line("running as root:", yes_no(self.root).into());
        line(
            "BTF:",
            match &self.btf_error {
                None => format!("{VMLINUX_BTF} present"),
                Some(e) => format!("unusable: {e}"),
            },
        );
        line(
            "kernel offsets:",
            if self.missing_offsets.is_empty() {
                "all resolved".into()
            } else {
                format!("missing {}", self.missing_offsets.join("; "))
            },
        );
        if let Some(source) = &self.victim_task {
            line("victim task:", source.clone());
        }
        for status in &self.hooks {
            let state = match &status.error {
                None => "ok".to_string(),
                Some(e) => format!("unavailable: {e}"),
            };
            line("hook:", format!("{:<28} {state}", status.hook));
        }
        line(
            "tracefs:",
            self.tracefs.clone().unwrap_or_else(|| {
                "not mounted (only kprobes without the kprobe PMU need it: \
                 mount -t tracefs nodev /sys/kernel/tracing)"
                    .into()
            }),
        );
        line("cgroup mode:", self.cgroup_mode.clone());
        line(
            "memory cgroup:",
            self.memory_controller
                .clone()
                .unwrap_or_else(|| "not mounted".into()),
        );
        let pressure = &self.pressure;
        line(
            "pressure cgroups:",
            match (&pressure.cgroups, &pressure.cgroups_error) {
                (Some(how), _) => how.clone(),
                (None, why) => format!(
                    "not watched: {}",
                    why.as_deref().unwrap_or("unknown reason")
                ),
            },
        );
        line(
            "pressure node:",
            match (&pressure.node, &pressure.node_error) {
                (Some(how), _) => how.clone(),
                (None, why) => format!(
                    "not watched (no scope: node events): {}",
                    why.as_deref().unwrap_or("unknown reason")
                ),
            },
        );
        line("pressure watches:", pressure.watched.clone());
        out.push_str("event fields on this node:\n");
        for f in &self.fields {
            out.push_str(&format!(
                "  {:<12} {}: {}\n",
                f.quality.as_str(),
                f.field,
                f.why
            ));
        }
        if self.blockers.is_empty() {
            let victim = self
                .hooks
                .iter()
                .find(|h| h.ok)
                .map(|h| h.hook.as_str())
                .unwrap_or("?");
            let degraded = self
                .fields
                .iter()
                .filter(|f| f.quality != Quality::Exact)
                .count();
            out.push_str(&format!(
                "verdict:           oom-probe works here (victims via {victim}); \
                 {degraded} field(s) inferred or unavailable, listed above\n"
            ));
        } else {
            out.push_str("verdict:           oom-probe cannot work here:\n");
            for b in &self.blockers {
                out.push_str(&format!("  - {b}\n"));
            }
        }
        out
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oom_probe_common::feature;

    fn quality(fields: &[FieldQuality], prefix: &str) -> Quality {
        fields
            .iter()
            .find(|f| f.field.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}"))
            .quality
    }

    #[test]
    fn without_a_decision_hook_the_decision_fields_are_inferred_or_unavailable() {
        let facts = NodeFacts {
            features: !0,
            decision_hook: None,
            signal_hook: Some("tp_btf signal_generate".into()),
            memory_v2: Some(false),
            v2_mounted: true,
            ..NodeFacts::default()
        };
        let fields = field_qualities(&facts);
        assert_eq!(quality(&fields, "constraint,"), Quality::Inferred);
        assert_eq!(quality(&fields, "constraint cpuset"), Quality::Unavailable);
        assert_eq!(quality(&fields, "oom_id"), Quality::Inferred);
        assert_eq!(quality(&fields, "victim.oom_points"), Quality::Unavailable);
        assert_eq!(quality(&fields, "group_kill"), Quality::Exact, "v1");
        assert_eq!(quality(&fields, "memcg_stat"), Quality::Inferred);
        assert_eq!(quality(&fields, "userspace_kill"), Quality::Exact);
        assert_eq!(quality(&fields, "victim.{rss"), Quality::Exact);
    }

    #[test]
    fn a_decision_hook_makes_them_exact_and_missing_btf_unavailable() {
        let facts = NodeFacts {
            features: !feature::RSS,
            decision_hook: Some("kprobe oom_kill_process".into()),
            signal_hook: None,
            memory_v2: Some(true),
            v2_mounted: true,
            ..NodeFacts::default()
        };
        let fields = field_qualities(&facts);
        assert_eq!(quality(&fields, "constraint"), Quality::Exact);
        assert_eq!(quality(&fields, "oom_id"), Quality::Exact);
        assert_eq!(quality(&fields, "victim.oom_points"), Quality::Exact);
        assert_eq!(quality(&fields, "group_kill"), Quality::Inferred, "v2");
        assert_eq!(quality(&fields, "victim.{rss"), Quality::Unavailable);
        assert_eq!(quality(&fields, "userspace_kill"), Quality::Unavailable);
    }
}
