//! PID 1 of the `cargo xtask vm-test` virtual machines.
//!
//! The VM boots straight into this program from an initramfs, with no
//! distribution around it, so it sets up what `oom-probe` and the end-to-end
//! tests expect from a node (proc, sysfs, tracefs, bpffs, cgroup2 with the
//! memory controller, a writable /tmp, loopback up), runs `oom-probe check`
//! and every test executable, prints one verdict line for the host and
//! powers off.

use std::{
    ffi::{CStr, CString},
    fs,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use vm_init::{
    result_line, CHECK_BEGIN, CHECK_END, KERNEL_MARKER, OOM_HOG_BIN, OOM_PROBE_BIN, TESTS_DIR,
    TEST_MARKER,
};

/// What gets mounted, in order: (source, mount point, filesystem type).
/// devtmpfs, tracefs and bpffs are not mounted by the kernel for an
/// initramfs; cgroup2 comes last so that sysfs already provides its mount point.
const MOUNTS: &[(&str, &str, &str)] = &[
    ("proc", "/proc", "proc"),
    ("sysfs", "/sys", "sysfs"),
    ("devtmpfs", "/dev", "devtmpfs"),
    ("tmpfs", "/tmp", "tmpfs"),
    ("tracefs", "/sys/kernel/tracing", "tracefs"),
    ("bpffs", "/sys/fs/bpf", "bpf"),
    ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
];

/// Controllers enabled for the children of the root cgroup: the tests create
/// memory cgroups there.
const CONTROLLERS: &[&str] = &["+memory", "+pids"];

/// Environment of everything vm-init starts: the tests find their binaries
/// through these, and `OOM_PROBE_IN_VM` unlocks the tests that are only safe
/// in a throwaway machine.
const ENVIRONMENT: &[(&str, &str)] = &[
    ("PATH", "/bin"),
    ("TMPDIR", "/tmp"),
    ("HOME", "/tmp"),
    ("RUST_BACKTRACE", "1"),
    ("OOM_PROBE_BIN", OOM_PROBE_BIN),
    ("OOM_HOG_BIN", OOM_HOG_BIN),
    ("OOM_PROBE_IN_VM", "1"),
];

fn main() {
    if std::process::id() != 1 {
        eprintln!("vm-init: refusing to run: not PID 1 (it mounts filesystems and powers off)");
        std::process::exit(2);
    }
    println!("{KERNEL_MARKER}{}", kernel_release());
    let failures =
        std::panic::catch_unwind(run).unwrap_or_else(|_| vec!["vm-init panicked".into()]);
    println!("{}", result_line(&failures));
    power_off();
}

/// Everything between boot and the verdict; returns why the run failed.
fn run() -> Vec<String> {
    if let Err(reason) = prepare_node() {
        return vec![reason];
    }
    let mut failures: Vec<String> = check().into_iter().collect();
    failures.extend(run_tests());
    failures
}

/// Mounts the filesystems, enables the cgroup controllers, brings up `lo`
/// and sets the environment; the first failure is the reason.
fn prepare_node() -> Result<(), String> {
    for &(source, target, fstype) in MOUNTS {
        mount(source, target, fstype)?;
    }
    busybox_links()?;
    let subtree_control = "/sys/fs/cgroup/cgroup.subtree_control";
    for controller in CONTROLLERS {
        fs::write(subtree_control, controller)
            .map_err(|e| format!("write {controller} to {subtree_control}: {e}"))?;
    }
    loopback_up()?;
    for (key, value) in ENVIRONMENT {
        std::env::set_var(key, value);
    }
    Ok(())
}

/// Makes busybox's applet links in /bin when the initramfs has none (one
/// built for another architecture than the host's, which could not run
/// busybox to list them); busybox finds itself through /proc/self/exe.
fn busybox_links() -> Result<(), String> {
    if Path::new("/bin/sh").exists() {
        return Ok(());
    }
    let status = Command::new("/bin/busybox")
        .args(["--install", "-s", "/bin"])
        .status()
        .map_err(|e| format!("run /bin/busybox --install: {e}"))?;
    if !status.success() {
        return Err(format!("/bin/busybox --install -s /bin: {status}"));
    }
    Ok(())
}

/// Brings `lo` up, as it is on any node: the agent tests scrape oom-probe's
/// metrics over 127.0.0.1, and a kernel starts with every interface down.
fn loopback_up() -> Result<(), String> {
    // SAFETY: socket takes no pointers.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *to = *from as libc::c_char;
    }
    // SAFETY: `request` is a valid ifreq naming an interface; the kernel reads
    // and writes only within it.
    let rc = unsafe {
        let mut rc = libc::ioctl(socket, libc::SIOCGIFFLAGS as _, &mut request);
        if rc == 0 {
            request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(socket, libc::SIOCSIFFLAGS as _, &request);
        }
        rc
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: `socket` is a descriptor this function opened.
    unsafe { libc::close(socket) };
    if rc != 0 {
        return Err(format!("bring up lo: {err}"));
    }
    Ok(())
}

fn mount(source: &str, target: &str, fstype: &str) -> Result<(), String> {
    fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
    let c = |s: &str| CString::new(s).expect("no NUL in mount arguments");
    let (source_c, target_c, fstype_c) = (c(source), c(target), c(fstype));
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null.
    let rc = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!("mount {fstype} on {target}: {err}"));
    }
    Ok(())
}

/// Runs `oom-probe check --json` and prints its standard output between
/// markers, so that the host can read the node's hooks and cgroup mode.
fn check() -> Option<String> {
    let output = Command::new(OOM_PROBE_BIN)
        .args(["check", "--json"])
        .stderr(Stdio::inherit())
        .output();
    println!("{CHECK_BEGIN}");
    if let Ok(output) = &output {
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }
    println!("{CHECK_END}");
    match output {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!("oom-probe check exited with {}", output.status)),
        Err(e) => Some(format!("cannot run {OOM_PROBE_BIN}: {e}")),
    }
}

/// Runs every executable in [`TESTS_DIR`], in name order, one test at a
/// time; returns one failure per executable that did not pass.
fn run_tests() -> Vec<String> {
    let tests = match test_executables() {
        Ok(tests) if tests.is_empty() => {
            return vec![format!("no test executables in {TESTS_DIR}")]
        }
        Ok(tests) => tests,
        Err(e) => return vec![format!("cannot list {TESTS_DIR}: {e}")],
    };
    tests.iter().filter_map(|test| run_test(test)).collect()
}

fn test_executables() -> std::io::Result<Vec<PathBuf>> {
    let mut tests = fs::read_dir(TESTS_DIR)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    tests.sort();
    Ok(tests)
}

fn run_test(test: &Path) -> Option<String> {
    let name = test.file_name().unwrap_or_default().to_string_lossy();
    println!("{TEST_MARKER}{name}");
    let started = Instant::now();
    let status = Command::new(test)
        .arg("--test-threads=1")
        .current_dir("/tmp")
        .spawn()
        .and_then(|child| wait_reaping_orphans(child.id()));
    println!(
        "vm-init: {name} ran for {:.1} s",
        started.elapsed().as_secs_f64()
    );
    match status {
        Ok(status) if status.success() => None,
        Ok(status) => Some(format!("{name} exited with {status}")),
        Err(e) => Some(format!("cannot run {name}: {e}")),
    }
}

/// Waits for `pid` while reaping every other child: as PID 1, vm-init
/// inherits the orphans of the tests, and zombies must not pile up.
fn wait_reaping_orphans(pid: u32) -> std::io::Result<ExitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
        if reaped == pid as libc::pid_t {
            return Ok(ExitStatus::from_raw(status));
        }
        let err = std::io::Error::last_os_error();
        if reaped < 0 && err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".into();
    }
    // SAFETY: uname NUL-terminates release.
    unsafe { CStr::from_ptr(uts.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Flushes the disks and powers the VM off; PID 1 must never return (the
/// kernel would panic), so this blocks forever if power-off fails.
fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers.
    let rc = unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF)
    };
    eprintln!(
        "vm-init: reboot(RB_POWER_OFF) returned {rc}: {}",
        std::io::Error::last_os_error()
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
