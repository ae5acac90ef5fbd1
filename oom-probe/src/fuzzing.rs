//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off in
//! every build that ships): each feeds arbitrary bytes to a parser of
//! outside input that is not public on its own, the way the agent feeds it,
//! and panics only where the agent would.

use std::path::PathBuf;

use crate::{
    event::Event,
    kube::pod,
    sink::{
        filter::Filter,
        history::HistoryReader,
        ledger::KillLedger,
        output::{Output, OutputFormat},
    },
};

/// A pod object as the API server's watch delivers it (JSON): read as the
/// pod store reads it, and as the eviction watcher does (the kubelet's
/// `Evicted` status and its message).
pub fn kube_pod(json: &[u8]) {
    let Ok(pod) = serde_json::from_slice::<k8s_openapi::api::core::v1::Pod>(json) else {
        return;
    };
    if let Some(summary) = pod::summarize(&pod) {
        for id in summary.container_ids() {
            let _ = pod::bare_container_id(id);
        }
    }
    let _ = pod::eviction(&pod);
}

/// The agent's state file (the ledger of kills accounted for per cgroup):
/// loaded, then every cgroup of it accounted once more, as a kill in it
/// would be.
pub fn state_file(bytes: &[u8]) {
    let Ok(mut ledger) = KillLedger::from_state_bytes(bytes) else {
        return;
    };
    for id in ledger.cgroup_ids() {
        ledger.observed(id);
    }
}

/// One record of the history store (a JSON line) as `oom-probe history`
/// reads it: parsed into an event, filtered, printed as a table row and
/// as JSON again.
pub fn history_record(line: &[u8]) {
    let Ok(event) = serde_json::from_slice::<Event>(line) else {
        return;
    };
    let filter = Filter {
        namespace: Some("default".into()),
        pod: None,
        container: None,
    };
    let _ = filter.matches(&event);
    let _ = Filter::default().matches(&event);
    let mut table = Output::new(OutputFormat::Table, std::io::sink());
    table.write(&event).expect("a table row written to a sink");
    let json = serde_json::to_string(&event).expect("an event serializes");
    let again: Event = serde_json::from_str(&json).expect("an event reads back what it wrote");
    assert_eq!(
        serde_json::to_string(&again).expect("an event serializes"),
        json,
        "an event survives a round trip through its JSON"
    );
}

/// A history store file with arbitrary contents (a corrupted disk, a
/// file that is not a store), opened and read as `oom-probe history` does:
/// errors are fine, panics are not.
pub fn history_file(bytes: &[u8]) {
    thread_local! {
        static PATH: PathBuf = std::env::temp_dir().join(format!(
            "oom-probe-fuzz-history-{}-{:?}.redb",
            std::process::id(),
            std::thread::current().id()
        ));
    }
    PATH.with(|path| {
        if std::fs::write(path, bytes).is_err() {
            return;
        }
        if let Ok(reader) = HistoryReader::open(path) {
            let _ = reader.read(None);
        }
        let _ = std::fs::remove_file(path);
    });
}
