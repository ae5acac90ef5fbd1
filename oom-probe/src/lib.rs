//! oom-probe reports every Linux OOM kill with the pod and container it hit.
//!
//! The data flows one way: [`probes`] attach eBPF hooks that put kernel
//! records in a ring buffer, [`decode`] turns the bytes into typed records,
//! [`event`] builds the user-facing event (enriched by [`enrich`] and [`kube`]), and
//! [`sink`] writes it.

/// The log filter when `RUST_LOG` is unset: info and above, except the kube
/// client's line per failed HTTP request (oom-probe logs an API outage once
/// and counts the failures instead).
pub const DEFAULT_LOG_FILTER: &str = "info,kube_client::client::builder=off";

pub mod boot;
pub mod check;
pub mod clock;
pub mod decode;
pub mod duration;
pub mod enrich;
pub mod event;
#[cfg(test)]
mod event_reference;
pub mod exit_code;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod kill_trace;
pub mod kube;
pub mod node;
pub mod pressure;
pub mod probes;
pub mod sink;
pub mod watch;

/// The printable form of names that are bytes (comm, cgroup names).
pub use oom_probe_cgroupfs::text;
