//! cgroupfs facts, shared by oom-probe, its end-to-end tests, the benchmark
//! and xtask, so each is read one way: where the hierarchies are mounted
//! ([`mountinfo`]), which path a cgroup id has ([`resolver`]), how many OOM
//! kills the kernel counted in a cgroup ([`counters`]), the kernel's clock
//! ([`clock`]), the printable form of names that are bytes ([`text`]), and
//! memory cgroups made and removed for tests ([`testing`]).
//!
//! A leaf crate: std and libc only, nothing that needs the eBPF toolchain,
//! protoc or a network.

pub mod clock;
pub mod counters;
pub mod mountinfo;
pub mod resolver;
pub mod testing;
pub mod text;

pub use mountinfo::{CgroupMode, Hierarchies};
pub use resolver::CgroupResolver;
