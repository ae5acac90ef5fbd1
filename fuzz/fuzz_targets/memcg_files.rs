//! The memory cgroup's files and /proc/<pid>/status and stat: memory.stat
//! (v1 and v2 keys, unknown keys) and the judge of a late snapshot on it,
//! memory.events / memory.events.local / memory.oom_control (the
//! `oom_kill` count), a task's VmRSS lines, a task's start time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oom_probe::enrich::{explain, snapshot, tasks};
use oom_probe_cgroupfs::counters;

fuzz_target!(|text: &str| {
    let stat = explain::parse_memcg_stat(text, Some(1 << 20));
    for (usage, time_ns) in [(Some(1 << 30), 2_000_000_001), (None, 1), (Some(0), u64::MAX)] {
        let at_kill = snapshot::AtKill {
            usage,
            victim_anon: Some(1 << 29),
            time_ns: 1,
        };
        let read = snapshot::Snapshot {
            stat,
            usage_now: Some(1 << 30),
            time_ns,
            victim_exited: true,
        };
        let fit = snapshot::judge(&at_kill, &read);
        let _ = (fit.source(), fit.reason());
    }
    let _ = explain::parse_memcg_stat(text, None);
    let _ = counters::parse_oom_kill(text);
    let _ = snapshot::parse_stat(text);
    if let Some(task) = tasks::parse_status(1, text) {
        let _ = tasks::rss_total(&task);
    }
});
