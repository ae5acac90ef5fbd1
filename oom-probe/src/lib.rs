//! oom-probe reports every Linux OOM kill with the pod and container it hit.
//!
//! The data flows one way: [`probes`] attach eBPF hooks that put kernel
//! records in a ring buffer, [`decode`] turns the bytes into typed records,
//! [`event`] builds the user-facing event (enriched by [`enrich`] and [`kube`]), and
//! [`sink`] writes it.

pub mod check;
pub mod clock;
pub mod decode;
pub mod enrich;
pub mod event;
pub mod kube;
pub mod probes;
pub mod sink;
pub mod watch;
