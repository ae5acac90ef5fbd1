//! Counting tests over a `cargo test` run, on the host or read back from
//! a VM's console: the `test result:` line of every test binary added up,
//! and the names of the failing tests.

use std::process::Command;

use anyhow::Result;

/// Tests passed and failed over every test binary of a `cargo test` run.
#[derive(Default)]
pub(crate) struct TestCounts {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    /// The names of the failing tests (`test NAME ... FAILED` lines).
    pub(crate) failed_tests: Vec<String>,
    /// Why `cargo test` failed, when it did.
    pub(crate) failure: Option<String>,
}

/// Runs `cargo test`, echoing its output and adding up its `test result:`
/// lines, so the run ends on one total instead of the last binary's count.
/// A failing run is returned, not an error: its counts still add up.
pub(crate) fn run_counting_tests(command: &mut Command) -> Result<TestCounts> {
    eprintln!("xtask: running {command:?}");
    let mut child = command.stdout(std::process::Stdio::piped()).spawn()?;
    let mut counts = TestCounts::default();
    let stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    for line in std::io::BufRead::lines(stdout) {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            let (passed, failed) = passed_and_failed(result);
            counts.passed += passed;
            counts.failed += failed;
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            counts.failed_tests.push(name.to_string());
        }
    }
    let status = child.wait()?;
    if !status.success() {
        // A binary that failed to build or crashed has no result line.
        counts.failed = counts.failed.max(1);
        counts.failure = Some(format!("{command:?} failed with {status}"));
    }
    Ok(counts)
}

/// Passed and failed counts of one result line, the text after
/// `test result: ` (`ok. 5 passed; 0 failed; 0 ignored; ...`); 0 for a
/// count it lacks.
pub(crate) fn passed_and_failed(result: &str) -> (u64, u64) {
    (
        count_before(result, " passed"),
        count_before(result, " failed"),
    )
}

/// The number just before `label` in `ok. 5 passed; 0 failed; ...`.
fn count_before(result: &str, label: &str) -> u64 {
    result
        .split(';')
        .find_map(|part| {
            let part = part.trim();
            // The first part starts with the verdict: `ok. ` or `FAILED. `.
            let part = part.rsplit(". ").next().unwrap_or(part);
            part.strip_suffix(label)?.trim().parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts and failing names of a `cargo test`-like run that fails,
    /// from real output lines (passing and failing binaries).
    #[test]
    fn a_failing_run_keeps_its_counts_and_names() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo 'test a ... ok'; echo 'test b ... FAILED'; \
             echo 'test result: FAILED. 1 passed; 1 failed; 0 ignored'; \
             echo 'test result: ok. 3 passed; 0 failed; 0 ignored'; exit 101",
        ]);
        let counts = run_counting_tests(&mut command).unwrap();
        assert_eq!((counts.passed, counts.failed), (4, 1));
        assert_eq!(counts.failed_tests, ["b"]);
        assert!(counts.failure.unwrap().contains("101"));
    }

    #[test]
    fn reads_both_verdicts_and_missing_counts() {
        assert_eq!(
            passed_and_failed(
                "ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.1s"
            ),
            (5, 0)
        );
        assert_eq!(
            passed_and_failed("FAILED. 6 passed; 2 failed; 0 ignored"),
            (6, 2)
        );
        assert_eq!(passed_and_failed("ok. 0 passed; 0 failed"), (0, 0));
        assert_eq!(passed_and_failed("something else"), (0, 0));
    }

    #[test]
    fn a_passing_run_has_no_failure() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo 'test result: ok. 2 passed; 0 failed'"]);
        let counts = run_counting_tests(&mut command).unwrap();
        assert_eq!((counts.passed, counts.failed), (2, 0));
        assert!(counts.failure.is_none());
    }
}
