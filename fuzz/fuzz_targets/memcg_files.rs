//! The memory cgroup's files and /proc/<pid>/status: memory.stat (v1 and
//! v2 keys, unknown keys), memory.events / memory.events.local /
//! memory.oom_control (the `oom_kill` count), a task's VmRSS lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oom_probe::enrich::{explain, tasks};
use oom_probe_cgroupfs::counters;

fuzz_target!(|text: &str| {
    let stat = explain::parse_memcg_stat(text, Some(1 << 20));
    let _ = explain::stat_source(&stat, Some(1 << 30));
    let _ = explain::parse_memcg_stat(text, None);
    let _ = counters::parse_oom_kill(text);
    if let Some(task) = tasks::parse_status(1, text) {
        let _ = tasks::rss_total(&task);
    }
});
