//! The console protocol between `vm-init` (PID 1 in the test VM) and
//! `cargo xtask vm-test` (the host). Both sides use these constants, so a
//! marker renamed on one side cannot silently stop matching on the other.

/// First line vm-init prints, followed by the running kernel's release; the
/// host also times the boot by it.
pub const KERNEL_MARKER: &str = "OOM-PROBE-VM-KERNEL: ";
/// Line before the output of `oom-probe check --json`.
pub const CHECK_BEGIN: &str = "OOM-PROBE-VM-CHECK-BEGIN";
/// Line after the output of `oom-probe check --json`.
pub const CHECK_END: &str = "OOM-PROBE-VM-CHECK-END";
/// Printed before each test executable runs, followed by its name.
pub const TEST_MARKER: &str = "OOM-PROBE-VM-TEST: ";
/// The one final verdict line: followed by [`PASS`] or by `FAIL <reason>`.
pub const RESULT_MARKER: &str = "OOM-PROBE-VM-RESULT: ";
/// The verdict word of a run in which everything passed.
pub const PASS: &str = "PASS";
/// The verdict word of a failed run; a one-line reason follows it.
pub const FAIL: &str = "FAIL";

/// Where vm-test puts the test executables in the initramfs.
pub const TESTS_DIR: &str = "/tests";
/// Where vm-test puts `oom-probe` in the initramfs.
pub const OOM_PROBE_BIN: &str = "/bin/oom-probe";
/// Where vm-test puts the memory hog of the end-to-end tests.
pub const OOM_HOG_BIN: &str = "/bin/oom-hog";

/// The verdict line for `failures` (none means PASS), on a single line so
/// that the host can always parse it.
pub fn result_line(failures: &[String]) -> String {
    if failures.is_empty() {
        return format!("{RESULT_MARKER}{PASS}");
    }
    let reason = failures.join("; ").replace(['\n', '\r'], " ");
    format!("{RESULT_MARKER}{FAIL} {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_failure_is_pass() {
        assert_eq!(result_line(&[]), "OOM-PROBE-VM-RESULT: PASS");
    }

    #[test]
    fn failures_are_joined_on_one_line() {
        let failures = ["mount /proc: EPERM".to_string(), "two\nlines".to_string()];
        assert_eq!(
            result_line(&failures),
            "OOM-PROBE-VM-RESULT: FAIL mount /proc: EPERM; two lines"
        );
    }
}
