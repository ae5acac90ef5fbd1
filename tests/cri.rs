//! oom-probe's CRI client against a real runtime: a private containerd
//! (the harness's), asked over its socket the way `oom-probe watch
//! --cri-socket` asks the node's runtime to name a victim's pod and
//! container. The client's pure parts (cache, socket detection, dead
//! sockets) are unit-tested beside it in `oom-probe/src/enrich/cri.rs`.

use std::time::{Duration, Instant};

use oom_probe::enrich::cri::{
    CriClient, CriContainer, CriError, CALL_TIMEOUT, PAUSE_AFTER_TIMEOUT,
};
use oom_probe_test_support::{
    containerd::{Containerd, NAMESPACE},
    host_only, root_or_skip,
};

const MIB: u64 = 1 << 20;

/// Slack on top of a timeout: generous, because these tests check that
/// a call is bounded (does not hang), not how fast a busy CI machine is.
const SLACK: Duration = Duration::from_secs(5);

/// One runtime per test: the client's connection lives on it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// True when `test` may run here: as root, on the host (the kernel-matrix
/// VM has no containerd).
fn can_run(test: &str) -> bool {
    root_or_skip(test) && host_only(test, "needs containerd and runc")
}

#[test]
fn names_the_container_and_pod_of_a_running_container() {
    if !can_run("names_the_container_and_pod_of_a_running_container") {
        return;
    }
    let containerd = Containerd::start().unwrap();
    let pod = containerd.run_pod("cri-lookup").unwrap();
    let container = pod.start_container("app", 64 * MIB, &["--pause"]).unwrap();
    let rt = runtime();
    let client = rt
        .block_on(CriClient::connect(Some(containerd.socket().into())))
        .unwrap();
    assert!(
        client.runtime().starts_with("containerd "),
        "{}",
        client.runtime()
    );
    assert_eq!(client.socket(), containerd.socket());

    let found = rt.block_on(client.container(container.id())).unwrap();
    assert_eq!(
        found,
        CriContainer {
            container_id: container.id().into(),
            container_name: "app".into(),
            pod_name: Some("cri-lookup".into()),
            namespace: Some(NAMESPACE.into()),
            pod_uid: Some(pod.uid().into()),
            sandbox_id: pod.sandbox_id().into(),
            init_pid: found.init_pid,
            exited: false,
        }
    );
    assert!(
        found.init_pid.is_some(),
        "containerd's verbose info has a pid"
    );

    let unknown = "0".repeat(64);
    let err = rt.block_on(client.container(&unknown)).unwrap_err();
    assert!(matches!(err, CriError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(&unknown), "{err}");
    // The pause process's cgroup is named after the sandbox, no container.
    let err = rt.block_on(client.container(pod.sandbox_id())).unwrap_err();
    assert!(matches!(err, CriError::NotFound { .. }), "{err}");
}

#[test]
fn a_frozen_runtime_costs_at_most_the_timeout_and_cached_answers_no_call() {
    if !can_run("a_frozen_runtime_costs_at_most_the_timeout_and_cached_answers_no_call") {
        return;
    }
    let containerd = Containerd::start().unwrap();
    let pod = containerd.run_pod("cri-frozen").unwrap();
    let container = pod.start_container("app", 64 * MIB, &["--pause"]).unwrap();
    let rt = runtime();
    let client = rt
        .block_on(CriClient::connect(Some(containerd.socket().into())))
        .unwrap();
    let first = rt.block_on(client.container(container.id())).unwrap();

    let frozen = containerd.freeze();
    // A call now would time out: an answer means it came from the cache.
    let again = rt.block_on(client.container(container.id())).unwrap();
    assert_eq!(again, first);

    let started = Instant::now();
    let err = rt.block_on(client.container(&"1".repeat(64))).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, CriError::Timeout { .. }), "{err}");
    assert!(
        took >= CALL_TIMEOUT && took < CALL_TIMEOUT + SLACK,
        "took {took:?}"
    );
    // After a timeout the runtime is not asked for a while: no wait.
    let started = Instant::now();
    let err = rt.block_on(client.container(&"2".repeat(64))).unwrap_err();
    assert!(matches!(err, CriError::Paused { .. }), "{err}");
    assert!(
        started.elapsed() < CALL_TIMEOUT,
        "took {:?}",
        started.elapsed()
    );
    // A cached answer is still given.
    assert_eq!(
        rt.block_on(client.container(container.id())).unwrap(),
        first
    );
    // A timeout is not cached: once the runtime is back, it is asked again.
    drop(frozen);
    std::thread::sleep(PAUSE_AFTER_TIMEOUT);
    let err = rt.block_on(client.container(&"1".repeat(64))).unwrap_err();
    assert!(matches!(err, CriError::NotFound { .. }), "{err}");
}

#[test]
fn a_containerd_without_its_cri_plugin_is_named_as_such() {
    if !can_run("a_containerd_without_its_cri_plugin_is_named_as_such") {
        return;
    }
    let containerd = Containerd::start_without_cri().unwrap();
    let err = runtime()
        .block_on(CriClient::connect(Some(containerd.socket().into())))
        .err()
        .unwrap();
    assert!(matches!(err, CriError::NotCri { .. }), "{err}");
    assert!(err.to_string().contains("disabled_plugins"), "{err}");
}
