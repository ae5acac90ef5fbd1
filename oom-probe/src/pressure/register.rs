//! Registering a watch's notification with the kernel: a v2 cgroup's or
//! the node's PSI trigger (the nearest one an opener without
//! `CAP_SYS_RESOURCE` may write when the kernel refuses the asked-for
//! window, said once and kept for every later trigger), a v1 cgroup's
//! `memory.pressure_level` eventfd, and the node's fallback to the agent's
//! own `/proc` when the host's is mounted read-only.

use std::path::{Path, PathBuf};

use super::{
    cgroupfs::{self, Notifier},
    options::{PressureOptions, V1Level},
};

/// Registers notifications with the flags asked for, and remembers what
/// the kernel took.
pub struct Registrar {
    v2: bool,
    v1_level: V1Level,
    /// The PSI trigger written, `(stall µs, window µs)`: the options', or
    /// the nearest one an opener without `CAP_SYS_RESOURCE` may write.
    psi: (u64, u64),
    /// A cgroup's notification could not be registered (said once).
    failed: bool,
}

impl Registrar {
    /// Registers as `options` ask, on a v2 (`v2`) or v1 memory hierarchy.
    pub fn new(options: &PressureOptions, v2: bool) -> Self {
        Self {
            v2,
            v1_level: options.v1_level,
            psi: options.psi_trigger_us(),
            failed: false,
        }
    }

    /// The PSI trigger in use, `(stall µs, window µs)`.
    pub fn psi(&self) -> (u64, u64) {
        self.psi
    }

    /// The node's PSI trigger on `<procfs>/pressure/memory`, or on the
    /// agent's own `/proc/pressure/memory` when that one is read-only;
    /// returns it and the file it is on. `None` (said) when neither takes
    /// a trigger.
    pub fn node(&mut self, procfs: &Path) -> Option<(Notifier, PathBuf)> {
        let file = procfs.join("pressure/memory");
        let err = match self.trigger(&file) {
            Ok(notifier) => return Some((notifier, file)),
            Err(err) => err,
        };
        let Some(own) = cgroupfs::own_proc_fallback(&file, &err) else {
            tracing::warn!(
                "node memory pressure is not watched: no PSI trigger on {}",
                cgroupfs::psi_trigger_error(&file, &err)
            );
            return None;
        };
        match self.trigger(&own) {
            Ok(notifier) => {
                tracing::info!(
                    "{} is read-only (EROFS): the node's memory pressure is watched through \
                     {} instead (node PSI is one for the whole machine)",
                    file.display(),
                    own.display()
                );
                Some((notifier, own))
            }
            Err(own_err) => {
                tracing::warn!(
                    "no PSI trigger on {} either: {}",
                    own.display(),
                    cgroupfs::psi_trigger_error(&own, &own_err)
                );
                tracing::warn!(
                    "node memory pressure is not watched: no PSI trigger on {}",
                    cgroupfs::psi_trigger_error(&file, &err)
                );
                None
            }
        }
    }

    /// The notification of the cgroup at `path` (below the root), whose
    /// directory is `dir`: its PSI trigger (v2) or `memory.pressure_level`
    /// eventfd (v1). `None` when the kernel refuses it (said the first
    /// time).
    pub fn cgroup(&mut self, path: &str, dir: &Path) -> Option<Notifier> {
        let registered = if self.v2 {
            self.trigger(&dir.join("memory.pressure"))
        } else {
            cgroupfs::v1_pressure_level(dir, self.v1_level.as_str())
        };
        match registered {
            Ok(notifier) => Some(notifier),
            Err(err) => {
                if !self.failed {
                    tracing::warn!(
                        "cannot watch memory pressure of {path} ({err}); cgroups where this \
                         fails are not watched"
                    );
                    self.failed = true;
                }
                None
            }
        }
    }

    /// Writes the PSI trigger to `file` (a `memory.pressure` or the node's).
    /// When the kernel refuses its window to an opener without
    /// `CAP_SYS_RESOURCE`, writes the nearest one it takes instead, says so
    /// once, and keeps it for every later trigger.
    fn trigger(&mut self, file: &Path) -> std::io::Result<Notifier> {
        let (notifier, taken) = cgroupfs::psi_trigger_or_nearest(file, self.psi)?;
        if taken != self.psi {
            let ((stall, window), (fit_stall, fit_window)) = (self.psi, taken);
            tracing::warn!(
                "PSI trigger \"some {stall} {window}\" refused (EINVAL): oom-probe lacks \
                 CAP_SYS_RESOURCE, and since Linux 6.5 an unprivileged trigger's window must \
                 be a multiple of 2 s; using \"some {fit_stall} {fit_window}\" (the same \
                 share of stalled time, notified at most every {} s); grant CAP_SYS_RESOURCE \
                 for --pressure-psi-window",
                fit_window / 1_000_000
            );
            self.psi = taken;
        }
        Ok(notifier)
    }
}
