//! Writes events for people and for machines: one JSON object per line
//! (flushed per event, for log shippers and pipes) or a readable table.

use std::io::{self, Write};

use crate::{
    event::{Constraint, Event, KillKind, OomKillEvent, UnobservedKills},
    text,
};

/// How `watch` prints events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per line.
    Json,
    /// Aligned columns for a person at a terminal.
    Table,
}

/// An event sink over any writer.
pub struct Output<W: Write> {
    format: OutputFormat,
    writer: W,
    header_written: bool,
}

/// The table's columns, `(title, width)`; the last is not padded. Rows fit
/// in [`TABLE_WIDTH`] columns: long values are cut with `…` (full values are
/// in the JSON output).
const COLUMNS: [(&str, usize); 8] = [
    ("TIME(UTC)", 12),
    ("PID", 7),
    ("COMM", 16),
    ("RSS MiB", 8),
    ("LIMIT MiB", 9),
    ("SILENT", 6),
    ("POD", 28),
    ("CONTAINER/CGROUP", 24),
];

/// The width every table line fits in, in characters.
pub const TABLE_WIDTH: usize = 120;

impl<W: Write> Output<W> {
    /// A sink that has printed nothing yet.
    pub fn new(format: OutputFormat, writer: W) -> Self {
        Self {
            format,
            writer,
            header_written: false,
        }
    }

    /// Writes and flushes one event, so it is visible at once even in a pipe.
    pub fn write(&mut self, event: &Event) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => {
                // One write(2) per line: a crash never leaves half an event
                // in a pipe behind a buffer that flushed early.
                let mut line = serde_json::to_vec(event)?;
                line.push(b'\n');
                self.writer.write_all(&line)?;
            }
            OutputFormat::Table => {
                if !self.header_written {
                    let titles = COLUMNS.map(|(title, _)| title.to_string());
                    writeln!(self.writer, "{}", line(&titles))?;
                    self.header_written = true;
                }
                let row = match event {
                    Event::OomKill(kill) => table_row(kill, KillKind::OomKill),
                    Event::UserspaceKill(kill) => table_row(kill, KillKind::UserspaceKill),
                    Event::OomKillUnobserved(missed) => unobserved_row(missed),
                    Event::Eviction(evicted) => format!(
                        "{} pod {}/{} evicted by the kubelet: {}",
                        clock_time(&evicted.time),
                        evicted.kubernetes.namespace.as_deref().unwrap_or("?"),
                        evicted.kubernetes.pod.as_deref().unwrap_or("?"),
                        evicted.message.as_deref().unwrap_or("")
                    ),
                    Event::MemoryPressure(pressure) => format!(
                        "{} memory pressure: {}",
                        clock_time(&pressure.time),
                        pressure.explanation
                    ),
                    Event::MemoryPressureEnd(end) => format!(
                        "{} memory pressure ended: {} after {:.0} s ({} event(s))",
                        clock_time(&end.time),
                        end.target.cgroup_path.as_deref().unwrap_or("node"),
                        end.duration_seconds,
                        end.events
                    ),
                };
                // Every value may come from a process or the API: nothing
                // that could steer the terminal is written as is. Rows
                // without columns (pressure, unobserved, eviction) are cut
                // to the table's width too (a hostile cgroup path made a
                // pressure row wider than the terminal).
                let row = text::terminal_safe(&row);
                writeln!(self.writer, "{}", cut(&row, TABLE_WIDTH))?;
            }
        }
        self.writer.flush()
    }
}

fn unobserved_row(e: &UnobservedKills) -> String {
    format!(
        "{} {} kill(s) the kernel counted but oom-probe did not see, in {}",
        clock_time(&e.time),
        e.count,
        e.cgroup_path.as_deref().unwrap_or("?")
    )
}

/// `12:09:21.845` from an RFC 3339 UTC time (the date is in the JSON).
fn clock_time(time: &str) -> &str {
    time.split_once('T')
        .map_or(time, |(_, clock)| clock.trim_end_matches('Z'))
}

/// The cells padded to their columns' widths, each cut to fit.
fn line(cells: &[String; 8]) -> String {
    let mut out = String::new();
    for (i, (cell, (_, width))) in cells.iter().zip(COLUMNS).enumerate() {
        let cell = text::terminal_safe(cell);
        let cell = cut(&cell, width);
        if i + 1 == COLUMNS.len() {
            out.push_str(&cell);
        } else if i == 3 || i == 4 {
            out.push_str(&format!("{cell:>width$}  "));
        } else {
            out.push_str(&format!("{cell:<width$} "));
        }
    }
    out.trim_end().to_string()
}

/// `text` cut to `width` characters, its end replaced by `…` when cut.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let kept: String = text.chars().take(width - 1).collect();
        format!("{kept}…")
    }
}

/// `text`'s last `width` characters, its start replaced by `…` when cut:
/// the end of a cgroup path names it.
fn tail(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width {
        text.to_string()
    } else {
        let kept: String = text.chars().skip(n - (width - 1)).collect();
        format!("…{kept}")
    }
}

/// A container id as `docker ps` shows it: the first 12 hex digits.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The pod as `namespace/name`, else its uid; `-` outside Kubernetes.
fn pod_cell(e: &OomKillEvent) -> String {
    let Some(k8s) = &e.kubernetes else {
        return "-".into();
    };
    match (&k8s.namespace, &k8s.pod, &k8s.pod_uid) {
        (Some(ns), Some(pod), _) => format!("{ns}/{pod}"),
        (None, Some(pod), _) => pod.clone(),
        (_, None, Some(uid)) => format!("uid {}", uid.get(..8).unwrap_or(uid)),
        _ => "?".into(),
    }
}

/// The container's name, else its runtime and short id, else (a host
/// process) the end of its cgroup path.
fn container_cell(e: &OomKillEvent) -> String {
    let width = COLUMNS[7].1;
    if let Some(name) = e.kubernetes.as_ref().and_then(|k| k.container.as_ref()) {
        return name.clone();
    }
    if let Some(container) = &e.container {
        let id = short_id(&container.id);
        return match &container.runtime {
            Some(runtime) => format!("{runtime} {id}"),
            None => id.to_string(),
        };
    }
    if e.kubernetes.is_some() {
        return "-".into();
    }
    e.victim
        .cgroup_path
        .as_deref()
        .map_or_else(|| "?".into(), |path| tail(path, width))
}

fn table_row(e: &OomKillEvent, kind: KillKind) -> String {
    let dash = || String::from("-");
    let mib = |bytes: u64| format!("{:.1}", bytes as f64 / (1024.0 * 1024.0));
    let rss = e
        .victim
        .rss_bytes
        .map(|r| mib(r.anon + r.file + r.shmem))
        .unwrap_or_else(dash);
    line(&[
        clock_time(&e.time).to_string(),
        e.victim.pid.to_string(),
        e.victim.comm.clone().unwrap_or_else(|| "?".into()),
        rss,
        limit_cell(e, kind),
        e.silent
            .map_or("?", |s| if s { "yes" } else { "no" })
            .to_string(),
        pod_cell(e),
        container_cell(e),
    ])
}

/// The LIMIT column: the limit that ran out, not the victim's own. For a
/// memcg OOM the limit of `oom_memcg` (the cgroup that ran out, which may be
/// an ancestor of the victim's), in MiB; `node`, `cpuset` or `mempolicy`
/// when the node or its memory nodes ran out; `?` when the kernel's OOM did
/// not say (constraint or `oom_memcg` unknown); `-` for a userspace kill (a
/// killer's choice, no limit ran out).
fn limit_cell(e: &OomKillEvent, kind: KillKind) -> String {
    let unknown = || String::from("?");
    match e.constraint {
        Some(Constraint::Memcg) => e
            .oom_memcg
            .as_ref()
            .and_then(|m| m.limit_bytes)
            .map_or_else(unknown, |b| format!("{:.1}", b as f64 / (1024.0 * 1024.0))),
        Some(Constraint::Global) => "node".into(),
        Some(other) => other.as_str().into(),
        None if kind == KillKind::UserspaceKill => "-".into(),
        None => unknown(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Memcg, Rss, Trigger, Victim};

    fn event() -> Event {
        Event::OomKill(Box::new(OomKillEvent {
            time: "2026-11-23T10:00:00.000Z".into(),
            kernel_time_ns: 1,
            node: "n1".into(),
            victim: Victim {
                pid: 42,
                tid: 42,
                ns_pid: Some(7),
                comm: Some("gunicorn".into()),
                uid: Some(0),
                oom_score_adj: Some(0),
                rss_bytes: Some(Rss {
                    anon: 3 << 20,
                    file: 0,
                    shmem: 1 << 20,
                }),
                total_vm_bytes: Some(10 << 20),
                cgroup_id: Some(9),
                cgroup_path: Some("/kubepods/pod1/abc".into()),
                cgroup_v2_id: None,
                oom_points: None,
                comm_hex: None,
            },
            trigger: Trigger {
                pid: 42,
                comm: "gunicorn".into(),
                comm_hex: None,
                tid: 42,
                cgroup_id: None,
                cgroup_path: None,
                kubernetes: None,
            },
            memcg: Memcg {
                usage_bytes: Some(4 << 20),
                limit_bytes: Some(4 << 20),
            },
            constraint: None,
            constraint_source: None,
            oom_memcg: None,
            memcg_stat: None,
            explanation: None,
            oom_id: 1,
            group_kill: false,
            kubernetes: None,
            silent: Some(true),
            oom_domain_bytes: None,
            container: None,
            memcg_stat_source: None,
            tasks: None,
            tasks_total: None,
            tasks_source: None,
            pressure_before: None,
            signal: None,
            exit: None,
            event_id: String::new(),
            replayed: false,
        }))
    }

    #[test]
    fn json_is_one_object_per_line() {
        let mut out = Output::new(OutputFormat::Json, Vec::new());
        out.write(&event()).unwrap();
        out.write(&event()).unwrap();
        let text = String::from_utf8(out.writer).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let parsed: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(parsed["victim"]["comm"], "gunicorn");
        assert_eq!(parsed["silent"], true);
        assert_eq!(parsed["constraint"], serde_json::Value::Null);
    }

    #[test]
    fn table_has_one_header_and_a_row_per_event() {
        let mut out = Output::new(OutputFormat::Table, Vec::new());
        out.write(&event()).unwrap();
        out.write(&event()).unwrap();
        let text = String::from_utf8(out.writer).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("TIME"));
        assert!(lines[1].contains("gunicorn") && lines[1].contains("4.0"));
        assert!(lines[1].contains("/kubepods/pod1/abc") && lines[1].contains("yes"));
    }

    #[test]
    fn rows_fit_120_columns_with_pod_and_container_and_no_control_bytes() {
        use crate::event::{Container, Kubernetes};
        let Event::OomKill(mut kill) = event() else {
            unreachable!()
        };
        let id = "5c3d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
        kill.victim.comm = Some("\\x1b[2J\\x1b[H fake".into());
        kill.victim.cgroup_path = Some(format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
            "0f8a1c2e_4b3d_4e5f_9a6b_7c8d9e0f1a2b"
        ));
        kill.kubernetes = Some(Kubernetes {
            namespace: Some("a-rather-long-namespace-name".into()),
            pod: Some("web-frontend-7d9f8c6b5-x2x4q".into()),
            container: Some("app\u{1b}[31m".into()),
            ..Kubernetes::default()
        });
        kill.container = Some(Container {
            id: id.into(),
            runtime: Some("containerd".into()),
        });
        let mut out = Output::new(OutputFormat::Table, Vec::new());
        out.write(&Event::OomKill(kill.clone())).unwrap();
        kill.kubernetes = None;
        out.write(&Event::OomKill(kill.clone())).unwrap();
        kill.container = None;
        kill.victim.cgroup_path = Some(format!("/system.slice/{}.service", "x".repeat(150)));
        out.write(&Event::OomKill(kill)).unwrap();
        let text = String::from_utf8(out.writer).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        for line in &lines {
            assert!(
                line.chars().count() <= TABLE_WIDTH,
                "{} wide: {line}",
                line.chars().count()
            );
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
        assert!(
            lines[1].contains("a-rather-long-namespace-nam…"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("app\\x1b[31m"), "{}", lines[1]);
        assert!(lines[2].contains("containerd 5c3d1e0f9a8b"), "{}", lines[2]);
        assert!(
            lines[3].ends_with("xxxx.service") && lines[3].contains('…'),
            "{}",
            lines[3]
        );
    }

    /// Two kills unobserved in the cgroup at `path`.
    fn unobserved(path: &str) -> Event {
        Event::OomKillUnobserved(UnobservedKills {
            time: "t".into(),
            node: "n".into(),
            cgroup_id: 5,
            cgroup_path: Some(path.into()),
            count: 2,
            event_id: String::new(),
            replayed: false,
            reason: Default::default(),
        })
    }

    #[test]
    fn limit_is_the_limit_that_ran_out_not_the_victims() {
        use crate::event::{ConstraintSource, OomMemcg};
        let Event::OomKill(mut kill) = event() else {
            unreachable!()
        };
        // The victim's own cgroup has no limit; its pod's (an ancestor) ran out.
        kill.memcg.limit_bytes = None;
        kill.constraint = Some(Constraint::Memcg);
        kill.constraint_source = Some(ConstraintSource::PageCounters);
        kill.oom_memcg = Some(OomMemcg {
            cgroup_id: 8,
            path: Some("/kubepods/pod1".into()),
            usage_bytes: Some(48 << 20),
            limit_bytes: Some(48 << 20),
        });
        // TIME PID COMM RSS LIMIT ...: the comm has no spaces here.
        let cell = |kill: &OomKillEvent, kind| {
            let row = table_row(kill, kind);
            row.split_whitespace().nth(4).unwrap().to_string()
        };
        assert_eq!(cell(&kill, KillKind::OomKill), "48.0");
        kill.constraint = Some(Constraint::Global);
        kill.oom_memcg = None;
        assert_eq!(cell(&kill, KillKind::OomKill), "node");
        kill.constraint = None;
        kill.constraint_source = None;
        assert_eq!(cell(&kill, KillKind::OomKill), "?");
        assert_eq!(cell(&kill, KillKind::UserspaceKill), "-");
    }

    #[test]
    fn unobserved_kills_get_a_row_too() {
        let mut out = Output::new(OutputFormat::Table, Vec::new());
        out.write(&unobserved("/kubepods/pod1")).unwrap();
        let text = String::from_utf8(out.writer).unwrap();
        assert!(text.lines().nth(1).unwrap().contains("2 kill(s)"), "{text}");
    }

    /// A row without columns whose cgroup path is longer than the terminal
    /// is cut to the table's width, like the columns' cells.
    #[test]
    fn a_long_path_in_a_row_without_columns_is_cut_to_the_width() {
        let mut out = Output::new(OutputFormat::Table, Vec::new());
        out.write(&unobserved(&format!("/kubepods/{}", "1a".repeat(100))))
            .unwrap();
        let text = String::from_utf8(out.writer).unwrap();
        let row = text.lines().nth(1).unwrap();
        assert_eq!(row.chars().count(), TABLE_WIDTH, "{row}");
        assert!(row.ends_with('…') && row.contains("2 kill(s)"), "{row}");
    }
}
