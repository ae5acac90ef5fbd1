//! The one sentence a `memory_pressure` event carries (`explanation`): what
//! fills the memory, how close to the limit, how fast it grew, the biggest
//! process, for how long. Built from the event's own fields only.

use crate::{
    enrich::{explain, tasks},
    event::{PressureEvent, PressureScope},
};

/// One sentence: what fills the memory, how close to the limit, how fast it
/// grew, the biggest process, for how long.
pub fn explain_pressure(event: &PressureEvent) -> String {
    let what = match event.scope {
        PressureScope::Node => "node".to_string(),
        PressureScope::Cgroup => event
            .target
            .kubernetes
            .as_ref()
            .and_then(|k| {
                Some(format!(
                    "container {}/{}",
                    k.pod.as_ref()?,
                    k.container.as_ref()?
                ))
            })
            .or_else(|| event.target.cgroup_path.clone())
            .unwrap_or_else(|| "cgroup".into()),
    };
    let mut parts = Vec::new();
    match (event.memcg.usage_bytes, event.memcg.limit_bytes) {
        (Some(usage), Some(limit)) if limit > 0 => parts.push(format!(
            "{what} at {}% of its {} {} ({} used)",
            usage * 100 / limit,
            explain::size(limit),
            if event.scope == PressureScope::Node {
                "RAM"
            } else {
                "limit"
            },
            explain::size(usage)
        )),
        _ => parts.push(format!("{what} under memory pressure")),
    }
    if let Some(stat) = event.memcg_stat {
        let kinds = [
            ("anonymous memory", stat.anon.saturating_sub(stat.shmem)),
            ("page cache", stat.file.saturating_sub(stat.shmem)),
            ("tmpfs/shmem", stat.shmem),
            ("kernel memory", stat.kernel),
        ];
        if let Some((name, bytes)) = kinds.iter().max_by_key(|(_, b)| *b) {
            parts.push(format!("mostly {name} ({})", explain::size(*bytes)));
        }
    }
    if let Some(hits) = event.limit_hits.filter(|&h| h > 0) {
        parts.push(format!("limit hit {hits} times"));
    }
    if let Some(psi) = event.psi {
        parts.push(format!("stalled {:.0}% of the last 10 s", psi.some_avg10));
    }
    if let Some(growth) = event.growth_bytes_per_minute {
        if growth >= 0 {
            parts.push(format!(
                "grew {} in the last minute",
                explain::size(growth as u64)
            ));
        } else {
            parts.push(format!(
                "shrank {} in the last minute",
                explain::size(growth.unsigned_abs())
            ));
        }
    }
    if let Some(top) = event.tasks.as_ref().and_then(|t| t.first()) {
        parts.push(format!(
            "biggest process {} ({}) RSS {}",
            top.comm.as_deref().unwrap_or("?"),
            top.pid,
            explain::size(tasks::rss_total(top))
        ));
    }
    parts.push(format!("for {:.0} s so far", event.duration_seconds));
    parts.join(", ")
}
