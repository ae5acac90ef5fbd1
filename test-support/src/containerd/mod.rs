//! A private containerd with its CRI plugin, and pods and containers made
//! through the CRI the way the kubelet makes them: the real thing oom-probe
//! must name victims in, with no Kubernetes and no image registry.
//!
//! The daemon gets its own root, state and socket in a temporary directory
//! (never the node's `/run/containerd/containerd.sock`), runs host-network
//! pods (no CNI needed) with the cgroupfs layout
//! `/kubepods/burstable/pod<uid>/<container id>`, and uses an image built
//! here from `oom-hog` (which also plays the pod's pause process). Everything
//! made is removed on drop, failed tests included: containers, sandboxes,
//! cgroups, shims, mounts, the daemon and its directory.
//!
//! The tests fail, not skip, when containerd cannot start: `cargo xtask test`
//! installs what it needs.
//!
//! This file is the daemon's own lifecycle: start, freeze, stop and clean
//! up. Along it: its config (`config.rs`), the CRI calls (`cri.rs`), its image
//! (`image.rs`), pods (`pod.rs`) and their containers (`container.rs`).

mod config;
mod container;
mod cri;
mod image;
mod pod;

use std::{
    env,
    fs::{self, File},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use oom_probe_cgroupfs::mountinfo;
use tonic::transport::Channel;

pub use container::{ContainerExit, ContainerSpec, PodContainer};
pub use image::{write_oci_archive, write_oci_archive_for};
pub use pod::Pod;

/// The image every pod and container runs: `oom-hog` and the libraries it
/// links, imported from an archive made here (there is no registry).
pub const IMAGE: &str = "localhost/oom-probe/oom-hog:test";
/// The Kubernetes namespace the test pods claim to be in.
pub const NAMESPACE: &str = "oom-probe-test";
/// What to run when a tool is missing.
const INSTALL_HINT: &str = "run the tests with `cargo xtask test`, which installs the Debian \
                            packages containerd and runc";
/// containerd's namespace for what the CRI makes.
const CRI_NAMESPACE: &str = "k8s.io";
/// One CRI call while setting up or tearing down; pod start can be slow on
/// a loaded machine.
const RPC_TIMEOUT: Duration = Duration::from_secs(60);

static NEXT_DAEMON: AtomicU32 = AtomicU32::new(0);

/// A running private containerd. Dropping it removes everything it made.
pub struct Containerd {
    dir: PathBuf,
    socket: PathBuf,
    daemon: Child,
    /// The harness is synchronous like the rest of it; gRPC runs here.
    runtime: tokio::runtime::Runtime,
    /// `None` until the CRI answers, and for a daemon started without it.
    cri: Option<Channel>,
}

impl Containerd {
    /// Starts containerd with its CRI plugin and imports [`IMAGE`].
    pub fn start() -> Result<Self> {
        let mut containerd = Self::spawn(true)?;
        containerd.wait_for_cri()?;
        containerd.import_image()?;
        Ok(containerd)
    }

    /// Starts containerd with the CRI plugin disabled, as some nodes run it
    /// (Docker's own containerd): a socket that answers gRPC but not the CRI.
    pub fn start_without_cri() -> Result<Self> {
        let containerd = Self::spawn(false)?;
        let deadline = Instant::now() + super::START_TIMEOUT;
        while !containerd
            .ctr(&["version"])
            .is_ok_and(|o| o.status.success())
        {
            containerd.check_alive()?;
            if Instant::now() > deadline {
                bail!("containerd never answered: {}", containerd.log_tail());
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(containerd)
    }

    /// The daemon's gRPC socket, for `oom-probe watch --cri-socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops the daemon (SIGSTOP) until the guard is dropped: a runtime that
    /// holds connections open and never answers, the case timeouts are for.
    pub fn freeze(&self) -> Frozen<'_> {
        let pid = self.daemon.id();
        signal(pid, libc::SIGSTOP);
        // SIGSTOP takes effect per thread as each next enters the kernel;
        // wait until every thread is stopped, or a busy one still answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Frozen { containerd: self }
    }

    fn spawn(cri: bool) -> Result<Self> {
        for tool in ["containerd", "containerd-shim-runc-v2", "runc", "ctr"] {
            if !on_path(tool) {
                bail!("{tool} is not installed (or not on PATH): {INSTALL_HINT}");
            }
        }
        let dir = env::temp_dir().join(format!(
            "oom-probe-containerd-{}-{}",
            std::process::id(),
            NEXT_DAEMON.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir); // left by an earlier process with this pid
        fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        fs::write(&config, config::daemon_config(&dir, &socket, cri))?;
        let log = File::create(dir.join("containerd.log"))?;
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. If the test process dies
        // without running drop (an abort), the daemon dies with it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        };
        let daemon = command
            .spawn()
            .with_context(|| format!("cannot start containerd: {INSTALL_HINT}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            dir,
            socket,
            daemon,
            runtime,
            cri: None,
        })
    }

    /// The daemon's own directory, for files a test mounts into containers.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ctr(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", CRI_NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run ctr: {INSTALL_HINT}"))
    }

    fn check_alive(&self) -> Result<()> {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let reaped = unsafe { libc::waitpid(self.daemon.id() as i32, &mut status, libc::WNOHANG) };
        if reaped != 0 {
            bail!("containerd exited: {}", self.log_tail());
        }
        Ok(())
    }

    /// The end of the daemon's log, for error messages.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Shims outlive a killed daemon; theirs name our socket on their
    /// command line.
    fn kill_our_shims(&self) {
        let Ok(procs) = fs::read_dir("/proc") else {
            return;
        };
        let needle = self.socket.display().to_string();
        for entry in procs.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("containerd-shim") && cmdline.contains(&needle) {
                signal(pid, libc::SIGKILL);
            }
        }
    }

    /// Unmounts whatever is still mounted below the daemon's directory
    /// (sandbox /dev/shm, container root filesystems), deepest first.
    /// True when nothing is left mounted there.
    fn unmount_leftovers(&self) -> bool {
        let mounted = || mountinfo::mount_points_under(&mountinfo::read_self(), &self.dir);
        for point in mounted() {
            let Ok(c_path) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
        }
        mounted().is_empty()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        signal(self.daemon.id(), libc::SIGCONT);
        if self.cri.is_some() {
            self.remove_all_pods();
        }
        signal(self.daemon.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.daemon.kill();
                let _ = self.daemon.wait();
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.kill_our_shims();
        if self.unmount_leftovers() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("warning: cannot remove {}: {e}", self.dir.display());
            }
        } else {
            eprintln!(
                "warning: mounts left under {}; not removing it",
                self.dir.display()
            );
        }
    }
}

/// A stopped (SIGSTOP) containerd; resumed on drop.
pub struct Frozen<'a> {
    containerd: &'a Containerd,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        signal(self.containerd.daemon.id(), libc::SIGCONT);
    }
}

fn on_path(tool: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// True when every thread of `pid` is in state T (stopped).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit(')')
                    .next()
                    .map(|rest| rest.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    })
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, signal) };
}
