//! What `--pressure-*` asked for: the rate limit, the end of an episode, the
//! notifications to register and which cgroups to watch.

use std::{fmt, time::Duration};

/// What `--pressure-*` asked for.
#[derive(Clone, Debug)]
pub struct PressureOptions {
    /// At most one `memory_pressure` per cgroup per this long.
    pub interval: Duration,
    /// The pressure ended after this long without a notification.
    pub clear_after: Duration,
    /// cgroup v1 `memory.pressure_level` level that counts.
    pub v1_level: V1Level,
    /// PSI trigger: stall time per window (v2 cgroups and the node).
    pub psi_stall: Duration,
    /// PSI trigger window (500 ms to 10 s).
    pub psi_window: Duration,
    /// Watch the leaf memory cgroups with a limit under these paths
    /// (relative to the memory hierarchy root); empty: container cgroups.
    pub cgroups: Vec<String>,
    /// Watch the node's `/proc/pressure/memory`.
    pub node: bool,
    /// The node is short of memory when `MemAvailable` is below this
    /// percent of `MemTotal` (or its allocations entered direct reclaim);
    /// a node `memory_pressure` needs a shortage as well as PSI.
    pub node_available_percent: u8,
    /// The safety walk of the hierarchy: this often, in case a directory
    /// notification was missed. New and removed cgroups are learnt from
    /// inotify at once; the walk is the net under it.
    pub rescan: Duration,
}

impl Default for PressureOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            clear_after: Duration::from_secs(10),
            v1_level: V1Level::Medium,
            psi_stall: Duration::from_millis(100),
            psi_window: Duration::from_secs(1),
            cgroups: Vec::new(),
            node: true,
            node_available_percent: 10,
            rescan: Duration::from_secs(600),
        }
    }
}

impl PressureOptions {
    /// The PSI trigger asked for, `(stall µs, window µs)`, as written to
    /// `memory.pressure`.
    pub fn psi_trigger_us(&self) -> (u64, u64) {
        (
            self.psi_stall.as_micros() as u64,
            self.psi_window.as_micros() as u64,
        )
    }
}

/// A cgroup v1 `memory.pressure_level` level (the kernel's
/// `vmpressure_levels`): how hard reclaim must work before the eventfd is
/// signalled. `low`: any reclaim; `medium` (the default): swapping or
/// dropping caches in earnest; `critical`: about to OOM.
// The variants have no doc comments: clap would print them in `--help`,
// which lists the values on one line, as before the enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum V1Level {
    Low,
    Medium,
    Critical,
}

impl V1Level {
    /// The word written to `cgroup.event_control`.
    pub fn as_str(self) -> &'static str {
        match self {
            V1Level::Low => "low",
            V1Level::Medium => "medium",
            V1Level::Critical => "critical",
        }
    }
}

impl fmt::Display for V1Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn v1_levels_are_the_kernels_words_on_the_command_line_and_in_the_file() {
        for level in V1Level::value_variants() {
            let flag = level.to_possible_value().unwrap();
            assert_eq!(flag.get_name(), level.as_str());
            assert_eq!(level.to_string(), level.as_str());
        }
        assert_eq!(V1Level::from_str("critical", false), Ok(V1Level::Critical));
        assert!(V1Level::from_str("high", false).is_err());
    }

    #[test]
    fn the_default_trigger_is_100_ms_in_1_s() {
        assert_eq!(
            PressureOptions::default().psi_trigger_us(),
            (100_000, 1_000_000)
        );
    }
}
