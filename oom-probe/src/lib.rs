//! oom-probe reports every Linux OOM kill with the pod and container it hit.
//!
//! The data flows one way: [`probes`] attach eBPF hooks that put kernel
//! records in a ring buffer, [`decode`] turns the bytes into typed records,
//! [`event`] builds the user-facing event (enriched by [`cgroups`]), and
//! [`output`] writes it.

pub mod cgroups;
pub mod check;
pub mod clock;
pub mod decode;
pub mod enrich;
pub mod event;
pub mod http;
pub mod k8s_events;
pub mod kernel_offsets;
pub mod metrics;
pub mod node;
pub mod output;
pub mod probes;
pub mod unobserved;
pub mod watch;
