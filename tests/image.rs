//! The image users run, run the way the DaemonSet runs it: the Dockerfile's
//! `prebuilt` target is built from the static binary `cargo xtask static`
//! makes, imported into a private containerd and started through the CRI
//! with the DaemonSet's args, environment, host mounts, memory limit and
//! security context, all read from deploy/base (user 0, read-only root, no
//! privilege escalation, every capability dropped but BPF, PERFMON and
//! SYS_RESOURCE). In it, `check` must pass, and the agent must report a
//! kill in another pod's container, named through the runtime's socket in
//! the runtime directory mounted where the DaemonSet mounts it, and warn of memory pressure in a
//! container held at its limit (its registrations write to the host's
//! cgroupfs, mounted read-write, and to the container's own /proc).

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use oom_probe_cri::v1::{Capability, Int64Value, LinuxContainerSecurityContext, Mount};
use oom_probe_test_support::{
    containerd::{ContainerSpec, Containerd, NAMESPACE},
    deploy::base_objects,
    free_loopback_addr, host_only, http_get,
    image::build_stage,
    root_or_skip, skipped, EVENT_TIMEOUT, START_TIMEOUT,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const IMAGE_NAME: &str = "localhost/oom-probe:test";
/// What the downward API would put in NODE_NAME.
const NODE_NAME: &str = "node-from-downward-api";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The DaemonSet's pod spec and its oom-probe container, from deploy/'s
/// base as a cluster gets it (rendered by kustomize where kubectl exists).
fn daemonset() -> (Value, Value) {
    let mut found: Vec<Value> = base_objects()
        .into_iter()
        .filter(|(_, o)| o["kind"] == "DaemonSet")
        .map(|(_, o)| o["spec"]["template"]["spec"].clone())
        .collect();
    assert_eq!(found.len(), 1, "one DaemonSet in deploy/base: {found:#?}");
    let pod = found.pop().unwrap();
    let container = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "oom-probe")
        .expect("an oom-probe container")
        .clone();
    (pod, container)
}

/// The DaemonSet's securityContext as the kubelet hands it to the CRI.
/// A field this does not translate fails the test: it must follow the YAML.
fn security_context(container: &Value) -> LinuxContainerSecurityContext {
    let context = container["securityContext"].as_object().unwrap();
    let mut security = LinuxContainerSecurityContext::default();
    for (key, value) in context {
        match key.as_str() {
            "runAsUser" => {
                security.run_as_user = Some(Int64Value {
                    value: value.as_i64().unwrap(),
                })
            }
            "privileged" => security.privileged = value.as_bool().unwrap(),
            "allowPrivilegeEscalation" => security.no_new_privs = !value.as_bool().unwrap(),
            "readOnlyRootFilesystem" => security.readonly_rootfs = value.as_bool().unwrap(),
            "capabilities" => {
                let names = |field: &str| -> Vec<String> {
                    value[field]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| c.as_str().unwrap().to_string())
                        .collect()
                };
                security.capabilities = Some(Capability {
                    add_capabilities: grantable(names("add")),
                    drop_capabilities: names("drop"),
                    ..Default::default()
                });
            }
            other => panic!("securityContext.{other} is not translated to the CRI here"),
        }
    }
    security
}

/// The capabilities of `names` this machine can grant: a runtime cannot give
/// a container one that is not in its own bounding set (this project's
/// machines lack SYS_RESOURCE, which oom-probe needs only for the memlock
/// limit before 5.11). Each one left out is said loudly.
fn grantable(names: Vec<String>) -> Vec<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    names
        .into_iter()
        .filter(|name| {
            let number = match name.trim_start_matches("CAP_") {
                "SYS_ADMIN" => 21,
                "SYS_RESOURCE" => 24,
                "PERFMON" => 38,
                "BPF" => 39,
                other => panic!("capability {other}: add its number here"),
            };
            let held = bounding >> number & 1 == 1;
            if !held {
                // Straight to stderr, past the test's output capture.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** NOTE: CAP_{name} is not in this machine's bounding set: the image runs without it ***\n"
                );
            }
            held
        })
        .collect()
}

/// The DaemonSet's volume mounts with their hostPath sources; the runtime
/// directories and the state directory are the test's own: containerd's is
/// the private containerd's (its socket is `containerd.sock` in it), the
/// other runtimes' are empty directories in it.
fn mounts(pod: &Value, container: &Value, containerd_dir: &Path, state: &Path) -> Vec<Mount> {
    let volumes = pod["volumes"].as_array().unwrap();
    container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|mount| {
            let volume = volumes
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap_or_else(|| panic!("no volume for {mount}"));
            let host = volume["hostPath"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("not a hostPath volume: {volume}"));
            let host = match host {
                "/run/containerd" => containerd_dir.display().to_string(),
                "/run/k3s/containerd" | "/run/crio" => {
                    let empty =
                        containerd_dir.join(format!("not-this-runtime{}", host.replace('/', "-")));
                    fs::create_dir_all(&empty).unwrap();
                    empty.display().to_string()
                }
                "/var/lib/oom-probe" => state.display().to_string(),
                other => other.to_string(),
            };
            Mount {
                container_path: mount["mountPath"].as_str().unwrap().to_string(),
                host_path: host,
                readonly: mount["readOnly"].as_bool().unwrap_or(false),
                ..Default::default()
            }
        })
        .collect()
}

/// `128Mi` and the like, in bytes.
fn quantity(text: &str) -> u64 {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let factor = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("unit {other} in {text}"),
    };
    number.parse::<u64>().unwrap() * factor
}

/// True when an ELF64 executable names a program interpreter (`PT_INTERP`,
/// the dynamic loader): a binary that cannot run `FROM scratch`.
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..5], b"\x7fELF\x02", "an ELF64 executable");
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (entry_size, entries) = (u16_at(0x36), u16_at(0x38));
    (0..entries).any(|i| {
        let at = phoff + i * entry_size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

/// The static binary the image is built from (`cargo xtask test` sets
/// `OOM_PROBE_STATIC_BIN` to what `cargo xtask static` built).
fn static_binary(test: &str) -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("OOM_PROBE_STATIC_BIN") {
        return Some(bin.into());
    }
    if std::env::var_os("OOM_PROBE_ALLOW_SKIP").is_some_and(|v| v == "1") {
        skipped(
            test,
            "OOM_PROBE_STATIC_BIN is not set (cargo xtask static builds it)",
        );
        return None;
    }
    panic!("{test} needs OOM_PROBE_STATIC_BIN: run it with `cargo xtask test`, or set it to what `cargo xtask static` prints");
}

#[test]
fn the_image_runs_as_the_daemonset_and_reports_a_kill_in_another_container() {
    const TEST: &str = "the_image_runs_as_the_daemonset_and_reports_a_kill_in_another_container";
    if !root_or_skip(TEST) || !host_only(TEST, "needs containerd, runc and the source tree") {
        return;
    }
    let Some(binary) = static_binary(TEST) else {
        return;
    };
    // The Dockerfile's own `prebuilt` target, from the binary as a path in
    // the build context (the repository), as `docker build` would take it.
    let binary = binary.canonicalize().unwrap();
    let in_context = binary
        .strip_prefix(repo().canonicalize().unwrap())
        .unwrap_or_else(|_| panic!("{} is outside the build context", binary.display()))
        .to_str()
        .unwrap()
        .to_string();
    let image = build_stage(
        &repo().join("Dockerfile"),
        &repo(),
        "prebuilt",
        &[("BINARY", &in_context)],
    )
    .unwrap();
    assert_eq!(
        image.files.iter().map(|f| f.0.clone()).collect::<Vec<_>>(),
        [PathBuf::from("oom-probe")],
        "the image holds the binary alone"
    );
    assert!(
        !has_interpreter(&fs::read(&binary).unwrap()),
        "the image has no libraries or loader; {} must be static",
        binary.display()
    );

    let containerd = Containerd::start().unwrap();
    let archive = containerd.dir().join("oom-probe-image.tar");
    image.write_archive(&archive, IMAGE_NAME).unwrap();
    containerd.import_archive(&archive, IMAGE_NAME).unwrap();

    let (pod_spec, container) = daemonset();
    let state = containerd.dir().join("state");
    fs::create_dir_all(&state).unwrap();
    assert_eq!(
        containerd.socket(),
        containerd.dir().join("containerd.sock")
    );
    let mounts = mounts(&pod_spec, &container, containerd.dir(), &state);
    let security = security_context(&container);
    let memory_limit = quantity(container["resources"]["limits"]["memory"].as_str().unwrap());
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("spec.nodeName") => NODE_NAME.to_string(),
                Some(other) => panic!("downward API field {other} not provided here"),
                None => e["value"].as_str().unwrap().to_string(),
            };
            (e["name"].as_str().unwrap().to_string(), value)
        })
        .collect();
    // The DaemonSet's args, but a free loopback port (host network: the
    // node's 9464 may be taken).
    let addr = free_loopback_addr();
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .map(|a| {
            if a.starts_with("--listen") {
                format!("--listen={addr}")
            } else {
                a
            }
        })
        .collect();
    assert!(args.contains(&format!("--listen={addr}")), "{args:?}");
    let spec = ContainerSpec {
        name: "oom-probe".into(),
        image: IMAGE_NAME.into(),
        env,
        mounts,
        memory_limit_bytes: memory_limit,
        security: Some(security),
        ..Default::default()
    };
    // hostPID as the DaemonSet asks: without it the agent's cgroup.procs
    // reads list none of another pod's processes.
    assert_eq!(
        pod_spec["hostPID"], true,
        "the DaemonSet runs in the node's pids"
    );
    let agent_pod = containerd.run_pod_in_node_pids("oom-probe-agent").unwrap();

    // `check` in the image, with the DaemonSet's privileges: it passes.
    let check = agent_pod
        .start(ContainerSpec {
            name: "check".into(),
            args: vec!["check".into(), "--json".into()],
            ..spec.clone()
        })
        .unwrap();
    let exit = check.wait_for_exit(START_TIMEOUT).unwrap();
    let report: Value = serde_json::from_str(&check.log())
        .unwrap_or_else(|e| panic!("check --json printed no JSON ({e}): {}", check.log()));
    assert_eq!(exit.exit_code, 0, "check failed in the image: {report:#}");
    assert_eq!(report["blockers"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["btf_error"], Value::Null, "{report:#}");
    assert!(
        report["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["ok"] == true && h["hook"].as_str().unwrap().contains("mark_victim")),
        "a mark_victim hook loads with BPF+PERFMON alone: {report:#}"
    );
    // Memory pressure can be watched: its registrations are writes to the
    // host's cgroupfs (mounted read-write for them) and, for the node, to
    // the container's own /proc (the host's is mounted read-only).
    let pressure = &report["pressure"];
    assert_eq!(pressure["cgroups_error"], Value::Null, "{report:#}");
    assert!(pressure["cgroups"].is_string(), "{report:#}");
    let node_psi = Path::new("/proc/pressure/memory").exists();
    if node_psi {
        assert_eq!(pressure["node_error"], Value::Null, "{report:#}");
        assert!(pressure["node"].is_string(), "{report:#}");
    } else {
        skipped(
            TEST,
            "(the node part only) this kernel has no /proc/pressure/memory",
        );
    }

    // The agent, as the DaemonSet runs it.
    let agent = agent_pod
        .start(ContainerSpec {
            args,
            ..spec.clone()
        })
        .unwrap();
    let deadline = Instant::now() + START_TIMEOUT;
    while http_get(&addr, "/readyz").map_or(true, |(status, _)| status != 200) {
        assert!(
            Instant::now() < deadline,
            "the agent never became ready: {}",
            agent.log()
        );
        thread::sleep(Duration::from_millis(200));
    }

    // A kill in another pod's container, limited to 32 MiB.
    let victim_pod = containerd.run_pod("hungry").unwrap();
    let victim = victim_pod
        .start_container(
            "hog",
            32 * MIB,
            &["--in-container", "--comm", "img-victim", "--mb", "512"],
        )
        .unwrap();
    let exit = victim.wait_for_exit(EVENT_TIMEOUT).unwrap();
    assert_eq!((exit.exit_code, exit.reason.as_str()), (137, "OOMKilled"));
    // The kill's line: a `memory_pressure` warning for the same container
    // (at its limit just before the kill) names img-victim too.
    let line = agent
        .wait_for_log_with(&["{\"type\":\"oom_kill\"", "img-victim"], EVENT_TIMEOUT)
        .unwrap();
    let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(event["type"], "oom_kill", "{event:#}");
    assert_eq!(event["node"], NODE_NAME, "{event:#}");
    assert_eq!(event["victim"]["comm"], "img-victim", "{event:#}");
    assert_eq!(
        event["victim"]["cgroup_path"],
        victim.cgroup_path(),
        "{event:#}"
    );
    assert_eq!(event["memcg"]["limit_bytes"], 32 * MIB, "{event:#}");
    let kubernetes = &event["kubernetes"];
    assert_eq!(kubernetes["container_id"], victim.id(), "{event:#}");
    assert_eq!(kubernetes["pod_uid"], victim_pod.uid(), "{event:#}");
    // Names only the runtime knows: through the socket the DaemonSet mounts.
    assert_eq!(kubernetes["namespace"], NAMESPACE, "{event:#}");
    assert_eq!(kubernetes["pod"], "hungry", "{event:#}");
    assert_eq!(kubernetes["container"], "hog", "{event:#}");

    let (_, metrics) = http_get(&addr, "/metrics").unwrap();
    assert!(
        metrics.contains("pod=\"hungry\""),
        "the kill is counted for its pod:\n{metrics}"
    );

    // Memory pressure in another pod's container, held at its 64 MiB limit
    // with steady reclaim the way tests/pressure.rs holds a cgroup on the
    // host: on v1 59 MiB of anon and 16 MiB of files re-read (page cache
    // thrashed, `memory.pressure_level` medium); on v2 34 MiB over a 32 MiB
    // memory.high with 512 KiB churned (PSI stall).
    let watching = agent
        .wait_for_log("watching memory pressure", START_TIMEOUT)
        .unwrap();
    if node_psi {
        assert!(watching.contains("and the node"), "{watching}");
    }
    let (memory_root, v2) = oom_probe_cgroupfs::testing::memory_root().unwrap();
    let (anon_mb, files_mb, churn_kb) = if v2 { (34, 0, 512) } else { (59, 16, 0) };
    let squeezed_pod = containerd.run_pod("squeezed").unwrap();
    let squeezed = squeezed_pod
        .start_container(
            "reclaimer",
            64 * MIB,
            &[
                "--in-container",
                "--reclaim",
                "/reclaim",
                "--mb",
                &anon_mb.to_string(),
                "--files-mb",
                &files_mb.to_string(),
                "--churn-kb",
                &churn_kb.to_string(),
                "--seconds",
                "40",
            ],
        )
        .unwrap();
    if v2 {
        fs::write(
            memory_root
                .join(squeezed.cgroup_path().trim_start_matches('/'))
                .join("memory.high"),
            (32 * MIB).to_string(),
        )
        .unwrap();
    }
    // Found through inotify as it is made, then warned on its first notification.
    let line = agent
        .wait_for_log_with(
            // This container's: not the node's (a loaded host has node
            // pressure of its own), nor the victim's above (at its limit
            // just before its kill).
            &[
                "{\"type\":\"memory_pressure\"",
                &format!("\"cgroup_path\":\"{}\"", squeezed.cgroup_path()),
            ],
            EVENT_TIMEOUT + Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}\nthe reclaimer: {}", squeezed.log()));
    let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    eprintln!("the warning: {line}");
    assert_eq!(event["type"], "memory_pressure", "{event:#}");
    assert_eq!(event["scope"], "cgroup", "{event:#}");
    assert_eq!(event["node"], NODE_NAME, "{event:#}");
    assert_eq!(event["cgroup_path"], squeezed.cgroup_path(), "{event:#}");
    assert_eq!(event["memcg"]["limit_bytes"], 64 * MIB, "{event:#}");
    assert_eq!(event["kubernetes"]["pod"], "squeezed", "{event:#}");
    assert_eq!(event["kubernetes"]["container"], "reclaimer", "{event:#}");
    // The cgroup's top tasks, read from its cgroup.procs in the agent's pid
    // namespace and the host's /proc: the reclaimer is there.
    let tasks = event["tasks"].as_array().expect("tasks");
    assert!(
        tasks.iter().any(|t| t["comm"] == "oom-hog"
            && t["rss_bytes"]["anon"]
                .as_u64()
                .is_some_and(|a| a >= 16 * MIB)),
        "the reclaimer among the top tasks: {event:#}"
    );
}

#[test]
fn the_stage_builder_refuses_what_it_cannot_build_as_docker_would() {
    let dir = std::env::temp_dir().join(format!("oom-probe-dockerfile-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("bin"), b"\x7fELF").unwrap();
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    fs::set_permissions(dir.join("bin"), executable).unwrap();
    let build = |text: &str, target: &str| {
        fs::write(dir.join("Dockerfile"), text).unwrap();
        build_stage(&dir.join("Dockerfile"), &dir, target, &[("FILE", "bin")])
    };
    let built = build(
        "# comment\nFROM scratch AS base\nCMD [\"run\"]\nFROM base AS one\nARG FILE=missing\nCOPY ${FILE} \\\n  /x\n",
        "one",
    )
    .unwrap();
    assert_eq!(
        built.files,
        [(PathBuf::from("x"), b"\x7fELF".to_vec(), 0o755)]
    );
    assert_eq!(built.config["Cmd"], serde_json::json!(["run"]));
    for (text, needle) in [
        ("FROM scratch AS one\nRUN true\n", "RUN"),
        ("FROM debian AS one\n", "registry"),
        ("FROM scratch AS one\nCOPY --from=x /a /b\n", "flags"),
        ("FROM scratch AS one\nCMD run\n", "JSON"),
        ("FROM scratch AS one\nCOPY absent /b\n", "absent"),
        ("FROM scratch AS two\n", "no stage one"),
    ] {
        let err = format!("{:#}", build(text, "one").unwrap_err());
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    let _ = fs::remove_dir_all(&dir);
}
