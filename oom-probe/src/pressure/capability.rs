//! What `oom-probe check` says about memory pressure watching on this node:
//! each notification the watcher would register (a cgroup's, the node's)
//! is registered once with the default flags and dropped again, and the
//! outcome put in words.

use std::path::Path;

use super::{cgroupfs, options::PressureOptions};

/// What `oom-probe check` says about memory pressure watching on this node,
/// with the default `--pressure-*` flags. Every field is a sentence or
/// null; nothing here fails.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PressureCapability {
    /// How memory cgroups are watched (v1 `memory.pressure_level` eventfds,
    /// or v2 PSI triggers on `memory.pressure` and `memory.events` by
    /// inotify, with the trigger the kernel took); null when they cannot be.
    pub cgroups: Option<String>,
    /// Why memory cgroups cannot be watched; null when they can.
    pub cgroups_error: Option<String>,
    /// The node's `/proc/pressure/memory` trigger the kernel took; null
    /// when it took none.
    pub node: Option<String>,
    /// Why the node is not watched (`scope: node` events never come); null
    /// when it is.
    pub node_error: Option<String>,
    /// Which cgroups are watched and which are not.
    pub watched: String,
}

/// Writes the default PSI trigger to `file` and closes it again: the
/// trigger the kernel took (`some <stall us> <window us>` and why, when it
/// is not the default), or why none, in words and as the error the kernel
/// gave.
fn try_psi_trigger(
    file: &Path,
    options: &PressureOptions,
) -> Result<String, (String, std::io::Error)> {
    let (stall, window) = options.psi_trigger_us();
    match cgroupfs::psi_trigger_or_nearest(file, (stall, window)) {
        Ok((_, taken)) if taken == (stall, window) => Ok(format!("\"some {stall} {window}\"")),
        Ok((_, (fit_stall, fit_window))) => Ok(format!(
            "\"some {fit_stall} {fit_window}\" (the {} ms window is refused: no \
             CAP_SYS_RESOURCE, and Linux 6.5+ gives unprivileged triggers 2 s \
             windows only)",
            window / 1000
        )),
        Err(err) => Err((cgroupfs::psi_trigger_error(file, &err), err)),
    }
}

/// Probes memory pressure watching: the memory hierarchy at `memory_root`
/// (v1 mount or v2 root; `None`: no memory controller) and
/// `<procfs>/pressure/memory`. Registers a notification on each and drops
/// it again.
pub fn capability(memory_root: Option<&Path>, procfs: &Path) -> PressureCapability {
    let options = PressureOptions::default();
    let (cgroups, cgroups_error) = match memory_root {
        None => (
            None,
            Some("no memory cgroup controller is mounted".to_string()),
        ),
        Some(root) if cgroupfs::memory_hierarchy(root) => {
            match try_psi_trigger(&root.join("memory.pressure"), &options) {
                Ok(trigger) => (
                    Some(format!(
                        "cgroup v2: PSI trigger {trigger} on each cgroup's memory.pressure, \
                         memory.events max/high by inotify"
                    )),
                    None,
                ),
                Err((why, _)) => (None, Some(why)),
            }
        }
        Some(root) => match cgroupfs::v1_pressure_level(root, options.v1_level.as_str()) {
            Ok(_) => (
                Some(format!(
                    "cgroup v1: memory.pressure_level \"{}\" eventfds (cgroup.event_control), \
                     memory.failcnt rising; no PSI per cgroup on v1, so psi fields are null",
                    options.v1_level
                )),
                None,
            ),
            Err(err) => (
                None,
                Some(format!(
                    "{}: cannot register a memory.pressure_level eventfd ({err})",
                    root.display()
                )),
            ),
        },
    };
    let node_file = procfs.join("pressure/memory");
    let (node, node_error) = match try_psi_trigger(&node_file, &options) {
        Ok(trigger) => (
            Some(format!("PSI trigger {trigger} on {}", node_file.display())),
            None,
        ),
        // The same fallback as the watcher's: the host /proc mounted
        // read-only, the agent's own /proc (node PSI is global).
        Err((why, err)) => match cgroupfs::own_proc_fallback(&node_file, &err) {
            Some(own) => match try_psi_trigger(&own, &options) {
                Ok(trigger) => (
                    Some(format!(
                        "PSI trigger {trigger} on {} ({} is read-only; node PSI is global, \
                         the same through any procfs)",
                        own.display(),
                        node_file.display()
                    )),
                    None,
                ),
                Err((own_why, _)) => (None, Some(format!("{why}; {own_why}"))),
            },
            None => (None, Some(why)),
        },
    };
    PressureCapability {
        cgroups,
        cgroups_error,
        node,
        node_error,
        watched: "the memory cgroups of containers (paths naming a container id) that have a \
                  limit of their own, or with --pressure-cgroup the leaf cgroups with a limit \
                  under those paths, found at once (inotify on the hierarchy's directories, a \
                  safety walk every 10 min); not watched: cgroups without a limit, \
                  pod and slice parents, anything else"
            .into(),
    }
}
