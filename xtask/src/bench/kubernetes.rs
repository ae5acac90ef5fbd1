//! The Kubernetes phase: latency of kills named with their pod from a warm
//! store of pods served by a local API server, and oom-probe's RSS with
//! that store.

use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use oom_probe_cgroupfs::testing::MemoryCgroup;
use serde::Serialize;
use serde_json::json;

use super::{
    measure::{
        apiserver::{pod, ApiServer},
        hog, process_stats, stop, MIB,
    },
    sightings::{start_oom_probe, Sighting, DEFAULT_RING},
    stats::{percentiles, Percentiles},
};

/// The node name the bench's pods are scheduled on, and the `--node-name`
/// oom-probe is given, so that its watch selects them.
const BENCH_NODE: &str = "bench-node";

/// The phase's figures (`kubernetes` in the JSON).
#[derive(Debug, Serialize)]
pub(crate) struct KubernetesNames {
    /// Pods the API server held, all on [`BENCH_NODE`].
    pub(crate) pods_in_store: usize,
    /// Kills made (in pod-0's container cgroup).
    pub(crate) kills: usize,
    /// Kills oom-probe reported.
    pub(crate) caught: usize,
    /// Of them, those whose event named the pod.
    pub(crate) named: usize,
    /// Null when it caught none.
    pub(crate) latency_us: Option<Percentiles>,
    /// oom-probe's RSS with the store warm, before the kills, and its parts.
    pub(crate) rss_kib_with_store: u64,
    /// RssAnon with the store warm.
    pub(crate) anon_kib_with_store: u64,
    /// RssFile with the store warm.
    pub(crate) file_kib_with_store: u64,
}

/// `kills` sequential kills in pod-0's container cgroup (laid out as the
/// kubelet's cgroupfs driver does), oom-probe watching a local API server
/// that serves `pods` pods.
pub(crate) fn kubernetes_names(kills: usize, pods: usize) -> Result<KubernetesNames> {
    let server = ApiServer::start()?;
    let uid = |i: usize| format!("00000000-0000-4000-8000-{i:012}");
    let container_id = "5e".repeat(32);
    for i in 0..pods {
        let mut p = pod("bench", &format!("pod-{i}"), &uid(i), BENCH_NODE);
        p["spec"]["containers"] =
            json!([{"name": "app", "resources": {"limits": {"memory": "16Mi"}}}]);
        let id = if i == 0 {
            container_id.clone()
        } else {
            format!("{i:064}")
        };
        p["status"]["containerStatuses"] = json!([{
            "name": "app", "containerID": format!("containerd://{id}"),
            "image": "app", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}},
        }]);
        server.apply_pod(p);
    }
    // pod-0's cgroup, laid out as the kubelet's cgroupfs driver does.
    let top = MemoryCgroup::create(16 * MIB)?;
    let kubepods = top.create_child_named("kubepods", None)?;
    let burstable = kubepods.create_child_named("burstable", None)?;
    let pod_cgroup = burstable.create_child_named(&format!("pod{}", uid(0)), None)?;
    let container = pod_cgroup.create_child_named(&container_id, None)?;
    let leaf = container.path();
    let (tx, rx) = mpsc::channel();
    let kubeconfig = server.kubeconfig().to_string_lossy().into_owned();
    let mut tool = start_oom_probe(
        &tx,
        "oom-probe",
        DEFAULT_RING,
        &["--kubeconfig", &kubeconfig, "--node-name", BENCH_NODE],
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .requests()
        .iter()
        .any(|r| r.query("watch") == Some("true"))
    {
        if Instant::now() > deadline {
            bail!("oom-probe never watched the local API server");
        }
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_secs(1));
    let with_store = process_stats(tool.child.id());
    let mut pids = Vec::new();
    for _ in 0..kills {
        let mut child = hog()
            .arg("--cgroup")
            .arg(leaf)
            .args(["--comm", "bench-pod", "--mb", "64"])
            .spawn()?;
        pids.push(child.id());
        child.wait()?;
    }
    thread::sleep(Duration::from_secs(2));
    stop(&mut tool.child);
    let sightings: Vec<Sighting> = rx.try_iter().filter(|s| pids.contains(&s.pid)).collect();
    let mut latencies: Vec<u64> = sightings.iter().map(|s| s.latency_ns).collect();
    drop((container, pod_cgroup, burstable, kubepods, top)); // children first
    Ok(KubernetesNames {
        pods_in_store: pods,
        kills,
        caught: sightings.len(),
        named: sightings.iter().filter(|s| s.named_pod).count(),
        latency_us: percentiles(&mut latencies),
        rss_kib_with_store: with_store.rss_kib,
        anon_kib_with_store: with_store.anon_kib,
        file_kib_with_store: with_store.file_kib,
    })
}
