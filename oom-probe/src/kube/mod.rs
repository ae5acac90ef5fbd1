//! Everything that talks to the Kubernetes API server: the client, this
//! node's pod store (names, requests, limits, owners, evictions), the namer
//! that joins it with the container runtime, and the Events posted for kills.

pub mod events;
pub mod names;
pub mod store;
