//! Pods from the API server (JSON) as the pod store and the eviction
//! watcher read them: container ids, memory quantities, the kubelet's
//! eviction status and message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    oom_probe::fuzzing::kube_pod(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = oom_probe::kube::quantity::quantity_bytes(text);
    }
});
