//! Writes events for people and for machines: one JSON object per line
//! (flushed per event, for log shippers and pipes) or a readable table.

use std::io::{self, Write};

use crate::event::{Event, OomKillEvent, UnobservedKills};

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

const TABLE_HEADER: &str = "TIME                     PID     NS_PID  COMM             RSS(A/F/S MiB)      LIMIT MiB  SILENT  CGROUP";

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
                serde_json::to_writer(&mut self.writer, event)?;
                self.writer.write_all(b"\n")?;
            }
            OutputFormat::Table => {
                if !self.header_written {
                    writeln!(self.writer, "{TABLE_HEADER}")?;
                    self.header_written = true;
                }
                let row = match event {
                    Event::OomKill(kill) | Event::UserspaceKill(kill) => table_row(kill),
                    Event::OomKillUnobserved(missed) => unobserved_row(missed),
                    Event::Eviction(evicted) => format!(
                        "{:<24} pod {}/{} evicted by the kubelet: {}",
                        evicted.time,
                        evicted.kubernetes.namespace.as_deref().unwrap_or("?"),
                        evicted.kubernetes.pod.as_deref().unwrap_or("?"),
                        evicted.message.as_deref().unwrap_or("")
                    ),
                };
                writeln!(self.writer, "{row}")?;
            }
        }
        self.writer.flush()
    }
}

fn unobserved_row(e: &UnobservedKills) -> String {
    format!(
        "{:<24} {} kill(s) the kernel counted but oom-probe did not see, in {}",
        e.time,
        e.count,
        e.cgroup_path.as_deref().unwrap_or("?")
    )
}

fn table_row(e: &OomKillEvent) -> String {
    let dash = || String::from("-");
    let mib = |bytes: u64| format!("{:.1}", bytes as f64 / (1024.0 * 1024.0));
    let rss = e
        .victim
        .rss_bytes
        .map(|r| format!("{}/{}/{}", mib(r.anon), mib(r.file), mib(r.shmem)))
        .unwrap_or_else(dash);
    format!(
        "{:<24} {:<7} {:<7} {:<16} {:<19} {:<10} {:<7} {}",
        e.time,
        e.victim.pid,
        e.victim.ns_pid.map(|p| p.to_string()).unwrap_or_else(dash),
        e.victim.comm.as_deref().unwrap_or("?"),
        rss,
        e.memcg
            .limit_bytes
            .map(mib)
            .unwrap_or_else(|| String::from("none")),
        e.silent
            .map(|s| if s { "yes" } else { "no" })
            .unwrap_or("?"),
        e.victim.cgroup_path.as_deref().unwrap_or("?"),
    )
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
            },
            trigger: Trigger {
                pid: 42,
                comm: "gunicorn".into(),
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
            tasks: None,
            tasks_total: None,
            tasks_source: None,
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
        assert!(lines[1].contains("gunicorn") && lines[1].contains("3.0/0.0/1.0"));
        assert!(lines[1].contains("/kubepods/pod1/abc") && lines[1].contains("yes"));
    }

    #[test]
    fn unobserved_kills_get_a_row_too() {
        let mut out = Output::new(OutputFormat::Table, Vec::new());
        out.write(&Event::OomKillUnobserved(UnobservedKills {
            time: "t".into(),
            node: "n".into(),
            cgroup_id: 5,
            cgroup_path: Some("/kubepods/pod1".into()),
            count: 2,
        }))
        .unwrap();
        let text = String::from_utf8(out.writer).unwrap();
        assert!(text.lines().nth(1).unwrap().contains("2 kill(s)"), "{text}");
    }
}
