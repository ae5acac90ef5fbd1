//! `oom-probe check`: what this node offers and whether oom-probe can work
//! here, in words a person can act on (or JSON, for the VM test matrix).

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
    CheckReport {
        kernel,
        root,
        btf_error,
        missing_offsets,
        victim_task,
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
        if self.blockers.is_empty() {
            let victim = self
                .hooks
                .iter()
                .find(|h| h.ok)
                .map(|h| h.hook.as_str())
                .unwrap_or("?");
            out.push_str(&format!(
                "verdict:           oom-probe works here (victims via {victim})\n"
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
