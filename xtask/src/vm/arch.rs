//! The architectures oom-probe is built and tested for, and what differs
//! between them along the way: the Rust target of the static build and its
//! cross C toolchain, Debian's name for the kernels and packages, and the
//! QEMU machine that boots them.

use std::process::Command;

use anyhow::Result;

/// An architecture of the static build and the kernel matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// x86_64 (Debian's `amd64`).
    #[value(name = "amd64", alias = "x86_64")]
    Amd64,
    /// AArch64 (Debian's `arm64`): Graviton, Ampere, Cobalt nodes.
    #[value(name = "arm64", alias = "aarch64")]
    Arm64,
}

impl Arch {
    /// The architecture xtask itself runs on (the host's).
    pub fn host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Self::Arm64
        } else {
            Self::Amd64
        }
    }

    /// The Rust target every executable of the VM and the image is built
    /// for: static, with musl.
    pub fn rust_target(self) -> &'static str {
        match self {
            Self::Amd64 => "x86_64-unknown-linux-musl",
            Self::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Debian's name (`amd64`, `arm64`): kernel flavours, package
    /// architectures, and OCI's `architecture` too.
    pub fn debian(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// The C compiler for the target's C code (ring) and, when it is not
    /// the host's, the linker: (command, Debian package). musl-gcc for the
    /// host; Debian's GNU cross gcc for arm64, which links with the musl C
    /// runtime the Rust target ships (self-contained) and compiles ring's C
    /// freestanding, with no C library headers (see [`Self::cargo_env`]).
    pub fn c_compiler(self) -> (&'static str, &'static str) {
        match self {
            Self::Amd64 => ("x86_64-linux-musl-gcc", "musl-tools"),
            Self::Arm64 => ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        }
    }

    /// Sets the linker and C compiler cargo and cc-rs use for
    /// [`Self::rust_target`] on `command`, when they are not the defaults.
    ///
    /// The cross gcc has no musl headers (and Debian's arm64 libc headers
    /// would be glibc's): ring's C needs only the compiler's own freestanding
    /// headers once `RING_CORE_NOSTDLIBINC` is defined, which ring's build
    /// does itself for clang but not for gcc.
    pub fn cargo_env(self, command: &mut Command) {
        if self == Self::Amd64 && Self::host() == Self::Amd64 {
            // rustc links x86_64 musl with the host `cc`; cc-rs finds
            // x86_64-linux-musl-gcc by itself.
            return;
        }
        let (gcc, _) = self.c_compiler();
        let target = self.rust_target();
        let upper = target.to_uppercase().replace('-', "_");
        let lower = target.replace('-', "_");
        command
            .env(format!("CARGO_TARGET_{upper}_LINKER"), gcc)
            .env(format!("CC_{lower}"), gcc)
            .env(format!("AR_{lower}"), gcc.replace("-gcc", "-ar"))
            .env(
                format!("CFLAGS_{lower}"),
                "-ffreestanding -DRING_CORE_NOSTDLIBINC=1",
            );
    }

    /// The QEMU that boots this architecture: (command, Debian package).
    pub fn qemu(self) -> (&'static str, &'static str) {
        match self {
            Self::Amd64 => ("qemu-system-x86_64", "qemu-system-x86"),
            Self::Arm64 => ("qemu-system-aarch64", "qemu-system-arm"),
        }
    }

    /// QEMU's machine and CPU options, under TCG or, for the host's own
    /// architecture, KVM.
    pub fn machine_args(self, kvm: bool) -> Vec<&'static str> {
        let accel = if kvm { "kvm" } else { "tcg" };
        match (self, kvm) {
            (Self::Amd64, false) => vec!["-accel", accel, "-cpu", "max"],
            (Self::Amd64, true) => vec!["-accel", accel, "-cpu", "host"],
            // `virt` with a PL011 serial port and PSCI power-off. `max` emulates
            // every feature, pointer authentication too; QEMU's own
            // (`pauth-impdef`) hash instead of QARMA is several times faster.
            (Self::Arm64, false) => {
                vec!["-M", "virt", "-accel", accel, "-cpu", "max,pauth-impdef=on"]
            }
            (Self::Arm64, true) => vec![
                "-M",
                "virt,gic-version=max",
                "-accel",
                accel,
                "-cpu",
                "host",
            ],
        }
    }

    /// Seconds a VM of this architecture may run by default under
    /// `cargo xtask vm-test`: arm64 is emulated on the amd64 host and takes
    /// about twice as long.
    pub fn default_timeout(self) -> u64 {
        match self {
            Self::Amd64 => 300,
            Self::Arm64 => 600,
        }
    }

    /// The kernel's name for the serial console of that machine.
    pub fn console(self) -> &'static str {
        match self {
            Self::Amd64 => "ttyS0",
            Self::Arm64 => "ttyAMA0",
        }
    }

    /// Installs the musl target and the C compiler (quick when present).
    pub fn ensure_target(self) -> Result<()> {
        crate::setup::apt_install(&[self.c_compiler()])?;
        crate::setup::rustup_target(self.rust_target())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_builds_name_their_linker_and_compiler() {
        let mut command = Command::new("cargo");
        Arch::Arm64.cargo_env(&mut command);
        let envs: Vec<(String, String)> = command
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.unwrap().to_string_lossy().into_owned(),
                )
            })
            .collect();
        assert!(envs.contains(&(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER".into(),
            "aarch64-linux-gnu-gcc".into()
        )));
        assert!(envs.contains(&(
            "CC_aarch64_unknown_linux_musl".into(),
            "aarch64-linux-gnu-gcc".into()
        )));
        assert!(envs.contains(&(
            "AR_aarch64_unknown_linux_musl".into(),
            "aarch64-linux-gnu-ar".into()
        )));
    }

    #[test]
    fn names_follow_debian_and_rust() {
        assert_eq!(Arch::Arm64.rust_target(), "aarch64-unknown-linux-musl");
        assert_eq!(Arch::Arm64.debian(), "arm64");
        assert_eq!(Arch::Amd64.console(), "ttyS0");
        assert_eq!(Arch::Arm64.console(), "ttyAMA0");
    }
}
