//! What a node shortage is. PSI alone is no shortage: any task stalled on
//! memory counts in the node's PSI, a container reclaiming at its own limit
//! included, while the node has most of its RAM free. The node is short
//! when `MemAvailable` is below a share of `MemTotal` (`/proc/meminfo`), or
//! when its allocations entered direct reclaim since the last read (the
//! `allocstall_*` counters of `/proc/vmstat` rose). The kernel counts
//! `allocstall` only for reclaim on behalf of the page allocator, never for
//! a cgroup's limit (`if (!cgroup_reclaim(sc))` in `do_try_to_free_pages`,
//! mm/vmscan.c); kswapd alone, with plenty available, is no shortage.
//!
//! [`read`] reads the two files; [`ShortageJudge`] decides, fed readings.

use std::{fs, path::Path};

use crate::event::NodeShortage;

/// The node's memory at a read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeMemory {
    /// `MemTotal`, bytes.
    pub total_bytes: Option<u64>,
    /// `MemAvailable`, bytes.
    pub available_bytes: Option<u64>,
    /// The sum of `/proc/vmstat`'s `allocstall_*` (one per zone; a single
    /// `allocstall` before 4.8): how often allocations entered direct
    /// reclaim of the node since boot.
    pub allocstalls: Option<u64>,
}

/// Reads `<procfs>/meminfo` and `<procfs>/vmstat`; what cannot be read is
/// `None`.
pub fn read(procfs: &Path) -> NodeMemory {
    let (total_bytes, available_bytes) = fs::read_to_string(procfs.join("meminfo"))
        .map(|text| parse_meminfo(&text))
        .unwrap_or_default();
    let allocstalls = fs::read_to_string(procfs.join("vmstat"))
        .ok()
        .and_then(|text| parse_allocstalls(&text));
    NodeMemory {
        total_bytes,
        available_bytes,
        allocstalls,
    }
}

/// `(MemTotal, MemAvailable)` in bytes from `/proc/meminfo`'s text.
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let kib = |key: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    (
        kib("MemTotal").map(|k| k * 1024),
        kib("MemAvailable").map(|k| k * 1024),
    )
}

/// The sum of the `allocstall*` lines of `/proc/vmstat`'s text; `None`
/// without any.
pub fn parse_allocstalls(text: &str) -> Option<u64> {
    text.lines()
        .filter(|line| line.starts_with("allocstall"))
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .fold(None, |sum, n| Some(sum.unwrap_or(0) + n))
}

/// True when `memory`'s `MemAvailable` is below `percent` of `MemTotal`
/// (false when either is unknown).
pub fn mem_available_low(memory: NodeMemory, percent: u8) -> bool {
    match (memory.available_bytes, memory.total_bytes) {
        (Some(available), Some(total)) if total > 0 => {
            u128::from(available) * 100 < u128::from(total) * u128::from(percent)
        }
        _ => false,
    }
}

/// Decides, read after read, whether the node is short; remembers the
/// direct-reclaim counter between reads.
#[derive(Clone, Debug, Default)]
pub struct ShortageJudge {
    last_allocstalls: Option<u64>,
}

impl ShortageJudge {
    /// The shortage `memory` shows, or `None`: `MemAvailable` below
    /// `available_below_percent` of `MemTotal`, or direct reclaims since the
    /// previous reading (the first reading only remembers the counter).
    pub fn observe(
        &mut self,
        memory: NodeMemory,
        available_below_percent: u8,
    ) -> Option<NodeShortage> {
        let direct_reclaims = match (memory.allocstalls, self.last_allocstalls) {
            (Some(now), Some(before)) => now.saturating_sub(before),
            _ => 0,
        };
        if memory.allocstalls.is_some() {
            self.last_allocstalls = memory.allocstalls;
        }
        let mem_available_low = mem_available_low(memory, available_below_percent);
        (mem_available_low || direct_reclaims > 0).then_some(NodeShortage {
            mem_available_low,
            direct_reclaims,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn memory(available_mib: u64, allocstalls: u64) -> NodeMemory {
        NodeMemory {
            total_bytes: Some(1024 * MIB),
            available_bytes: Some(available_mib * MIB),
            allocstalls: Some(allocstalls),
        }
    }

    #[test]
    fn parses_meminfo_and_sums_the_allocstall_lines() {
        let meminfo = "MemTotal:        1004412 kB\nMemFree:  10 kB\nMemAvailable:     912 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            (Some(1004412 * 1024), Some(912 * 1024))
        );
        assert_eq!(parse_meminfo("garbage"), (None, None));
        // 6.18's lines, with the pgscan and pgsteal around them.
        let vmstat = "pgfault 10\nallocstall_dma 0\nallocstall_dma32 3\nallocstall_normal 940\n\
                      allocstall_movable 18191\nallocstall_device 0\npgscan_direct 2752294\n";
        assert_eq!(parse_allocstalls(vmstat), Some(19134));
        assert_eq!(parse_allocstalls("allocstall 5\n"), Some(5), "before 4.8");
        assert_eq!(parse_allocstalls("pgfault 10\n"), None);
    }

    #[test]
    fn mem_available_below_the_share_of_mem_total_is_a_shortage() {
        let mut judge = ShortageJudge::default();
        // 10 % of 1024 MiB is 102.4 MiB.
        assert_eq!(judge.observe(memory(103, 0), 10), None);
        assert_eq!(
            judge.observe(memory(102, 0), 10),
            Some(NodeShortage {
                mem_available_low: true,
                direct_reclaims: 0
            })
        );
        // 0 %: MemAvailable never counts.
        assert_eq!(judge.observe(memory(0, 0), 0), None);
        // Unreadable: no shortage.
        assert_eq!(judge.observe(NodeMemory::default(), 10), None);
    }

    #[test]
    fn direct_reclaim_since_the_last_read_is_a_shortage_even_with_memory_available() {
        let mut judge = ShortageJudge::default();
        assert_eq!(
            judge.observe(memory(900, 19_000), 10),
            None,
            "the first reading only remembers the counter"
        );
        assert_eq!(judge.observe(memory(900, 19_000), 10), None, "no rise");
        assert_eq!(
            judge.observe(memory(900, 19_012), 10),
            Some(NodeShortage {
                mem_available_low: false,
                direct_reclaims: 12
            })
        );
        // A reading without vmstat keeps the counter of the one before.
        let mut gone = memory(900, 0);
        gone.allocstalls = None;
        assert_eq!(judge.observe(gone, 10), None);
        assert_eq!(
            judge
                .observe(memory(900, 19_013), 10)
                .map(|s| s.direct_reclaims),
            Some(1)
        );
    }
}
