//! The kernel OOM-kills processes in containers that a real containerd made
//! through the CRI, the way the kubelet makes them; `oom-probe watch
//! --cri-socket` must name the pod and container of each victim with no
//! Kubernetes API server at all.

use std::time::Duration;

use oom_probe_test_support::{
    containerd::{Containerd, Pod, PodContainer, NAMESPACE},
    host_only, root_or_skip, Watcher, EVENT_TIMEOUT,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const SETTLE: Duration = Duration::from_millis(1500);

/// Starts a watcher that asks this containerd's CRI about victims.
fn watcher_for(containerd: &Containerd) -> Watcher {
    let socket = containerd.socket().to_str().expect("UTF-8 socket path");
    Watcher::start(&["--cri-socket", socket]).unwrap()
}

/// The one event whose victim has this comm (unique to the test). Matched
/// by comm, not cgroup path, so a missing path fails an assertion that says
/// so instead of a time-out.
fn the_kill(watcher: &mut Watcher, comm: &str) -> Value {
    let events = watcher
        .events_matching(1, SETTLE, |e| e["victim"]["comm"] == comm)
        .unwrap();
    assert_eq!(events.len(), 1, "one kill, one event: {events:#?}");
    events.into_iter().next().unwrap()
}

/// Checks what the runtime alone can tell: pod, namespace, container, ids.
fn assert_named(event: &Value, pod: &Pod, container: &PodContainer, name: &str) {
    let kubernetes = &event["kubernetes"];
    assert_eq!(kubernetes["namespace"], NAMESPACE, "{event:#}");
    assert_eq!(kubernetes["pod"], pod.name(), "{event:#}");
    assert_eq!(kubernetes["container"], name, "{event:#}");
    assert_eq!(kubernetes["container_id"], container.id(), "{event:#}");
    assert_eq!(kubernetes["pod_uid"], pod.uid(), "{event:#}");
    let path = event["victim"]["cgroup_path"].as_str().unwrap_or_else(|| {
        panic!("victim.cgroup_path missing: the container's cgroup went unnamed: {event:#}")
    });
    assert_eq!(path, container.cgroup_path(), "{event:#}");
    assert!(path.contains(&format!("pod{}", pod.uid())), "{path}");
    assert!(path.ends_with(container.id()), "{path}");
}

#[test]
fn worker_killed_in_a_running_container_is_silent_and_named() {
    if !root_or_skip("worker_killed_in_a_running_container_is_silent_and_named")
        || !host_only(
            "worker_killed_in_a_running_container_is_silent_and_named",
            "needs containerd and runc",
        )
    {
        return;
    }
    let containerd = Containerd::start().unwrap();
    let pod = containerd.run_pod("celery-worker").unwrap();
    let mut watcher = watcher_for(&containerd);
    // PID 1 forks a worker that hits the limit, reports its death and lives on.
    let args = [
        "--in-container",
        "--fork",
        "--pause",
        "--comm",
        "ctr-worker",
        "--mb",
        "512",
    ];
    let container = pod.start_container("worker", 64 * MIB, &args).unwrap();
    let report = container
        .wait_for_log("killed by signal 9", EVENT_TIMEOUT)
        .unwrap();
    let child_pid: u64 = report
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no child pid in {report:?}"));

    let event = the_kill(&mut watcher, "ctr-worker");
    assert_named(&event, &pod, &container, "worker");
    assert_eq!(event["victim"]["ns_pid"], child_pid, "{event:#}");
    assert_eq!(event["silent"], true, "PID 1 survived: {event:#}");
    assert_eq!(event["memcg"]["limit_bytes"], 64 * MIB, "{event:#}");
}

#[test]
fn init_killed_in_a_container_is_not_silent_and_named() {
    if !root_or_skip("init_killed_in_a_container_is_not_silent_and_named")
        || !host_only(
            "init_killed_in_a_container_is_not_silent_and_named",
            "needs containerd and runc",
        )
    {
        return;
    }
    let containerd = Containerd::start().unwrap();
    let pod = containerd.run_pod("api-server").unwrap();
    let mut watcher = watcher_for(&containerd);
    // PID 1 itself allocates past the limit: the container dies with it.
    let args = ["--in-container", "--comm", "ctr-init", "--mb", "512"];
    let container = pod.start_container("api", 48 * MIB, &args).unwrap();
    let exit = container.wait_for_exit(EVENT_TIMEOUT).unwrap();
    // What Kubernetes would show for this one (and not for a worker's death).
    assert_eq!(
        (exit.exit_code, exit.reason.as_str()),
        (137, "OOMKilled"),
        "{exit:?}"
    );

    let event = the_kill(&mut watcher, "ctr-init");
    assert_named(&event, &pod, &container, "api");
    assert_eq!(event["victim"]["ns_pid"], 1, "{event:#}");
    assert_eq!(event["silent"], false, "the container died: {event:#}");
    assert_eq!(event["memcg"]["limit_bytes"], 48 * MIB, "{event:#}");
}

/// `shareProcessNamespace: true`: pid 1 of every container is the pause
/// process, so the pid namespace cannot tell a container's own main process
/// from a worker. `silent` is decided against the container's init (the
/// runtime's pid for it): the worker's death is silent, the main process's
/// (the container dies, Kubernetes shows OOMKilled) is not.
#[test]
fn in_a_pod_sharing_its_pid_namespace_silent_follows_the_containers_own_init() {
    let test = "in_a_pod_sharing_its_pid_namespace_silent_follows_the_containers_own_init";
    if !root_or_skip(test) || !host_only(test, "needs containerd and runc") {
        return;
    }
    let containerd = Containerd::start().unwrap();
    let pod = containerd.run_pod_sharing_pids("shared-pids").unwrap();
    let mut watcher = watcher_for(&containerd);

    let args = [
        "--in-container",
        "--fork",
        "--pause",
        "--comm",
        "shared-worker",
        "--mb",
        "512",
    ];
    let workers = pod.start_container("sidecar", 64 * MIB, &args).unwrap();
    workers
        .wait_for_log("killed by signal 9", EVENT_TIMEOUT)
        .unwrap();
    let event = the_kill(&mut watcher, "shared-worker");
    assert_named(&event, &pod, &workers, "sidecar");
    assert_ne!(event["victim"]["ns_pid"], 1, "{event:#}");
    assert_eq!(event["silent"], true, "its container lives on: {event:#}");

    let args = ["--in-container", "--comm", "shared-main", "--mb", "512"];
    let main = pod.start_container("app", 48 * MIB, &args).unwrap();
    let exit = main.wait_for_exit(EVENT_TIMEOUT).unwrap();
    assert_eq!(
        (exit.exit_code, exit.reason.as_str()),
        (137, "OOMKilled"),
        "{exit:?}"
    );
    let event = the_kill(&mut watcher, "shared-main");
    assert_named(&event, &pod, &main, "app");
    assert_ne!(
        event["victim"]["ns_pid"], 1,
        "pid 1 is the pause process here: {event:#}"
    );
    assert_eq!(event["silent"], false, "the container died: {event:#}");
}
