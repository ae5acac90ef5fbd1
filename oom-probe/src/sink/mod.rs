//! Where events go: stdout (JSON lines or a table), the history store,
//! Prometheus metrics, and the HTTP listener that serves them.

pub mod history;
pub mod http;
pub mod metrics;
pub mod output;
