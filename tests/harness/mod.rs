//! What the end-to-end tests share: memory cgroups of their own, the
//! `oom-probe watch` process, and the memory hog that the kernel kills.
//!
//! The tests need root (they load eBPF and create cgroups). Without root they
//! fail, unless `OOM_PROBE_ALLOW_SKIP=1` is set, in which case they print a
//! loud SKIPPED line; CI and the README's test command never set it.

pub mod containerd;

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc::{self, Receiver},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// How long `oom-probe` may take to attach; generous for TCG virtual machines.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an expected event may take to arrive.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// True when the test may run; false (after a loud message) when it must be
/// skipped. Panics when it cannot run and skipping is not allowed.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("OOM_PROBE_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("\n*** SKIPPED {test}: needs root (OOM_PROBE_ALLOW_SKIP=1) ***\n");
        return false;
    }
    panic!("{test} needs root: end-to-end tests load eBPF and create cgroups");
}

/// The oom-probe binary under test: `$OOM_PROBE_BIN`, else the one cargo
/// built into the same target directory as this test.
pub fn oom_probe_bin() -> PathBuf {
    built_binary("oom-probe", "OOM_PROBE_BIN", "oom-probe")
}

/// The memory hog: `$OOM_HOG_BIN`, else the one cargo built with these tests.
pub fn hog() -> Command {
    Command::new(built_binary("oom-hog", "OOM_HOG_BIN", "oom-probe-tests"))
}

/// A binary from `$env_var` (the VM sets these), else from the target
/// directory this test executable was built into (`target/<profile>/deps/..`).
fn built_binary(name: &str, env_var: &str, package: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(env_var) {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p {package}) or set {env_var}",
        bin.display()
    );
    bin
}

/// A memory cgroup that exists for one test: created with a limit, emptied
/// and removed on drop. It never touches cgroups it did not create.
pub struct MemoryCgroup {
    path: PathBuf,
    relative: String,
}

static NEXT_CGROUP: AtomicU32 = AtomicU32::new(0);

impl MemoryCgroup {
    /// Creates `oom-probe-test-<pid>-<n>` under the memory controller's
    /// hierarchy (v1 memory mount, or the v2 root with `memory` enabled).
    pub fn create(limit_bytes: u64) -> Result<Self> {
        let (root, v2) = memory_root()?;
        let name = format!(
            "oom-probe-test-{}-{}",
            std::process::id(),
            NEXT_CGROUP.fetch_add(1, Ordering::Relaxed)
        );
        let path = root.join(&name);
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let cgroup = Self {
            path,
            relative: format!("/{name}"),
        };
        let (file, swap_file) = if v2 {
            ("memory.max", "memory.swap.max")
        } else {
            ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")
        };
        cgroup.write(file, &limit_bytes.to_string())?;
        // No swap, so the limit is reached at once (the file exists only with swap accounting).
        let swap_limit = if v2 {
            String::from("0")
        } else {
            limit_bytes.to_string()
        };
        let _ = cgroup.write(swap_file, &swap_limit);
        Ok(cgroup)
    }

    /// Absolute path in cgroupfs, for `oom-hog --cgroup`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as oom-probe reports it (relative to the hierarchy root).
    pub fn relative_path(&self) -> &str {
        &self.relative
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        fs::write(self.path.join(file), value)
            .with_context(|| format!("write {value} to {}/{file}", self.path.display()))
    }

    /// The kernel's own count of OOM kills in this cgroup.
    pub fn kernel_oom_kills(&self) -> Result<u64> {
        for (file, key) in [
            ("memory.events", "oom_kill"),
            ("memory.oom_control", "oom_kill"),
        ] {
            if let Ok(text) = fs::read_to_string(self.path.join(file)) {
                return text
                    .lines()
                    .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
                    .ok_or_else(|| anyhow!("no {key} in {file}"));
            }
        }
        bail!(
            "no memory.events or memory.oom_control in {}",
            self.path.display()
        )
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let procs = fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() && fs::remove_dir(&self.path).is_ok() {
                return;
            }
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "warning: could not remove test cgroup {}",
            self.path.display()
        );
    }
}

/// Where to create test cgroups, and whether it is cgroup v2.
fn memory_root() -> Result<(PathBuf, bool)> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let mut v2_root = None;
    for line in mountinfo.lines() {
        let Some((head, tail)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = head.split(' ').collect();
        let tail: Vec<&str> = tail.split(' ').collect();
        if fields.len() < 5 || fields[3] != "/" || tail.len() < 3 {
            continue;
        }
        match tail[0] {
            "cgroup" if tail[2].split(',').any(|o| o == "memory") => {
                return Ok((PathBuf::from(fields[4]), false));
            }
            "cgroup2" => v2_root = v2_root.or(Some(PathBuf::from(fields[4]))),
            _ => {}
        }
    }
    let root = v2_root.ok_or_else(|| anyhow!("no memory cgroup hierarchy is mounted"))?;
    let controllers = fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        bail!(
            "cgroup v2 at {} does not delegate the memory controller",
            root.display()
        );
    }
    Ok((root, true))
}

/// A running `oom-probe watch --output json`, with its output collected.
pub struct Watcher {
    child: Child,
    events: Receiver<Value>,
    stderr: Receiver<String>,
}

impl Watcher {
    /// Starts the watcher with extra arguments and waits until it has
    /// attached its probes.
    pub fn start(extra_args: &[&str]) -> Result<Self> {
        let mut child = Command::new(oom_probe_bin())
            .args(["watch", "--output", "json"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start oom-probe")?;
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (event_tx, events) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("oom-probe printed a line that is not JSON ({e}): {line}")
                });
                if event_tx.send(event).is_err() {
                    break;
                }
            }
        });
        let stderr_pipe = BufReader::new(child.stderr.take().expect("stderr"));
        let (stderr_tx, stderr) = mpsc::channel();
        thread::spawn(move || {
            for line in stderr_pipe.lines().map_while(Result::ok) {
                eprintln!("[oom-probe] {line}");
                if stderr_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut watcher = Self {
            child,
            events,
            stderr,
        };
        watcher.wait_for_stderr("watching OOM kills", START_TIMEOUT)?;
        Ok(watcher)
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => {
                    let status = self.child.try_wait()?;
                    bail!("oom-probe never said {needle:?} (exit status: {status:?})");
                }
            }
        }
    }

    /// Collects events about `cgroup_path` until `count` arrived, then
    /// waits `settle` more to catch duplicates. Events of other cgroups
    /// (other tests, the host) are ignored.
    pub fn events_for(
        &mut self,
        cgroup_path: &str,
        count: usize,
        settle: Duration,
    ) -> Result<Vec<Value>> {
        self.events_matching(count, settle, |e| e["victim"]["cgroup_path"] == cgroup_path)
    }

    /// Like [`Watcher::events_for`] with any predicate.
    pub fn events_matching(
        &mut self,
        count: usize,
        settle: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Vec<Value>> {
        let mut found = Vec::new();
        let mut deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) if wanted(&event) => {
                    found.push(event);
                    if found.len() == count {
                        deadline = Instant::now() + settle;
                    }
                }
                Ok(_) => {}
                Err(_) if found.len() >= count => return Ok(found),
                Err(_) => bail!("got {} of {count} expected events: {found:#?}", found.len()),
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `oom-hog` with a child or pid-namespace init as the victim; returns
/// the victim's host pid and the parent's report of how the child ended.
pub fn run_hog_with_child(
    cgroup: &MemoryCgroup,
    mode: &str,
    comm: &str,
    megabytes: u32,
) -> Result<(u32, String)> {
    let output = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args([mode, "--comm", comm, "--mb", &megabytes.to_string()])
        .output()
        .context("cannot run oom-hog")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "oom-hog parent failed ({}): {stdout} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let pid = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("child ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| anyhow!("oom-hog printed no child pid: {stdout}"))?;
    Ok((pid, stdout))
}
