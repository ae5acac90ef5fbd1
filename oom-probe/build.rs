//! Builds the eBPF object (crate `oom-probe-ebpf`) with nightly and
//! bpf-linker, so that `cargo build` alone yields a complete binary.
//! `cargo xtask setup` installs both.

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../oom-probe-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "oom-probe-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../oom-probe-ebpf"),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
