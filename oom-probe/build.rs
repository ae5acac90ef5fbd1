//! Builds the eBPF object (crate `oom-probe-ebpf`) with nightly and
//! bpf-linker, so that `cargo build` alone yields a complete binary.
//! `cargo xtask setup` installs both; `OOM_PROBE_EBPF_TOOLCHAIN` names another
//! toolchain (xtask sets `stable` plus `RUSTC_BOOTSTRAP=1` when nightly is absent).

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../oom-probe-common/src");
    println!("cargo:rerun-if-env-changed=OOM_PROBE_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("OOM_PROBE_EBPF_TOOLCHAIN").ok();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "oom-probe-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../oom-probe-ebpf"),
            ..Default::default()
        }],
        match toolchain.as_deref() {
            None | Some("nightly") => aya_build::Toolchain::Nightly,
            Some(other) => aya_build::Toolchain::Custom(other),
        },
    )
}
