//! deploy/examples/ run as a cluster would run them: each pod's spec is
//! handed to a private containerd through the CRI the way the kubelet hands
//! it (image, command, args, memory limit; a field not translated here
//! fails the test), and `oom-probe watch` must see what the example
//! promises. `silent-kill.yaml`'s worker is OOM-killed while the shell that
//! is its PID 1 lives on: the kill is reported `silent`, with the pod's
//! names.
//!
//! Its image is busybox, as on a cluster; there is no registry here, so the
//! test makes that image of the host's static busybox (Debian's
//! busybox-static, which `cargo xtask test` installs) under the same name.

use std::{env, fs, path::PathBuf, time::Duration};

use k8s_openapi::api::core::v1::{Container, Pod};
use oom_probe_test_support::{
    containerd::{write_oci_archive, ContainerSpec, Containerd, NAMESPACE},
    deploy::{deploy_dir, yaml_documents},
    host_only, root_or_skip, Watcher, EVENT_TIMEOUT,
};
use serde_json::{json, Value};

const SETTLE: Duration = Duration::from_millis(1500);

/// The example's one Pod, as the API would store it.
fn example_pod(file: &str) -> Pod {
    let path = deploy_dir().join("examples").join(file);
    let mut docs = yaml_documents(&fs::read_to_string(&path).unwrap());
    assert_eq!(docs.len(), 1, "{}: one Pod", path.display());
    serde_json::from_value(docs.remove(0)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the kubelet would ask the runtime for `container`. Fields this
/// does not translate fail the test, so that the run follows the YAML.
fn container_spec(container: &Container) -> ContainerSpec {
    let as_json = serde_json::to_value(container).unwrap();
    for (key, value) in as_json.as_object().unwrap() {
        if !value.is_null()
            && !["name", "image", "command", "args", "resources"].contains(&key.as_str())
        {
            panic!("container field {key} is not translated to the CRI here");
        }
    }
    let resources = container.resources.clone().unwrap_or_default();
    let limit = resources
        .limits
        .unwrap_or_default()
        .get("memory")
        .map_or(0, |q| mebibytes(&q.0));
    ContainerSpec {
        name: container.name.clone(),
        image: container.image.clone().expect("an image"),
        command: container.command.clone().unwrap_or_default(),
        args: container.args.clone().unwrap_or_default(),
        memory_limit_bytes: limit,
        ..Default::default()
    }
}

/// `64Mi` in bytes (the examples use Mi).
fn mebibytes(quantity: &str) -> u64 {
    let number = quantity
        .strip_suffix("Mi")
        .unwrap_or_else(|| panic!("{quantity}: only Mi here"));
    number.parse::<u64>().unwrap() << 20
}

/// The host's static busybox: an image named `name` as a registry would
/// serve busybox, `/bin/sh` being busybox itself (its shell runs its own
/// applets, `tail` and `sleep` among them, without a PATH lookup).
fn import_busybox(containerd: &Containerd, name: &str) {
    let busybox = env::var_os("PATH")
        .and_then(|path| {
            env::split_paths(&path)
                .map(|dir| dir.join("busybox"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "busybox is not installed: install Debian's busybox-static (cargo xtask test does)"
            )
        });
    let bytes = fs::read(&busybox).unwrap();
    assert!(
        !has_interpreter(&bytes),
        "{} is not static: install Debian's busybox-static",
        busybox.display()
    );
    let files = vec![
        (PathBuf::from("bin/busybox"), bytes.clone(), 0o755),
        (PathBuf::from("bin/sh"), bytes, 0o755),
    ];
    let reference = if name.contains('/') {
        name.to_string()
    } else {
        format!("docker.io/library/{name}")
    };
    let archive = containerd.dir().join("busybox.tar");
    let config = json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]});
    write_oci_archive(&archive, &reference, &files, config).unwrap();
    containerd.import_archive(&archive, name).unwrap();
}

/// True when an ELF64 executable names a program interpreter (`PT_INTERP`).
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

#[test]
fn the_silent_kill_example_is_reported_silent() {
    const TEST: &str = "the_silent_kill_example_is_reported_silent";
    if !root_or_skip(TEST) || !host_only(TEST, "needs containerd, runc and busybox") {
        return;
    }
    let pod_yaml = example_pod("silent-kill.yaml");
    let spec = pod_yaml.spec.clone().unwrap();
    let as_json = serde_json::to_value(&spec).unwrap();
    for (key, value) in as_json.as_object().unwrap() {
        // The harness never restarts a container: Never is what it does.
        let translated = key == "containers" || (key == "restartPolicy" && value == "Never");
        assert!(
            value.is_null() || translated,
            "pod field {key} is not translated here"
        );
    }
    assert_eq!(spec.containers.len(), 1);
    let container = container_spec(&spec.containers[0]);
    let pod_name = pod_yaml.metadata.name.clone().unwrap();

    let containerd = Containerd::start().unwrap();
    import_busybox(&containerd, &container.image);
    let socket = containerd.socket().to_str().unwrap().to_string();
    let mut watcher = Watcher::start(&["--cri-socket", &socket]).unwrap();
    let pod = containerd.run_pod(&pod_name).unwrap();
    let worker = pod.start(container.clone()).unwrap();
    let events = watcher
        .events_matching(1, SETTLE, |e| {
            e["type"] == "oom_kill" && e["kubernetes"]["pod"] == pod_name.as_str()
        })
        .unwrap();
    assert_eq!(events.len(), 1, "one kill, one event: {events:#?}");
    let event: &Value = &events[0];
    eprintln!("the example's kill: {event}");
    assert_eq!(event["silent"], true, "PID 1 survived: {event:#}");
    assert_eq!(event["victim"]["comm"], "tail", "{event:#}");
    assert_ne!(event["victim"]["ns_pid"], 1, "{event:#}");
    let kubernetes = &event["kubernetes"];
    assert_eq!(kubernetes["namespace"], NAMESPACE, "{event:#}");
    assert_eq!(kubernetes["container"], container.name, "{event:#}");
    assert_eq!(kubernetes["container_id"], worker.id(), "{event:#}");
    assert_eq!(
        event["memcg"]["limit_bytes"], container.memory_limit_bytes,
        "{event:#}"
    );
    // And the shell says so: its worker was SIGKILLed, it lives on.
    let said = worker
        .wait_for_log("PID 1 lives on", EVENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        said.contains("exit 137"),
        "the worker was SIGKILLed: {said}"
    );
}
