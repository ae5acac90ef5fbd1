//! A bare aya loader, the start-up peer `cargo xtask bench` measures beside
//! oom-probe: the idiomatic aya calls and nothing else.
//!
//! `bare-aya-loader <eBPF object> [raw|btf]` loads the object with
//! `Ebpf::load` (aya parses the kernel's BTF as it always does), loads and
//! attaches its `mark_victim` program (`raw`: `raw_tp`, the default; `btf`:
//! `tp_btf`, which needs the kernel's BTF once more), prints `attached` on
//! stdout and waits until stdin closes or it is killed. The kernel offsets
//! oom-probe hands its programs are left zero: the verifier does not need
//! them, and nothing here reads a record.
//!
//! With `BARE_LOADER_PHASES=1` it prints the milliseconds since exec of each
//! phase on stderr.

use std::{io::Read, time::Instant};

use aya::{
    programs::{BtfTracePoint, RawTracePoint},
    Btf, Ebpf,
};

fn main() {
    let started = Instant::now();
    let phases = std::env::var_os("BARE_LOADER_PHASES").is_some();
    let phase = |name: &str| {
        if phases {
            eprintln!("{:8.2} ms {name}", started.elapsed().as_secs_f64() * 1000.0);
        }
    };
    let mut args = std::env::args().skip(1);
    let object = args
        .next()
        .expect("usage: bare-aya-loader <object> [raw|btf]");
    let hook = args.next().unwrap_or_else(|| "raw".into());
    let bytes = std::fs::read(&object).expect("cannot read the eBPF object");
    phase("object read");
    let mut ebpf = Ebpf::load(&bytes).expect("cannot load the eBPF object");
    phase("Ebpf::load");
    match hook.as_str() {
        "raw" => {
            let program: &mut RawTracePoint = ebpf
                .program_mut("mark_victim_raw")
                .expect("no mark_victim_raw")
                .try_into()
                .expect("not a raw tracepoint");
            program.load().expect("cannot load mark_victim_raw");
            phase("program loaded");
            program.attach("mark_victim").expect("cannot attach");
        }
        "btf" => {
            let btf = Btf::from_sys_fs().expect("no kernel BTF");
            phase("Btf::from_sys_fs");
            let program: &mut BtfTracePoint = ebpf
                .program_mut("mark_victim_btf")
                .expect("no mark_victim_btf")
                .try_into()
                .expect("not a tp_btf program");
            program
                .load("mark_victim", &btf)
                .expect("cannot load mark_victim_btf");
            phase("program loaded");
            program.attach().expect("cannot attach");
        }
        other => panic!("unknown hook {other}: raw or btf"),
    }
    phase("attached");
    println!("attached");
    // Stay attached until the bench closes stdin or kills us.
    let _ = std::io::stdin().read(&mut [0u8; 1]);
}
