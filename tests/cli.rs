//! The command line as scripts and people use it: exit codes, one duration
//! syntax, `--version` with the git revision, shell completions and the man
//! page, log lines without colour codes unless a person reads them. No root
//! needed: nothing here loads eBPF.

use std::{
    path::Path,
    process::{Command, Output},
};

use oom_probe::exit_code;
use oom_probe_test_support::oom_probe_bin;

fn run(args: &[&str]) -> Output {
    Command::new(oom_probe_bin()).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_bad_command_line_exits_2_a_run_time_error_1() {
    for args in [
        &["watch", "--no-such-flag"][..],
        &["no-such-command"],
        &["watch", "--reconcile-interval", "30 parsecs"],
        &["completions", "tcsh"],
    ] {
        let output = run(args);
        assert_eq!(
            output.status.code(),
            Some(exit_code::USAGE),
            "{args:?}: {}",
            text(&output)
        );
    }
    // A history store that does not exist: the flags are fine, the run fails.
    let missing = run(&[
        "history",
        "--history-file",
        "/nonexistent/oom-probe/history.redb",
    ]);
    assert_eq!(
        missing.status.code(),
        Some(exit_code::FAILURE),
        "{}",
        text(&missing)
    );
}

#[test]
fn every_duration_flag_takes_humantime_and_bare_seconds() {
    // Values are parsed in order: a flag given before a bad `--listen`
    // whose value parses lets clap reach `--listen` and refuse it instead.
    let sentinel = "invalid value 'bad' for '--listen";
    for flag in [
        "--reconcile-interval",
        "--metrics-series-ttl",
        "--retain-deleted-pods",
        "--history-max-age",
        "--pressure-interval",
        "--pressure-clear-after",
        "--pressure-psi-stall",
        "--pressure-psi-window",
    ] {
        for good in ["500ms", "30s", "2m", "6h", "1h 30m", "30", "0.5"] {
            let output = run(&["watch", flag, good, "--listen", "bad"]);
            let said = text(&output);
            assert!(
                said.contains(sentinel),
                "{flag} {good:?} was refused: {said}"
            );
        }
        let output = run(&["watch", flag, "5 parsecs", "--listen", "bad"]);
        let said = text(&output);
        assert!(
            said.contains(&format!("invalid value '5 parsecs' for '{flag}"))
                && said.contains("a bare number is seconds"),
            "{flag} took 5 parsecs: {said}"
        );
    }
    for (since, taken) in [("90", true), ("90m", true), ("90 parsecs", false)] {
        let output = run(&["history", "--since", since, "--output", "bad"]);
        let said = text(&output);
        assert_eq!(
            said.contains("invalid value 'bad' for '--output"),
            taken,
            "--since {since}: {said}"
        );
    }
}

/// Whether `revision` is a commit of the source tree (12 hex digits,
/// `-dirty` allowed); `None` when git cannot say (no git, a tarball).
fn is_a_commit(revision: &str) -> Option<bool> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(repo)
            .output()
            .ok()
            .map(|o| o.status.success())
    };
    if git(&["rev-parse", "--git-dir"]) != Some(true) {
        return None;
    }
    let commit = revision.trim_end_matches("-dirty");
    Some(commit.len() == 12 && git(&["cat-file", "-e", &format!("{commit}^{{commit}}")])?)
}

#[test]
fn version_names_the_git_revision() {
    let output = run(&["--version"]);
    assert_eq!(output.status.code(), Some(exit_code::SUCCESS));
    let version = String::from_utf8(output.stdout).unwrap();
    let revision = version
        .strip_prefix(&format!(
            "oom-probe {} (revision ",
            env!("CARGO_PKG_VERSION")
        ))
        .and_then(|rest| rest.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("{version:?}"));
    // The binary may be older than HEAD (`cargo test` does not rebuild it),
    // so any commit of the tree will do; `unknown` only without git.
    match is_a_commit(revision) {
        Some(commit) => assert!(commit, "{revision} is not a commit of this tree"),
        None => assert_eq!(revision, "unknown"),
    }
}

#[test]
fn completions_and_man_page_name_every_command() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = run(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {}", text(&output));
        let script = String::from_utf8(output.stdout).unwrap();
        for word in ["watch", "run", "history", "check", "reconcile-interval"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let man = run(&["man"]);
    assert!(man.status.success(), "{}", text(&man));
    let page = String::from_utf8(man.stdout).unwrap();
    assert!(page.starts_with(".ie \\n(.g"), "not roff: {page}");
    for word in [
        ".TH oom-probe 1",
        "watch",
        "run",
        "history",
        "check",
        "completions",
    ] {
        assert!(page.contains(word), "man page lacks {word}:\n{page}");
    }
    let dir = std::env::temp_dir().join(format!("oom-probe-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pages = run(&["man", dir.to_str().unwrap()]);
    assert!(pages.status.success(), "{}", text(&pages));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    std::fs::remove_dir_all(&dir).unwrap();
    for page in [
        "oom-probe.1",
        "oom-probe-watch.1",
        "oom-probe-run.1",
        "oom-probe-history.1",
    ] {
        assert!(names.iter().any(|n| n == page), "{page} not in {names:?}");
    }
}

/// The stderr of `oom-probe history` on a missing store (one ERROR log
/// line), run under `script` so that stderr is a terminal when `tty`.
fn error_log(tty: bool, no_color: Option<&str>) -> String {
    let bin = oom_probe_bin();
    let args = "history --history-file /nonexistent/oom-probe/history.redb";
    let mut command = if tty {
        let mut c = Command::new("script");
        c.args(["-qec", &format!("{} {args}", bin.display()), "/dev/null"]);
        c
    } else {
        let mut c = Command::new(&bin);
        c.args(args.split(' '));
        c
    };
    command.env_remove("NO_COLOR");
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let output = command
        .output()
        .expect("run oom-probe (and util-linux script)");
    let log = text(&output);
    assert!(log.contains("ERROR"), "no error line: {log}");
    log
}

#[test]
fn log_lines_carry_colour_codes_only_on_a_terminal_without_no_color() {
    const ESC: char = '\u{1b}';
    let log = error_log(true, None);
    assert!(log.contains(ESC), "a terminal gets colours: {log:?}");
    let log = error_log(true, Some(""));
    assert!(log.contains(ESC), "an empty NO_COLOR is unset: {log:?}");
    let log = error_log(true, Some("1"));
    assert!(!log.contains(ESC), "NO_COLOR=1: {log:?}");
    let log = error_log(false, None);
    assert!(!log.contains(ESC), "a pipe: {log:?}");
}
