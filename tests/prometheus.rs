//! A real Prometheus (Debian's package) on loopback, with a temporary data
//! directory, scrapes `oom-probe run` every second while the kernel OOM-kills
//! real processes: deploy/'s alert rules go firing for a silent kill and an
//! init kill within two rule evaluations, `promtool check metrics` is clean
//! on the exposition, and every Grafana dashboard panel's query returns data.

use std::{
    fs,
    io::{Read, Write},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use oom_probe_test_support::{
    deploy::{monitoring_dir, monitoring_objects, write_rule_file},
    free_loopback_addr, host_only, http_get, root_or_skip, run_hog_with_child, MemoryCgroup,
    Watcher,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
/// Prometheus' scrape and rule evaluation interval, in seconds.
const INTERVAL_S: f64 = 1.0;
/// How long Prometheus may take to start, scrape or evaluate.
const TIMEOUT: Duration = Duration::from_secs(90);

/// A Prometheus server of its own: loopback, temporary data, killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` with deploy/'s rules and waits
    /// until it is ready.
    fn start(target: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("oom-probe-prometheus-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        write_rule_file(&dir.join("rules.yaml"));
        let config = serde_json::json!({
            "global": {
                "scrape_interval": format!("{INTERVAL_S}s"),
                "scrape_timeout": format!("{INTERVAL_S}s"),
                "evaluation_interval": format!("{INTERVAL_S}s"),
            },
            "rule_files": ["rules.yaml"],
            "scrape_configs": [pod_monitor_scrape_config(target)],
        });
        fs::write(
            dir.join("prometheus.yml"),
            serde_yaml_ng::to_string(&config).unwrap(),
        )
        .unwrap();
        let addr = free_loopback_addr();
        let log = fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start prometheus ({e}): cargo xtask test installs Debian's prometheus package")
            });
        let mut prometheus = Self { child, addr, dir };
        let deadline = Instant::now() + TIMEOUT;
        while !matches!(http_get(&prometheus.addr, "/-/ready"), Ok((200, _))) {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", prometheus.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never got ready:\n{}",
                prometheus.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET an HTTP API path (HTTP/1.0: a plain body, never chunked); the
    /// `data` of a successful answer.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let mut stream = std::net::TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET {path}?{query} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let answer: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{path}?{query}: not JSON ({e}): {response}"));
        assert_eq!(answer["status"], "success", "{path}?{query}: {answer}");
        answer["data"].clone()
    }

    /// An instant query's result vector or matrix.
    fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("/api/v1/query", &[("query", expr)]);
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `check` until it returns something or the timeout passes.
    fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; prometheus log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The scrape job the Prometheus Operator makes of deploy/'s PodMonitor, for
/// an agent pod at `target`: the target labels it gives a pod (namespace,
/// pod, container, node name), then the PodMonitor's own relabelings.
fn pod_monitor_scrape_config(target: &str) -> Value {
    let (_, monitor) = monitoring_objects()
        .into_iter()
        .find(|(_, o)| o["kind"] == "PodMonitor")
        .expect("deploy/components/monitoring has a PodMonitor");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let relabel_configs: Vec<Value> = endpoint["relabelings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let mut config = serde_json::Map::new();
            for (key, value) in r.as_object().unwrap() {
                let key = match key.as_str() {
                    "sourceLabels" => "source_labels",
                    "targetLabel" => "target_label",
                    "action" | "regex" | "separator" | "replacement" | "modulus" => key,
                    other => panic!("PodMonitor relabeling field {other} is not mapped here"),
                };
                config.insert(key.to_string(), value.clone());
            }
            Value::Object(config)
        })
        .collect();
    serde_json::json!({
        "job_name": "oom-probe",
        "metrics_path": endpoint["path"],
        "static_configs": [{
            "targets": [target],
            "labels": {
                "namespace": monitor["metadata"]["namespace"],
                "pod": "oom-probe-test",
                "container": "oom-probe",
                "__meta_kubernetes_pod_node_name": "test-node",
            },
        }],
        "relabel_configs": relabel_configs,
    })
}

/// The (timestamp, value) samples of every series of a range selector.
fn samples(series: &Value) -> Vec<(f64, f64)> {
    series["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_f64().unwrap(),
                pair[1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// The selector of this test's kill series: a memory cgroup outside any pod,
/// so namespace, pod and container are empty (and absent in Prometheus).
fn our_series(silent: bool) -> String {
    format!(
        r#"namespace="",pod="",container="",killer="kernel",constraint="memcg",silent="{silent}""#
    )
}

/// Checks that `alert` went firing for this test's kill within two rule
/// evaluations of the first scrape that saw it, by Prometheus' own clocks:
/// the kill's first sample of `oom_probe_last_kill_timestamp_seconds` and the
/// first firing sample of `ALERTS` after it.
fn fires_within_two_evaluations(
    prometheus: &Prometheus,
    alert: &str,
    silent: bool,
    killed_after: f64,
) {
    let series = our_series(silent);
    let seen_at = prometheus.wait_for(&format!(
            "the scrape of the silent={silent} kill, as {{{series}}} (a cgroup outside any pod: the \
             agent pod's target labels must not stand in for namespace, pod, container)"
        ), |p| {
        p.query(&format!(
            "oom_probe_last_kill_timestamp_seconds{{{series}}}[10m]"
        ))
        .iter()
        .flat_map(samples)
        .filter(|(_, value)| *value >= killed_after)
        .map(|(at, _)| at)
        .reduce(f64::min)
    });
    let firing = prometheus.wait_for(&format!("{alert} to fire"), |p| {
        p.api("/api/v1/alerts", &[])["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| {
                a["labels"]["alertname"] == alert
                    && a["state"] == "firing"
                    && a["labels"]["silent"].as_str() == Some(if silent { "true" } else { "false" })
                    && a["labels"]["constraint"] == "memcg"
                    && a["labels"]["killer"] == "kernel"
            })
            .cloned()
    });
    // A kill outside any pod has no namespace, pod or container: the agent
    // pod's own target labels must not stand in for them.
    for label in ["namespace", "pod", "container", "exported_namespace"] {
        assert!(firing["labels"][label].is_null(), "{label} in {firing}");
    }
    assert_eq!(firing["labels"]["node"], "test-node", "{firing}");
    assert!(
        firing["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{firing}"
    );
    let fired_at = prometheus.wait_for(&format!("{alert}'s ALERTS sample"), |p| {
        p.query(&format!(
            r#"ALERTS{{alertname="{alert}",alertstate="firing",{series}}}[10m]"#
        ))
        .iter()
        .flat_map(samples)
        .map(|(at, _)| at)
        .filter(|at| *at >= seen_at)
        .reduce(f64::min)
    });
    eprintln!(
        "{alert}: first scrape with the kill at {seen_at:.3}, firing at {fired_at:.3} ({:.3} s)",
        fired_at - seen_at
    );
    assert!(
        fired_at - seen_at <= 2.0 * INTERVAL_S,
        "{alert} fired {:.1} s after the scrape that saw the kill (at {seen_at}), more than two \
         {INTERVAL_S} s evaluations",
        fired_at - seen_at
    );
}

#[test]
fn prometheus_alerts_fire_for_real_kills_and_every_dashboard_panel_has_data() {
    let test = "prometheus_alerts_fire_for_real_kills_and_every_dashboard_panel_has_data";
    if !root_or_skip(test)
        || !host_only(
            test,
            "needs Prometheus (Debian's package) and deploy/ from the source tree",
        )
    {
        return;
    }
    let addr = free_loopback_addr();
    let state = RemovedOnDrop(std::env::temp_dir().join(format!(
        "oom-probe-prometheus-state-{}.json",
        std::process::id()
    )));
    let _agent = Watcher::start_command(
        "run",
        &[
            "--listen",
            &addr,
            "--state-file",
            state.0.to_str().unwrap(),
            "--no-history",
        ],
    )
    .unwrap();
    let prometheus = Prometheus::start(&addr);
    prometheus.wait_for("the first scrape of oom-probe", |p| {
        p.query(r#"up{job="oom-probe"} == 1"#).first().cloned()
    });

    let killed_after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let cgroup = MemoryCgroup::create(32 * MIB).unwrap();
    run_hog_with_child(&cgroup, "--fork", "prom-silent", 128).unwrap();
    run_hog_with_child(&cgroup, "--pidns", "prom-init", 128).unwrap();
    // (the Watcher's own events are read so its pipe never fills)
    let mut agent = _agent;
    let events = agent
        .events_for(cgroup.relative_path(), 2, Duration::from_millis(500))
        .unwrap();
    let mut silent: Vec<&Value> = events.iter().map(|e| &e["silent"]).collect();
    silent.sort_by_key(|s| s.to_string());
    assert_eq!(
        silent,
        [&Value::Bool(false), &Value::Bool(true)],
        "{events:#?}"
    );

    fires_within_two_evaluations(&prometheus, "SilentOOMKill", true, killed_after);
    fires_within_two_evaluations(&prometheus, "OOMKill", false, killed_after);

    // The exposition passes Prometheus' own linter.
    let (status, exposition) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let lint = promtool.wait_with_output().unwrap();
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // The process_* metrics of every client library, scraped as Prometheus
    // stores them, and the build's revision.
    for metric in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_virtual_memory_bytes",
    ] {
        let found = prometheus.wait_for(&format!("a sample of {metric}"), |p| {
            p.query(&format!(r#"{metric}{{job="oom-probe"}}"#))
                .first()
                .cloned()
        });
        let value: f64 = found["value"][1].as_str().unwrap().parse().unwrap();
        assert!(
            value > 0.0 || metric == "process_cpu_seconds_total",
            "{found}"
        );
    }
    assert!(
        !prometheus
            .query(r#"oom_probe_build_info{revision!="",version!=""}"#)
            .is_empty(),
        "no oom_probe_build_info with a revision"
    );

    // Every dashboard query, as Grafana sends it with "All" namespaces.
    let dashboard: Value = serde_json::from_str(
        &fs::read_to_string(monitoring_dir().join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let namespace = variables.iter().find(|v| v["name"] == "namespace").unwrap();
    let all_namespaces = namespace["allValue"]
        .as_str()
        .expect("namespace has an allValue");
    // The variable's label_values() query asks for series of its metric.
    let metric = namespace["query"]
        .as_str()
        .unwrap()
        .trim_start_matches("label_values(")
        .split(',')
        .next()
        .unwrap();
    let series = prometheus.api("/api/v1/series", &[("match[]", metric)]);
    assert!(
        !series.as_array().unwrap().is_empty(),
        "no series of {metric}"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$namespace", all_namespaces)
                .replace("$__rate_interval", "1m");
            assert!(!expr.contains('$'), "{title}: unknown variable in {expr}");
            let result = prometheus.query(&expr);
            assert!(!result.is_empty(), "panel {title:?} is empty: {expr}");
            if expr.contains("oom_probe_kills_total") {
                let total: f64 = result
                    .iter()
                    .map(|r| r["value"][1].as_str().unwrap().parse::<f64>().unwrap())
                    .sum();
                assert!(
                    total >= 1.0,
                    "panel {title:?} shows no kill: {expr} -> {result:?}"
                );
            }
        }
    }
    drop(agent);
}

/// A file removed when the test ends, passed or not.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
