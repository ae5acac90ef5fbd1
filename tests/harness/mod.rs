//! What the end-to-end tests share: memory cgroups of their own, the
//! `oom-probe watch` process, and the memory hog that the kernel kills.
//!
//! The tests need root (they load eBPF and create cgroups). Without root they
//! fail, unless `OOM_PROBE_ALLOW_SKIP=1` is set, in which case they print a
//! loud SKIPPED line; CI and the README's test command never set it.

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

pub mod apiserver;
pub mod containerd;
pub mod rbac;

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
        skipped(test, "needs root (OOM_PROBE_ALLOW_SKIP=1)");
        return false;
    }
    panic!("{test} needs root: end-to-end tests load eBPF and create cgroups");
}

/// True in the kernel-matrix VM (`OOM_PROBE_IN_VM=1`, set by vm-init).
pub fn in_vm() -> bool {
    std::env::var_os("OOM_PROBE_IN_VM").is_some_and(|v| v == "1")
}

/// False (after a loud message) inside the kernel-matrix VM, for tests that
/// need what only the host has (containerd, the source tree, util-linux);
/// they exercise nothing kernel-specific and run on the host in every CI run.
pub fn host_only(test: &str, why: &str) -> bool {
    if in_vm() {
        skipped(test, &format!("host only: {why}"));
        return false;
    }
    true
}

/// The hooks `oom-probe check --json` found working on this kernel (e.g.
/// "kprobe oom_kill_process"), asked once per test binary.
pub fn working_hooks() -> &'static [String] {
    static HOOKS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    HOOKS.get_or_init(|| {
        let output = Command::new(oom_probe_bin())
            .args(["check", "--json"])
            .output()
            .expect("run oom-probe check");
        let report: Value =
            serde_json::from_slice(&output.stdout).expect("check --json prints JSON");
        report["hooks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["ok"] == true)
            .filter_map(|h| h["hook"].as_str().map(String::from))
            .collect()
    })
}

/// What `constraint_source` must say here: the kernel's own decision where
/// fentry or a kprobe on `oom_kill_process` works, else the inference.
pub fn expected_constraint_source() -> &'static str {
    if working_hooks()
        .iter()
        .any(|h| h.ends_with("oom_kill_process"))
    {
        "oom_kill_process"
    } else {
        "page_counters"
    }
}

/// Says loudly that a test did not run: written straight to stderr, past
/// the test harness's output capture, so it shows in every run.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {why} ***\n");
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
    v2: bool,
}

static NEXT_CGROUP: AtomicU32 = AtomicU32::new(0);

impl MemoryCgroup {
    /// Creates `oom-probe-test-<pid>-<n>` under the memory controller's
    /// hierarchy (v1 memory mount, or the v2 root with `memory` enabled).
    pub fn create(limit_bytes: u64) -> Result<Self> {
        let (root, v2) = memory_root()?;
        Self::create_in(root, String::new(), v2, Some(limit_bytes))
    }

    /// Creates a child cgroup, with its own limit or none (the parent's
    /// then applies). Drop the child before the parent.
    pub fn create_child(&self, limit_bytes: Option<u64>) -> Result<Self> {
        if self.v2 {
            // A v2 child needs the controller enabled in its parent.
            self.write("cgroup.subtree_control", "+memory")?;
        }
        Self::create_in(
            self.path.clone(),
            self.relative.clone(),
            self.v2,
            limit_bytes,
        )
    }

    /// Creates a child with a given name, for layouts such as
    /// `kubepods/burstable/pod<uid>/<container id>`.
    pub fn create_child_named(&self, name: &str, limit_bytes: Option<u64>) -> Result<Self> {
        if self.v2 {
            self.write("cgroup.subtree_control", "+memory")?;
        }
        Self::create_named(
            self.path.clone(),
            self.relative.clone(),
            self.v2,
            name,
            limit_bytes,
        )
    }

    fn create_in(
        parent: PathBuf,
        parent_relative: String,
        v2: bool,
        limit: Option<u64>,
    ) -> Result<Self> {
        let name = format!(
            "oom-probe-test-{}-{}",
            std::process::id(),
            NEXT_CGROUP.fetch_add(1, Ordering::Relaxed)
        );
        Self::create_named(parent, parent_relative, v2, &name, limit)
    }

    fn create_named(
        parent: PathBuf,
        parent_relative: String,
        v2: bool,
        name: &str,
        limit: Option<u64>,
    ) -> Result<Self> {
        let path = parent.join(name);
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let cgroup = Self {
            path,
            relative: format!("{parent_relative}/{name}"),
            v2,
        };
        if let Some(limit_bytes) = limit {
            let (file, swap_file, swap_limit) = if v2 {
                ("memory.max", "memory.swap.max", String::from("0"))
            } else {
                (
                    "memory.limit_in_bytes",
                    "memory.memsw.limit_in_bytes",
                    limit_bytes.to_string(),
                )
            };
            cgroup.write(file, &limit_bytes.to_string())?;
            // No swap, so the limit is reached at once (the file exists only with swap accounting).
            let _ = cgroup.write(swap_file, &swap_limit);
        }
        Ok(cgroup)
    }

    /// True on cgroup v2, where `memory.oom.group` exists.
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// Absolute path in cgroupfs, for `oom-hog --cgroup`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as oom-probe reports it (relative to the hierarchy root).
    pub fn relative_path(&self) -> &str {
        &self.relative
    }

    /// Writes a cgroup control file.
    pub fn write(&self, file: &str, value: &str) -> Result<()> {
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
        Self::start_command("watch", extra_args)
    }

    /// Starts `oom-probe <subcommand> --output json <extra_args>` (`watch`
    /// or the agent, `run`) and waits until it has attached its probes.
    pub fn start_command(subcommand: &str, extra_args: &[&str]) -> Result<Self> {
        let mut child = Command::new(oom_probe_bin())
            .args([subcommand, "--output", "json"])
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

    /// Events matching `unwanted` that arrive within `window`; for tests
    /// that something is *not* reported.
    pub fn events_within(
        &mut self,
        window: Duration,
        unwanted: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + window;
        let mut found = Vec::new();
        while let Ok(event) = self
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if unwanted(&event) {
                found.push(event);
            }
        }
        found
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

impl Watcher {
    /// Sends SIGTERM and waits for a clean exit, as Kubernetes stops a pod.
    pub fn terminate(mut self) -> Result<std::process::ExitStatus> {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        Ok(self.child.wait()?)
    }
}

/// A minimal HTTP/1.1 GET on loopback: status code and body.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {response}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A loopback address with a port that was free a moment ago.
pub fn free_loopback_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr").to_string()
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
    run_hog_with_child_args(cgroup, mode, comm, megabytes, &[])
}

/// [`run_hog_with_child`] with more oom-hog arguments (`--uid`,
/// `--oom-score-adj`), which apply to the child.
pub fn run_hog_with_child_args(
    cgroup: &MemoryCgroup,
    mode: &str,
    comm: &str,
    megabytes: u32,
    extra: &[&str],
) -> Result<(u32, String)> {
    let output = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args([mode, "--comm", comm, "--mb", &megabytes.to_string()])
        .args(extra)
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
