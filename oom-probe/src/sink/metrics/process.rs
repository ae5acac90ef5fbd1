//! The standard `process_*` metrics of Prometheus client libraries (CPU,
//! resident and virtual memory, file descriptors, threads, start time),
//! read from /proc/self at each scrape, as client_golang's process
//! collector does; prometheus-client ships none.

use std::fs;

use rustix::process::{getrlimit, Resource};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// The fields of /proc/self/stat the metrics use, in the kernel's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// User and system CPU time (fields 14, 15), in clock ticks.
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    /// Threads (field 20).
    pub threads: u64,
    /// Start after boot (field 22), in clock ticks.
    pub start_ticks: u64,
    /// Virtual memory size (field 23), in bytes.
    pub vsize_bytes: u64,
    /// Resident set size (field 24), in pages.
    pub rss_pages: u64,
}

/// Parses a `/proc/<pid>/stat` line; `None` if it is not one. The name in
/// parentheses may hold spaces and parentheses: fields are counted after the
/// last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let (_, rest) = line.rsplit_once(')')?;
    // rest starts at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The boot time (`btime`, Unix seconds) from /proc/stat's text.
pub fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Registered once in the metrics registry; reads /proc/self when scraped.
/// A file that cannot be read leaves its metrics out of that scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// A soft resource limit, as a float; unlimited is 2^64-1, as client_golang
/// reports it.
fn soft_limit(resource: Resource) -> f64 {
    getrlimit(resource).current.unwrap_or(u64::MAX) as f64
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let value = unsafe { libc::sysconf(name) };
    (value > 0).then_some(value as u64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
        };
        let stat = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|line| parse_stat(&line));
        let ticks = sysconf(libc::_SC_CLK_TCK);
        if let Some(stat) = stat {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                (stat.rss_pages * sysconf(libc::_SC_PAGESIZE).unwrap_or(4096)) as f64,
            )?;
            gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stat.vsize_bytes as f64,
            )?;
            gauge(
                "process_threads",
                "Number of OS threads in the process.",
                stat.threads as f64,
            )?;
            let btime = fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|text| parse_btime(&text));
            if let (Some(btime), Some(ticks)) = (btime, ticks) {
                gauge(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    btime as f64 + stat.start_ticks as f64 / ticks as f64,
                )?;
            }
        }
        gauge(
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            soft_limit(Resource::As),
        )?;
        if let Ok(entries) = fs::read_dir("/proc/self/fd") {
            gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                entries.count() as f64,
            )?;
        }
        gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            soft_limit(Resource::Nofile),
        )?;
        if let (Some(stat), Some(ticks)) = (stat, ticks) {
            let cpu =
                ConstCounter::new((stat.utime_ticks + stat.stime_ticks) as f64 / ticks as f64);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        // A real line of a process named "a) (b c", fields 1 to 52.
        let line = "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 1500 0 3 0 \
                    250 75 0 0 20 0 7 0 123456 104857600 2560 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime_ticks: 250,
                stime_ticks: 75,
                threads: 7,
                start_ticks: 123456,
                vsize_bytes: 104857600,
                rss_pages: 2560,
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn btime_is_read_from_proc_stat() {
        let text = "cpu  1 2 3\nintr 5\nctxt 9\nbtime 1764979200\nprocesses 77\n";
        assert_eq!(parse_btime(text), Some(1_764_979_200));
        assert_eq!(parse_btime("cpu 1\n"), None);
    }
}
