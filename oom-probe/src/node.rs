//! The node name every event carries (`node`), and where it comes from.
//!
//! In order:
//! 1. `--node-name` / `$NODE_NAME` (the DaemonSet sets it from the downward
//!    API, `spec.nodeName`);
//! 2. the kernel hostname, when this process is in the host's UTS namespace
//!    (a node shell, a systemd unit, `docker run --uts=host`, a pod with
//!    `hostNetwork: true`);
//! 3. the first name in `--node-name-file` (default [`HOST_HOSTNAME_FILE`]:
//!    the host's `/etc/hostname` mounted into the container).
//!
//! A container with its own UTS namespace has its own hostname (Docker: the
//! container's short id); with none of the above, start-up fails and says
//! what to add, instead of putting that name in every event.

use std::{fs, io, os::unix::fs::MetadataExt, path::Path};

use anyhow::{bail, Result};

/// Where a container finds the host's `/etc/hostname` by convention (host
/// files under `/host`, like `--cgroupfs /host/sys/fs/cgroup`).
pub const HOST_HOSTNAME_FILE: &str = "/host/etc/hostname";

/// The inode of the kernel's initial UTS namespace (`PROC_UTS_INIT_INO` in
/// include/linux/proc_ns.h, fixed since Linux 3.8): `/proc/self/ns/uts` has
/// it exactly when this process shares the host's hostname.
const INITIAL_UTS_NS_INODE: u64 = 0xEFFF_FFFE;

/// The node name and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeName {
    /// The name put in every event's `node` and used to select this node's pods.
    pub name: String,
    /// Where `name` came from.
    pub source: NodeNameSource,
}

/// Where a [`NodeName`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeNameSource {
    /// `--node-name` or `$NODE_NAME`.
    Configured,
    /// The kernel hostname of the host's (initial) UTS namespace.
    HostUtsNamespace,
    /// The first name in this file (the host's `/etc/hostname`).
    File(String),
}

impl std::fmt::Display for NodeNameSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeNameSource::Configured => write!(f, "--node-name/NODE_NAME"),
            NodeNameSource::HostUtsNamespace => write!(f, "the host's hostname"),
            NodeNameSource::File(path) => write!(f, "{path}"),
        }
    }
}

/// Decides the node name on this machine: `configured` is `--node-name` or
/// `$NODE_NAME`, `name_file` the host hostname file to fall back on.
///
/// Errors when this process has a UTS namespace of its own (a container)
/// and neither `configured` nor `name_file` gives a name: the hostname it
/// sees is the container's, not the node's.
pub fn resolve(configured: Option<&str>, name_file: &Path) -> Result<NodeName> {
    let uts_inode = fs::metadata("/proc/self/ns/uts").map(|m| m.ino());
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string());
    let file = fs::read_to_string(name_file);
    choose(
        configured,
        uts_inode,
        hostname,
        &name_file.display().to_string(),
        file,
    )
}

/// [`resolve`] on facts already read, for tests: the inode of
/// `/proc/self/ns/uts`, the kernel hostname, and the hostname file's text.
fn choose(
    configured: Option<&str>,
    uts_inode: io::Result<u64>,
    hostname: io::Result<String>,
    name_file: &str,
    file: io::Result<String>,
) -> Result<NodeName> {
    if let Some(name) = configured.map(str::trim).filter(|n| !n.is_empty()) {
        return Ok(NodeName {
            name: name.to_string(),
            source: NodeNameSource::Configured,
        });
    }
    // No /proc/self/ns/uts: a kernel without UTS namespaces has only the host's.
    let host_uts = uts_inode.map_or(true, |inode| inode == INITIAL_UTS_NS_INODE);
    let hostname = hostname.ok().filter(|h| !h.is_empty());
    if host_uts {
        if let Some(name) = hostname {
            return Ok(NodeName {
                name,
                source: NodeNameSource::HostUtsNamespace,
            });
        }
    }
    let from_file = file.as_deref().ok().and_then(first_name);
    if let Some(name) = from_file {
        return Ok(NodeName {
            name: name.to_string(),
            source: NodeNameSource::File(name_file.to_string()),
        });
    }
    let why = match &file {
        Err(e) if e.kind() == io::ErrorKind::NotFound => format!("{name_file} does not exist"),
        Err(e) => format!("{name_file}: {e}"),
        Ok(_) => format!("{name_file} has no name in it"),
    };
    if host_uts {
        bail!("cannot tell the node's name: no hostname and {why}; set --node-name or NODE_NAME");
    }
    bail!(
        "cannot tell the node's name: oom-probe runs in a UTS namespace of its own (a container), \
         whose hostname {:?} is not the node's, and {why}. Set NODE_NAME or --node-name \
         (Kubernetes: the downward API's spec.nodeName), share the host's UTS namespace \
         (docker run --uts=host), or mount the host's /etc/hostname at {HOST_HOSTNAME_FILE}",
        hostname.unwrap_or_default()
    )
}

/// The first line of a hostname file that is neither empty nor a comment
/// (hostname(5)), trimmed.
fn first_name(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/host/etc/hostname";
    const CONTAINER_UTS: u64 = 4026532571;

    fn missing() -> io::Result<String> {
        Err(io::Error::from(io::ErrorKind::NotFound))
    }

    #[test]
    fn configured_name_wins_everywhere() {
        for inode in [INITIAL_UTS_NS_INODE, CONTAINER_UTS] {
            let node = choose(
                Some("node-a"),
                Ok(inode),
                Ok("c0ffee".into()),
                FILE,
                Ok("host-b\n".into()),
            )
            .unwrap();
            assert_eq!(node.name, "node-a");
            assert_eq!(node.source, NodeNameSource::Configured);
        }
    }

    #[test]
    fn empty_configured_name_counts_as_unset() {
        let node = choose(
            Some("  "),
            Ok(INITIAL_UTS_NS_INODE),
            Ok("host-a".into()),
            FILE,
            missing(),
        )
        .unwrap();
        assert_eq!(node.name, "host-a");
    }

    #[test]
    fn host_uts_namespace_gives_the_kernel_hostname_over_the_file() {
        let node = choose(
            None,
            Ok(INITIAL_UTS_NS_INODE),
            Ok("host-a".into()),
            FILE,
            Ok("stale-name\n".into()),
        )
        .unwrap();
        assert_eq!(node.name, "host-a");
        assert_eq!(node.source, NodeNameSource::HostUtsNamespace);
    }

    #[test]
    fn container_uses_the_host_hostname_file_not_its_own_hostname() {
        let node = choose(
            None,
            Ok(CONTAINER_UTS),
            Ok("3f2a9c1b7d4e".into()),
            FILE,
            Ok("# set by the installer\n\n  host-b  \nother\n".into()),
        )
        .unwrap();
        assert_eq!(node.name, "host-b");
        assert_eq!(node.source, NodeNameSource::File(FILE.into()));
    }

    #[test]
    fn container_without_a_source_is_an_error_naming_the_fixes() {
        let err = choose(
            None,
            Ok(CONTAINER_UTS),
            Ok("3f2a9c1b7d4e".into()),
            FILE,
            missing(),
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "3f2a9c1b7d4e",
            "NODE_NAME",
            "--uts=host",
            FILE,
            "does not exist",
        ] {
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
        let err = choose(
            None,
            Ok(CONTAINER_UTS),
            Ok("x".into()),
            FILE,
            Ok("#\n\n".into()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no name in it"), "{err}");
    }

    #[test]
    fn no_uts_namespaces_means_the_host() {
        let node = choose(
            None,
            Err(io::Error::from(io::ErrorKind::NotFound)),
            Ok("host-a".into()),
            FILE,
            missing(),
        )
        .unwrap();
        assert_eq!(node.name, "host-a");
    }

    #[test]
    fn this_process_resolves_as_its_uts_namespace_says() {
        let resolved = resolve(None, Path::new("/nonexistent/hostname"));
        let inode = fs::metadata("/proc/self/ns/uts").unwrap().ino();
        if inode == INITIAL_UTS_NS_INODE {
            // A node or the VM: the kernel hostname.
            let node = resolved.unwrap();
            let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
            assert_eq!(node.name, hostname.trim());
            assert_eq!(node.source, NodeNameSource::HostUtsNamespace);
        } else {
            // Tests run in a container: its hostname is never taken.
            assert!(resolved.unwrap_err().to_string().contains("NODE_NAME"));
        }
    }
}
