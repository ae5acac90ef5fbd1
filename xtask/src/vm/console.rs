//! Reading a VM's serial console: vm-init's marker lines (the protocol is in
//! the `vm-init` crate), the `oom-probe check --json` block between them and
//! the test harness's `test result:` lines. Kernel messages share the
//! console, so markers are looked for anywhere in a line and kernel lines are
//! kept out of the check block.

use serde_json::Value;
use vm_init::{CHECK_BEGIN, CHECK_END, FAIL, KERNEL_MARKER, PASS, RESULT_MARKER};

/// What one VM reported on its console.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    /// Release of the running kernel, from vm-init's first line; its
    /// presence proves the kernel booted into vm-init.
    pub kernel: Option<String>,
    /// What `oom-probe check --json` found, when it printed valid JSON.
    pub check: Option<Check>,
    /// vm-init's verdict: `Ok` for PASS, the reason for FAIL.
    pub verdict: Option<Result<(), String>>,
    /// Tests passed, over every test executable.
    pub passed: u64,
    /// Tests failed, over every test executable.
    pub failed: u64,
}

/// The parts of `oom-probe check --json` that the summary shows.
#[derive(Debug, PartialEq)]
pub struct Check {
    /// `v1`, `v2` or `hybrid`.
    pub cgroup_mode: String,
    /// The hooks that loaded and attached.
    pub available: Vec<String>,
    /// The hooks that did not.
    pub unavailable: Vec<String>,
    /// Where victim records get the victim's task from (`victim_task`).
    pub victim_task: Option<String>,
}

/// Reads a whole console log.
pub fn parse(console: &str) -> Report {
    let mut report = Report::default();
    let mut check_block: Option<String> = None;
    for line in console.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(block) = &mut check_block {
            if line.contains(CHECK_END) {
                report.check = parse_check(block);
                check_block = None;
            } else if !is_printk(line) {
                block.push_str(line);
                block.push('\n');
            }
        } else if line.contains(CHECK_BEGIN) {
            check_block = Some(String::new());
        } else if let Some(release) = after(line, KERNEL_MARKER) {
            report.kernel = Some(release.trim().to_string());
        } else if let Some(verdict) = after(line, RESULT_MARKER) {
            report.verdict = Some(parse_verdict(verdict));
        } else if let Some(result) = after(line, "test result: ") {
            let (passed, failed) = crate::test_counts::passed_and_failed(result);
            report.passed += passed;
            report.failed += failed;
        }
    }
    report
}

/// True for a kernel message (`[   12.345678] …`) rather than program output.
pub fn is_printk(line: &str) -> bool {
    line.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .is_some_and(|(stamp, _)| stamp.trim().parse::<f64>().is_ok())
}

/// Kernel messages that are shown on the terminal; the log file keeps all.
const KERNEL_LINES_SHOWN: &[&str] = &[
    "Linux version",
    "Run /init",
    "Killed process",
    "Kernel panic",
    "BUG:",
    "WARNING:",
    "Oops",
    "Failed to execute",
    "Power down",
];

/// True for the lines the terminal shows: all program output and the kernel
/// messages that tell how the boot and the OOM kills went.
pub fn worth_echoing(line: &str) -> bool {
    !is_printk(line) || KERNEL_LINES_SHOWN.iter().any(|k| line.contains(k))
}

/// `line` without terminal escape sequences and control characters: the
/// firmware clears the screen on the serial console, which must not reach the
/// terminal or the log.
pub fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters… final byte in @..~; other escapes: one char.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| &line[at + marker.len()..])
}

fn parse_verdict(verdict: &str) -> Result<(), String> {
    let verdict = verdict.trim();
    if verdict == PASS {
        return Ok(());
    }
    let reason = verdict.strip_prefix(FAIL).unwrap_or(verdict).trim();
    Err(if reason.is_empty() {
        "FAIL without a reason".into()
    } else {
        reason.to_string()
    })
}

fn parse_check(json: &str) -> Option<Check> {
    let report: Value = serde_json::from_str(json).ok()?;
    let (mut available, mut unavailable) = (Vec::new(), Vec::new());
    for hook in report["hooks"].as_array()? {
        let name = hook["hook"].as_str()?.to_string();
        if hook["ok"] == true {
            available.push(name);
        } else {
            unavailable.push(name);
        }
    }
    Some(Check {
        cgroup_mode: report["cgroup_mode"].as_str()?.to_string(),
        available,
        unavailable,
        victim_task: report["victim_task"].as_str().map(String::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org)\r
[    1.234567] Run /init as init process\r
OOM-PROBE-VM-KERNEL: 6.1.0-56-cloud-amd64\r
OOM-PROBE-VM-CHECK-BEGIN\r
{\r
  \"kernel\": \"6.1.0-56-cloud-amd64\",\r
[    2.000000] some kernel message in the middle\r
  \"hooks\": [\r
    {\"hook\": \"tp_btf\", \"ok\": true, \"error\": null},\r
    {\"hook\": \"kprobe\", \"ok\": false, \"error\": \"no\"},\r
    {\"hook\": \"raw_tracepoint\", \"ok\": true, \"error\": null}\r
  ],\r
  \"cgroup_mode\": \"v2\",\r
  \"victim_task\": \"mark_victim's task argument\"\r
}\r
OOM-PROBE-VM-CHECK-END\r
OOM-PROBE-VM-TEST: capture\r
test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.1s\r
OOM-PROBE-VM-TEST: context\r
test result: FAILED. 6 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 20.0s\r
OOM-PROBE-VM-RESULT: FAIL context exited with exit status: 101\r
";

    #[test]
    fn reads_every_marker() {
        assert_eq!(
            parse(CONSOLE),
            Report {
                kernel: Some("6.1.0-56-cloud-amd64".into()),
                check: Some(Check {
                    cgroup_mode: "v2".into(),
                    available: vec!["tp_btf".into(), "raw_tracepoint".into()],
                    unavailable: vec!["kprobe".into()],
                    victim_task: Some("mark_victim's task argument".into()),
                }),
                verdict: Some(Err("context exited with exit status: 101".into())),
                passed: 11,
                failed: 2,
            }
        );
    }

    #[test]
    fn pass_and_missing_markers() {
        let report = parse("[ 0.1] Linux version 6.12\nOOM-PROBE-VM-RESULT: PASS\n");
        assert_eq!(report.verdict, Some(Ok(())));
        assert_eq!(report.kernel, None);
        assert_eq!(parse("Kernel panic - not syncing").verdict, None);
    }

    #[test]
    fn a_marker_after_a_kernel_message_on_the_same_line_counts() {
        let report = parse("[    3.1] random: crng init doneOOM-PROBE-VM-RESULT: PASS\r\n");
        assert_eq!(report.verdict, Some(Ok(())));
    }

    #[test]
    fn broken_check_json_is_none() {
        let report = parse("OOM-PROBE-VM-CHECK-BEGIN\n{ not json\nOOM-PROBE-VM-CHECK-END\n");
        assert_eq!(report.check, None);
    }

    #[test]
    fn strips_escape_sequences() {
        assert_eq!(
            printable("Probing EDD... ok\x1b[?7l\x1b[2J[    0.0] Linux version\r"),
            "Probing EDD... ok[    0.0] Linux version"
        );
        assert_eq!(printable("a\tb\x1bc"), "a\tb");
    }

    #[test]
    fn filters_kernel_noise_only() {
        assert!(is_printk("[    0.123456] ACPI: bus type PCI registered"));
        assert!(!is_printk("[ok] not a timestamp"));
        assert!(!worth_echoing(
            "[    0.123456] ACPI: bus type PCI registered"
        ));
        assert!(worth_echoing(
            "[   12.5] Memory cgroup out of memory: Killed process 93 (oom-hog)"
        ));
        assert!(worth_echoing("test capture::x ... ok"));
    }
}
