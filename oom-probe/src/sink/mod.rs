//! Where events go, and how: the [`publish`]er's commit protocol over the
//! [`ledger`] (the state file and the kernel's kill counters), the
//! [`history`] store, stdout ([`output`], [`filter`]) and Prometheus
//! [`metrics`], with the [`http`] listener that serves them on its own
//! thread ([`http_thread`]).

pub mod fault;
pub mod filter;
pub mod history;
pub mod history_slot;
pub mod http;
pub mod http_thread;
pub mod ledger;
pub mod metrics;
pub mod output;
pub mod publish;
