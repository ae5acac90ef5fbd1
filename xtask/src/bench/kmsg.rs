//! The /dev/kmsg reader the latency phase compares against, run as this
//! binary's hidden `kmsg-reader` task: node-problem-detector's rule
//! (`Killed process \d+ (.+) total-vm:...`) on every kernel record, printing
//! `<usec> <pid>` per OOM kill.

use std::{
    fs,
    io::{Read, Seek, SeekFrom, Write},
};

use anyhow::{Context, Result};

/// Reads /dev/kmsg from its end until killed.
pub fn reader() -> Result<()> {
    let mut kmsg = fs::File::open("/dev/kmsg").context("open /dev/kmsg")?;
    kmsg.seek(SeekFrom::End(0))?;
    let mut buffer = vec![0u8; 8192];
    let stdout = std::io::stdout();
    loop {
        // Each read returns one record.
        let n = match kmsg.read(&mut buffer) {
            Ok(n) => n,
            Err(err) if err.raw_os_error() == Some(libc::EPIPE) => continue, // overwritten records
            Err(err) => return Err(err.into()),
        };
        let record = String::from_utf8_lossy(&buffer[..n]);
        if let Some((usec, pid)) = oom_kill(&record) {
            writeln!(stdout.lock(), "{usec} {pid}")?;
        }
    }
}

/// `(usec, pid)` of a kmsg record (`prio,seq,usec,flags;message`) whose
/// message is an OOM kill's `Killed process <pid> (...) total-vm:...`.
fn oom_kill(record: &str) -> Option<(&str, &str)> {
    let (header, message) = record.split_once(';')?;
    let usec = header.split(',').nth(2)?;
    let rest = message.split("Killed process ").nth(1)?;
    let pid = rest.split_whitespace().next()?;
    rest.contains("total-vm:").then_some((usec, pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_kill_line_of_the_oom_report() {
        let record = "3,1234,98765432,-;Memory cgroup out of memory: Killed process 4242 \
            (bench-hog) total-vm:70000kB, anon-rss:16000kB, file-rss:0kB\n";
        assert_eq!(oom_kill(record), Some(("98765432", "4242")));
    }

    #[test]
    fn ignores_other_records() {
        assert_eq!(oom_kill("6,1,2,-;eth0: link up\n"), None);
        // "Killed process" without the kill's memory figures.
        assert_eq!(oom_kill("4,1,2,-;Killed process 42 (sh) on request"), None);
        assert_eq!(
            oom_kill("6,1,2,-;oom_reaper: reaped process 4242 (bench-hog)"),
            None
        );
        assert_eq!(oom_kill("Killed process 1 (x) total-vm:1kB"), None);
    }
}
