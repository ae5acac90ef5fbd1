//! Boots one kernel with the initramfs under QEMU, within a deadline,
//! streaming the serial console to a log file and a filtered view to the
//! terminal.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use vm_init::KERNEL_MARKER;

use super::{arch::Arch, console};

/// Memory of the VM: enough for oom-probe and the tests, small enough that a
/// node-wide OOM test exhausts it quickly.
const MEMORY_MIB: u32 = 1024;

/// How QEMU runs the guest CPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Accel {
    /// Software emulation: slower, but boots stock kernels anywhere.
    Tcg,
    /// Hardware virtualisation.
    Kvm,
}

impl Accel {
    /// KVM only when asked for, the guest is of the host's architecture and
    /// the CPU has vmx or svm: a /dev/kvm that is itself a software
    /// hypervisor stops stock kernels with "KVM internal error … emulation
    /// failure", so TCG is the default.
    pub fn choose(want_kvm: bool, arch: Arch) -> Self {
        if !want_kvm {
            return Self::Tcg;
        }
        if arch != Arch::host() {
            eprintln!("xtask: KVM asked for, but the guest is {arch:?}; using TCG");
            return Self::Tcg;
        }
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if has_hardware_virtualization(&cpuinfo) && Path::new("/dev/kvm").exists() {
            return Self::Kvm;
        }
        eprintln!(
            "xtask: KVM asked for, but the CPU has no vmx/svm or there is no /dev/kvm; using TCG"
        );
        Self::Tcg
    }
}

/// One VM to run.
pub struct Vm<'a> {
    /// Prefix of the lines echoed to the terminal.
    pub label: &'a str,
    /// The guest's architecture: which QEMU, machine and console.
    pub arch: Arch,
    /// The kernel.
    pub vmlinuz: &'a Path,
    /// The root filesystem, with vm-init as /init.
    pub initramfs: &'a Path,
    /// TCG or KVM.
    pub accel: Accel,
    /// How long the VM may run before it is killed.
    pub timeout: Duration,
    /// Where the whole console (and QEMU's own messages) is written.
    pub log: PathBuf,
}

/// How a VM run went.
pub struct Run {
    /// Everything the VM and QEMU printed, for [`console::parse`].
    pub console: String,
    /// From starting QEMU to vm-init's first line; None if it never came.
    pub boot_time: Option<Duration>,
    /// From starting QEMU to its exit (or to the deadline).
    pub run_time: Duration,
    /// QEMU's exit status; None when it was killed at the deadline.
    pub exit: Option<ExitStatus>,
}

/// Boots `vm` and waits for it to power off, or kills it at the deadline.
pub fn run(vm: &Vm) -> Result<Run> {
    if let Some(dir) = vm.log.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut log =
        fs::File::create(&vm.log).with_context(|| format!("create {}", vm.log.display()))?;
    let mut command = command(vm);
    eprintln!("xtask: running {command:?}");
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", vm.arch.qemu().0))?;
    let lines = output_lines(&mut child)?;
    let mut run = Run {
        console: String::new(),
        boot_time: None,
        run_time: Duration::ZERO,
        exit: None,
    };
    if follow(vm, &lines, started, &mut log, &mut run)? {
        run.exit = Some(child.wait()?);
    } else {
        child.kill()?;
        child.wait()?;
    }
    run.run_time = started.elapsed();
    Ok(run)
}

/// The lines QEMU prints, on standard output (the serial console) and on
/// standard error (its own messages, prefixed `qemu: `).
fn output_lines(child: &mut Child) -> Result<Receiver<String>> {
    let (sender, lines) = mpsc::channel();
    let stdout = child.stdout.take().context("no qemu stdout")?;
    let stderr = child.stderr.take().context("no qemu stderr")?;
    stream(stdout, sender.clone(), "");
    stream(stderr, sender, "qemu: ");
    Ok(lines)
}

/// Records QEMU's lines until it closes its output (true) or the deadline
/// passes (false), noting when vm-init's first line came.
fn follow(
    vm: &Vm,
    lines: &Receiver<String>,
    started: Instant,
    log: &mut fs::File,
    run: &mut Run,
) -> Result<bool> {
    let deadline = started + vm.timeout;
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if run.boot_time.is_none() && line.contains(KERNEL_MARKER) {
                    run.boot_time = Some(started.elapsed());
                }
                record(vm.label, &line, log, &mut run.console)?;
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(true),
            Err(RecvTimeoutError::Timeout) => {
                let line = format!(
                    "xtask: no power-off within {} s; killing QEMU",
                    vm.timeout.as_secs()
                );
                record(vm.label, &line, log, &mut run.console)?;
                return Ok(false);
            }
        }
    }
}

fn command(vm: &Vm) -> Command {
    let mut command = Command::new(vm.arch.qemu().0);
    command
        .args(vm.arch.machine_args(vm.accel == Accel::Kvm))
        .args(["-m", &MEMORY_MIB.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(vm.vmlinuz)
        .arg("-initrd")
        .arg(vm.initramfs)
        // panic=-1 reboots at once on a panic, which -no-reboot turns into an exit.
        // loglevel=3: the kernel's OOM reports would crawl over the
        // emulated serial port; oom-probe reads kills from eBPF anyway.
        .arg("-append")
        .arg(format!("console={} panic=-1 loglevel=3", vm.arch.console()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Sends each line of `output` (non-UTF-8 bytes replaced) with `prefix`
/// from a thread of its own, until end of file.
fn stream(output: impl Read + Send + 'static, lines: Sender<String>, prefix: &'static str) {
    thread::spawn(move || {
        let mut reader = BufReader::new(output);
        let mut buffer = Vec::new();
        while reader.read_until(b'\n', &mut buffer).is_ok_and(|n| n > 0) {
            let line = console::printable(&String::from_utf8_lossy(&buffer));
            if lines.send(format!("{prefix}{line}")).is_err() {
                return;
            }
            buffer.clear();
        }
    });
}

/// Keeps `line` in the log and the console text, and shows it on the
/// terminal unless it is kernel noise.
fn record(label: &str, line: &str, log: &mut fs::File, console: &mut String) -> Result<()> {
    writeln!(log, "{line}")?;
    console.push_str(line);
    console.push('\n');
    if console::worth_echoing(line) {
        println!("{label} | {line}");
    }
    Ok(())
}

fn has_hardware_virtualization(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .flat_map(str::split_whitespace)
        .any(|flag| flag == "vmx" || flag == "svm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_virtualization_flags() {
        assert!(has_hardware_virtualization("flags\t\t: fpu vme vmx sse\n"));
        assert!(has_hardware_virtualization("flags\t\t: fpu svm\n"));
        assert!(!has_hardware_virtualization(
            "flags\t\t: fpu vme sse hypervisor\n"
        ));
        assert!(!has_hardware_virtualization("model name\t: vmx\n"));
    }
}
