//! The process exit codes of `oom-probe`, one meaning each, so a script can
//! tell a node that cannot run oom-probe from a bad flag or a failure at run
//! time. docs/configuration.md ("Exit codes") lists them for users.

/// Everything went as asked: `watch`/`run` stopped on a signal or after
/// `--count` kills, `history` printed, `check` found no blocker; also
/// `--help` and `--version`.
pub const SUCCESS: i32 = 0;

/// A run-time error: probes that cannot attach, a file that cannot be read
/// or written, a history store that cannot be opened... The message is the
/// last log line on stderr.
pub const FAILURE: i32 = 1;

/// The command line is wrong: an unknown flag or subcommand, a value that
/// does not parse (a duration without a unit it knows, an address...).
/// clap's own code for usage errors, kept so.
pub const USAGE: i32 = 2;

/// `oom-probe check` found at least one blocker: this node cannot run
/// oom-probe as it is (no BTF, not enough privilege...); the report says why.
pub const NODE_UNSUPPORTED: i32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_distinct_and_usage_is_clap_s() {
        let codes = [SUCCESS, FAILURE, USAGE, NODE_UNSUPPORTED];
        for (i, a) in codes.iter().enumerate() {
            for b in &codes[i + 1..] {
                assert_ne!(a, b);
            }
        }
        let usage = clap::Command::new("t")
            .try_get_matches_from(["t", "--no-such-flag"])
            .unwrap_err();
        assert_eq!(usage.exit_code(), USAGE);
    }
}
