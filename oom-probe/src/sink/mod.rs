//! Where events go: stdout (JSON lines or a table), Prometheus metrics, and
//! the HTTP listener that serves them.

pub mod http;
pub mod metrics;
pub mod output;
