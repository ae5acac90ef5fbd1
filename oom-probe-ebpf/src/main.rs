//! The kernel side of oom-probe: hooks on the OOM-kill path that copy what the
//! kernel knows about each kill into a ring buffer. Kept small on purpose:
//! everything that can happen in userspace happens there.
//!
//! On the host this crate compiles to an empty program so that workspace-wide
//! `cargo clippy` and `cargo build` work; oom-probe's build.rs builds the real
//! object for `bpfel-unknown-none`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod mark_victim;
#[cfg(target_arch = "bpf")]
mod oom_kill_process;
#[cfg(target_arch = "bpf")]
mod process_exit;
#[cfg(target_arch = "bpf")]
mod signal_generate;
#[cfg(target_arch = "bpf")]
mod victim;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
