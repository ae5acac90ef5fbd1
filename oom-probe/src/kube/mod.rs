//! Everything that talks to the Kubernetes API server, in data-flow order:
//! the [`client`], the [`watch`] of this node's pods that feeds the pod
//! [`store`] (each [`pod`] projected to what names a kill; [`quantity`] reads
//! its memory figures), the [`names`] joiner that fills an event's
//! `kubernetes` from the container runtime and the store, the
//! Kubernetes [`events`] posted for kills (within the [`event_rate`]
//! limit), and the [`naming`] connection that brings them up off the
//! start-up path.

pub mod client;
pub mod event_rate;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod names;
pub mod naming;
pub mod pod;
pub mod quantity;
pub mod store;
pub mod watch;
