//! Everything that talks to the Kubernetes API server, in data-flow order:
//! the [`client`], the [`watch`] of this node's pods that feeds the pod
//! [`store`] (each [`pod`] projected to what names a kill; [`quantity`] reads
//! its memory figures), the [`names`] joiner that fills an event's
//! `kubernetes` from the container runtime and the store, and the
//! Kubernetes [`events`] posted for kills.

pub mod client;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod names;
pub mod pod;
pub mod quantity;
pub mod store;
pub mod watch;
