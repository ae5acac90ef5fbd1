//! What the end-to-end tests share: memory cgroups of their own (from the
//! `oom-probe-cgroupfs` crate), the `oom-probe watch` process, and the memory
//! hog that the kernel kills; a private containerd, a local API server and
//! its pods. oom-probe's unit tests (dev-dependency), the end-to-end tests
//! (`tests/`) and xtask's benchmark and soak use it; it depends on no crate
//! of the agent, so xtask builds with nothing but the Rust toolchain.
//!
//! The tests need root (they load eBPF and create cgroups). Without root they
//! fail, unless `OOM_PROBE_ALLOW_SKIP=1` is set, in which case they print a
//! loud SKIPPED line; CI and the README's test command never set it.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

pub mod apiserver;
pub mod containerd;
pub mod deploy;
pub mod image;
pub mod pods;
pub mod rbac;

pub use oom_probe_cgroupfs::testing::MemoryCgroup;

/// What oom-probe logs once its probes are attached: the sign it is ready.
pub const READY_LINE: &str = "watching OOM kills";

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

/// The real `earlyoom` for the userspace-killer tests: `cargo xtask test`
/// unpacks Debian's and names it in `OOM_PROBE_EARLYOOM`; elsewhere an
/// installed one. `None` (after a loud message) when there is none and
/// `OOM_PROBE_ALLOW_SKIP=1`; panics when there is none otherwise.
pub fn earlyoom_or_skip(test: &str) -> Option<String> {
    let from_env = std::env::var("OOM_PROBE_EARLYOOM").ok();
    let found = from_env
        .iter()
        .map(String::as_str)
        .chain(["/usr/bin/earlyoom", "/usr/sbin/earlyoom"])
        .find(|p| Path::new(p).exists())
        .map(str::to_owned);
    if found.is_none() {
        assert!(
            std::env::var_os("OOM_PROBE_ALLOW_SKIP").is_some_and(|v| v == "1"),
            "earlyoom not found: set OOM_PROBE_EARLYOOM, or install earlyoom \
             (`cargo xtask test` unpacks Debian's)"
        );
        skipped(test, "earlyoom is not installed (OOM_PROBE_ALLOW_SKIP=1)");
    }
    found
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
        Self::start_with(subcommand, extra_args, |_| {})
    }

    /// Like [`Watcher::start_command`], with `configure` applied to the
    /// command first (environment, a `pre_exec` that enters namespaces).
    pub fn start_with(
        subcommand: &str,
        extra_args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Result<Self> {
        let mut command = Command::new(oom_probe_bin());
        configure(&mut command);
        command
            .args([subcommand, "--output", "json"])
            .args(extra_args);
        let (child, stdout, stderr) = spawn_until_ready(&mut command, true)?;
        let stdout = BufReader::new(stdout);
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
        Ok(Self {
            child,
            events,
            stderr,
        })
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
    /// Its process id (to look at it in /proc, or signal it at a chosen
    /// moment before [`Watcher::kill`] reaps it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs it (a crash, the OOM killer, `kill -9`) and reaps it.
    pub fn kill(mut self) -> Result<std::process::ExitStatus> {
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// Sends SIGTERM and waits for a clean exit, as Kubernetes stops a pod.
    pub fn terminate(mut self) -> Result<std::process::ExitStatus> {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        Ok(self.child.wait()?)
    }
}

/// Spawns `command` (an `oom-probe watch` or `run`) with stdin closed and
/// stdout and stderr piped, forwards its stderr lines to the returned
/// channel (and to this process's stderr, prefixed, when `echo`), and
/// returns once it logged [`READY_LINE`], within [`START_TIMEOUT`]. Stdout is
/// left to the caller. The child is killed if it never gets ready.
pub fn spawn_until_ready(
    command: &mut Command,
    echo: bool,
) -> Result<(Child, ChildStdout, Receiver<String>)> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start oom-probe")?;
    let stderr_pipe = BufReader::new(child.stderr.take().expect("stderr"));
    let (stderr_tx, stderr) = mpsc::channel();
    thread::spawn(move || {
        for line in stderr_pipe.lines().map_while(Result::ok) {
            if echo {
                eprintln!("[oom-probe] {line}");
            }
            if stderr_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(READY_LINE) => break,
            Ok(_) => {}
            Err(_) => {
                let status = child.try_wait()?;
                let _ = child.kill();
                let _ = child.wait();
                bail!("oom-probe never said {READY_LINE:?} (exit status: {status:?})");
            }
        }
    }
    let stdout = child.stdout.take().expect("stdout");
    Ok((child, stdout, stderr))
}

/// Runs `oom-probe history <args>` to the end; its stdout, or why it failed.
pub fn history(args: &[&str]) -> Result<String> {
    let output = Command::new(oom_probe_bin())
        .arg("history")
        .args(args)
        .output()
        .context("cannot run oom-probe history")?;
    if !output.status.success() {
        bail!(
            "oom-probe history {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// A minimal HTTP/1.1 GET on loopback: status code and body.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    http_get_accept(addr, path, None)
}

/// Like [`http_get`], with an `Accept` header when `accept` is given.
pub fn http_get_accept(addr: &str, path: &str, accept: Option<&str>) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
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
    comm: impl AsRef<std::ffi::OsStr>,
    megabytes: u32,
) -> Result<(u32, String)> {
    run_hog_with_child_args(cgroup, mode, comm, megabytes, &[])
}

/// [`run_hog_with_child`] with more oom-hog arguments (`--uid`,
/// `--oom-score-adj`), which apply to the child.
pub fn run_hog_with_child_args(
    cgroup: &MemoryCgroup,
    mode: &str,
    comm: impl AsRef<std::ffi::OsStr>,
    megabytes: u32,
    extra: &[&str],
) -> Result<(u32, String)> {
    let output = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args([mode, "--comm"])
        .arg(comm)
        .args(["--mb", &megabytes.to_string()])
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

/// A memory hog named `comm` in `cgroup` that allocates `mb` MiB and then
/// sleeps (a pool's idle worker, a node's biggest process, a restarted
/// container); returns once it says it holds them. The caller kills it.
pub fn hold(cgroup: &MemoryCgroup, comm: &str, mb: u64) -> Child {
    let mut hog = hog()
        .arg("--cgroup")
        .arg(cgroup.path())
        .args(["--comm", comm, "--mb", &mb.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    BufReader::new(hog.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(
        said.contains(&format!("allocated {mb} MiB")),
        "{comm}: {said}"
    );
    hog
}

/// A tmpfs of 512 MiB mounted for one test (its path is `.0`), unmounted
/// and removed when dropped: files written there are shmem, charged to the
/// memory cgroup of the writer.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts it on a fresh directory of the temp dir named after `name`.
    pub fn mount(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("oom-probe-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512m", "tmpfs"])
            .arg(&dir)
            .status()?;
        anyhow::ensure!(status.success(), "mount tmpfs on {} failed", dir.display());
        Ok(Self(dir))
    }

    /// Writes `mib` MiB of zeros to `<tmpfs>/<file>` from a shell moved into
    /// `cgroup` first: the pages stay charged to the cgroup (as shmem) after
    /// `dd` exits. Fails when the write does not complete.
    pub fn fill_charged_to(&self, cgroup: &MemoryCgroup, file: &str, mib: u32) -> Result<()> {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec dd if=/dev/zero of={}/{file} bs=1M count={mib} status=none",
            cgroup.path().display(),
            self.0.display()
        );
        let status = Command::new("sh").args(["-c", &script]).status()?;
        anyhow::ensure!(
            status.success(),
            "writing {mib} MiB to {file} failed: {status}"
        );
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}
