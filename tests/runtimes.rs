//! oom-probe finds the container runtime's CRI socket by itself, wherever
//! the runtime keeps it: containerd (`/run/containerd/containerd.sock`),
//! CRI-O (`/run/crio/crio.sock`), k3s and RKE2
//! (`/run/k3s/containerd/containerd.sock`), cri-dockerd
//! (`/var/run/cri-dockerd.sock`). For each path of its search list, a
//! `watch` with no `--cri-socket` runs in a mount namespace of its own whose
//! `/run` is an empty tmpfs holding a private containerd's socket at that
//! path alone (the host's `/run` is never touched), and must name the pod
//! and container of a worker the kernel OOM-kills, and call the kill silent.

use std::{ffi::CString, os::unix::process::CommandExt, path::Path, time::Duration};

use oom_probe_test_support::{
    containerd::{Containerd, NAMESPACE},
    host_only, root_or_skip, Watcher, EVENT_TIMEOUT,
};

const MIB: u64 = 1 << 20;
const SETTLE: Duration = Duration::from_millis(1500);

#[test]
fn the_runtime_socket_is_found_at_every_path_runtimes_use_with_no_flag() {
    const TEST: &str = "the_runtime_socket_is_found_at_every_path_runtimes_use_with_no_flag";
    if !root_or_skip(TEST) || !host_only(TEST, "needs containerd and runc") {
        return;
    }
    assert_eq!(
        Path::new("/var/run").canonicalize().unwrap(),
        Path::new("/run"),
        "/var/run is /run on the nodes this test stands for"
    );
    let containerd = Containerd::start().unwrap();
    for (i, place) in oom_probe::enrich::cri::DEFAULT_SOCKETS.iter().enumerate() {
        let pod = containerd.run_pod(&format!("found-at-{i}")).unwrap();
        let socket = containerd.socket().to_path_buf();
        let place = place.to_string();
        let mut watcher = Watcher::start_with("watch", &[], |command| {
            with_only_socket_at(command, &socket, &place)
        })
        .unwrap_or_else(|e| panic!("{place}: {e:#}"));
        let comm = format!("sock-worker-{i}");
        let args = [
            "--in-container",
            "--fork",
            "--pause",
            "--comm",
            &comm,
            "--mb",
            "512",
        ];
        let container = pod.start_container("worker", 64 * MIB, &args).unwrap();
        container
            .wait_for_log("killed by signal 9", EVENT_TIMEOUT)
            .unwrap();
        let events = watcher
            .events_matching(1, SETTLE, |e| e["victim"]["comm"] == comm.as_str())
            .unwrap();
        assert_eq!(events.len(), 1, "{place}: one kill, one event: {events:#?}");
        let event = &events[0];
        // Names only the runtime knows: it was found at `place`.
        let kubernetes = &event["kubernetes"];
        assert_eq!(kubernetes["pod"], pod.name(), "{place}: {event:#}");
        assert_eq!(kubernetes["namespace"], NAMESPACE, "{place}: {event:#}");
        assert_eq!(kubernetes["container"], "worker", "{place}: {event:#}");
        assert_eq!(
            kubernetes["container_id"],
            container.id(),
            "{place}: {event:#}"
        );
        // Silent is decided against the runtime's init pid for the container.
        assert_eq!(event["silent"], true, "{place}: PID 1 survived: {event:#}");
        eprintln!("found at {place}: {} killed in {}", comm, pod.name());
    }
}

/// Runs `command` in a mount namespace of its own where `/run` is an empty
/// tmpfs and `socket` is bind-mounted at `place` (below `/run`, or
/// `/var/run`, which is `/run`), the only runtime socket there is.
fn with_only_socket_at(command: &mut std::process::Command, socket: &Path, place: &str) {
    let c = |text: &str| CString::new(text).unwrap();
    let socket = c(socket.to_str().unwrap());
    let target = c(place);
    // The directories to make below /run, outermost first.
    let resolved = place.replacen("/var/run/", "/run/", 1);
    let mut dirs: Vec<CString> = Path::new(&resolved)
        .ancestors()
        .skip(1)
        .filter(|d| d.starts_with("/run") && *d != Path::new("/run"))
        .map(|d| c(d.to_str().unwrap()))
        .collect();
    dirs.reverse();
    let (run, tmpfs, root) = (c("/run"), c("tmpfs"), c("/"));
    // SAFETY: between fork and exec only syscalls run, on CStrings made
    // before the fork; the namespace is the child's alone.
    unsafe {
        command.pre_exec(move || {
            let check = |ret: i32| {
                if ret == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing mounted here reaches the host.
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                tmpfs.as_ptr(),
                run.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            ))?;
            for dir in &dirs {
                check(libc::mkdir(dir.as_ptr(), 0o755))?;
            }
            let fd = libc::open(target.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            check(libc::mount(
                socket.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))
        })
    };
}
