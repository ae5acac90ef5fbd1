//! Who owns a cgroup, read from its path alone: the pod, container and QoS
//! class of a Kubernetes victim, or the container id of one outside
//! Kubernetes. (Longer than 500 lines for its test table: every layout below,
//! and the paths that must not be mistaken for them.)
//!
//! The kernel names only the victim's memory cgroup. kubelet, the container
//! runtimes and systemd each write their identities into cgroup names in
//! their own way, and the way depends on the cgroup driver, not on the
//! cgroup version (v1 and v2 paths look alike):
//!
//! | layout | path |
//! |---|---|
//! | kubelet, cgroupfs | `/kubepods/burstable/pod<uid>/<id>`, Guaranteed: `/kubepods/pod<uid>/<id>` |
//! | kubelet, systemd | `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<u_i_d>.slice/cri-containerd-<id>.scope` |
//! | containerd's unexpanded `slice:prefix:name` | `/system.slice/containerd.service/kubepods-burstable-pod<u_i_d>.slice:cri-containerd:<id>` |
//! | CRI-O, cgroupfs | `/kubepods/burstable/pod<uid>/crio-<id>`, conmon: `…/crio-conmon-<id>` |
//! | containerd namespace | `/k8s.io/<id>`, `/default/<id>` |
//! | Docker | `/docker/<id>`, `/system.slice/docker-<id>.scope` |
//! | Podman | `/machine.slice/libpod-<id>.scope` |
//! | host service | `/system.slice/kubelet.service`, `/user.slice/user-1000.slice/session-3.scope` |
//!
//! Reading the path needs no API server and no runtime socket, so it works
//! on every node, for victims that are already gone. A pod (with the
//! container directly below it, however deep the path goes on) is read
//! first, else a container outside Kubernetes (a host service's path is
//! neither; its unit is in `victim.cgroup_path`). Whatever the path does
//! not clearly say stays `None`: a wrong guess would send people to the
//! wrong pod.
//!
//! A pod counts only under the kubelet's root (docs/security.md), since
//! anyone with a delegated cgroup subtree (a systemd user manager, rootless
//! Podman, a nested engine) can make a directory named like another
//! tenant's pod: the outermost `pod<uid>` below the outermost kubelet root
//! element (`kubepods`, `kubepods.slice`, `<root>-kubepods.slice`), where no
//! element above that root is delegated (a unit holding processes, such as
//! `user@1000.service` or `foo.service`, other than a container's scope; or
//! `user.slice`, `user-<uid>.slice`). Only root makes such a path: kubelet
//! at the top (`/kubepods`), under a custom `--cgroup-root` (`/custom/kubepods`),
//! or inside a node container (kind: `/docker/<id>/kubepods`,
//! `/system.slice/docker-<id>.scope/kubelet.slice/kubelet-kubepods.slice`).
//! Also accepted: a `pod<uid>` at the very top (`--cgroups-per-qos=false`),
//! and containerd's unexpanded `slice:prefix:name` directly under
//! `/system.slice/containerd.service`.

/// What a cgroup path says about who owns it, so an OOM kill can be reported
/// as "container X of pod Y" or "kubelet.service" instead of a path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    /// The pod's `metadata.uid`, always spelled as the API spells it
    /// (dashed, lowercase) so it matches what `kubectl` shows, even where a
    /// systemd slice wrote it with underscores. Static pods have no API uid
    /// of their own: for them this is the 32-hex hash kubelet uses instead,
    /// which the mirror pod carries in its `kubernetes.io/config.mirror`
    /// annotation.
    pub pod_uid: Option<String>,
    /// The runtime's full container id (64 lowercase hex), without the
    /// prefix the cgroup name adds, as `crictl`, `docker` and pod status
    /// take it.
    pub container_id: Option<String>,
    /// The pod's QoS class, read from the kubelet cgroup it sits in; tells
    /// whether the kill hit a pod that was promised its memory.
    pub qos_class: Option<QosClass>,
    /// The runtime that made the container's cgroup, where its name or its
    /// parent says so: `containerd`, `cri-o`, `docker` or `podman`. `None`
    /// for a bare id under a pod (kubelet's cgroupfs layout does not say
    /// which CRI made it) and wherever no container is named.
    pub runtime: Option<&'static str>,
}

/// How kubelet ranks a pod's memory claim; decides who the kernel and the
/// kubelet kill first, so it belongs next to every pod kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Requests equal limits; killed last.
    Guaranteed,
    /// Some requests below limits.
    Burstable,
    /// No requests; killed first.
    BestEffort,
}

impl QosClass {
    /// The spelling of a pod's `status.qosClass`, so output reads like
    /// `kubectl get pod -o yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

/// Reads who owns the cgroup at `path` (relative to the v2 root or to the
/// v1 memory hierarchy, with or without leading and trailing `/`), so that
/// the loader's resolved memcg path becomes a pod and container. Never
/// fails: a path it cannot read gives an identity with every field `None`,
/// and so does one with `.` or `..` elements, which the kernel never
/// produces (cgroups cannot have those names).
pub fn parse(path: &str) -> CgroupIdentity {
    let elements: Vec<&str> = path.split('/').filter(|e| !e.is_empty()).collect();
    if elements.iter().any(|e| *e == "." || *e == "..") {
        return CgroupIdentity::default();
    }
    in_pod(&elements)
        .or_else(|| outside_pod(&elements))
        .unwrap_or_default()
}

/// A container as one element names it.
struct Container {
    /// `None` for conmon's cgroup, which belongs to the container but is not it.
    id: Option<String>,
    runtime: Option<&'static str>,
}

/// Runtimes that name a container's cgroup `<prefix><id>`, plus `.scope`
/// under systemd. conmon (CRI-O's and Podman's per-container monitor) gets
/// its own cgroup; when it is killed the container lives on, so it gives
/// the runtime but no container id (`false`).
const PREFIXES: [(&str, bool, &str); 6] = [
    ("cri-containerd-", true, "containerd"),
    ("crio-conmon-", false, "cri-o"),
    ("crio-", true, "cri-o"),
    ("docker-", true, "docker"),
    ("libpod-conmon-", false, "podman"),
    ("libpod-", true, "podman"),
];

/// Unit types whose cgroups hold processes; slices only group other units.
const UNIT_SUFFIXES: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".swap"];

/// The outermost pod under the kubelet's root ([`pod_elements_from`]), with
/// the container in the element directly below it (or in the same element,
/// for containerd's `slice:prefix:name`).
fn in_pod(elements: &[&str]) -> Option<CgroupIdentity> {
    let first = pod_elements_from(elements)?;
    let (i, uid, qos) = elements.iter().enumerate().skip(first).find_map(|(i, e)| {
        let (uid, qos) = pod_from_element(e, &elements[..i])?;
        Some((i, uid, qos))
    })?;
    let container_element = match colon_form(elements[i]) {
        Some(_) => Some(elements[i]),
        None => elements.get(i + 1).copied(),
    };
    let container = container_element.and_then(|e| {
        container_from_element(e).or_else(|| {
            is_container_id(e).then(|| Container {
                id: Some(e.to_owned()),
                runtime: None,
            })
        })
    });
    let (container_id, runtime) = container.map_or((None, None), |c| (c.id, c.runtime));
    Some(CgroupIdentity {
        pod_uid: Some(uid),
        container_id,
        qos_class: qos,
        runtime,
    })
}

/// Where a pod element may start: just below the outermost kubelet root
/// element, when nothing above that root is delegated; at the top for a
/// pod element there (`/pod<uid>`, containerd's unexpanded form alone) or
/// under `/system.slice/containerd.service`. `None`: no pod can be read here.
fn pod_elements_from(elements: &[&str]) -> Option<usize> {
    if let [first, ..] = elements {
        if pod_from_element(first, &[]).is_some() {
            return Some(0);
        }
    }
    if let ["system.slice", "containerd.service", unexpanded, ..] = elements {
        if colon_form(unexpanded).is_some() {
            return Some(2);
        }
    }
    for (i, element) in elements.iter().enumerate() {
        if is_kubelet_root(element) {
            return Some(i + 1);
        }
        if is_delegated(element) {
            return None;
        }
    }
    None
}

/// kubelet's own top cgroup: `kubepods` (cgroupfs driver) or
/// `kubepods.slice`, `<cgroup-root>-kubepods.slice` (systemd driver).
fn is_kubelet_root(element: &str) -> bool {
    element == "kubepods" || element == "kubepods.slice" || element.ends_with("-kubepods.slice")
}

/// An element below which someone other than root may make cgroups: a
/// systemd unit that holds processes (a `Delegate=yes` service, a user's
/// manager `user@<uid>.service`), except a container's scope (a Kubernetes
/// node in a container); a user's slices.
fn is_delegated(element: &str) -> bool {
    (is_systemd_unit(element) && container_from_element(element).is_none())
        || element == "user.slice"
        || (element.starts_with("user-") && element.ends_with(".slice"))
}

/// The innermost container of a path with no pod in it.
fn outside_pod(elements: &[&str]) -> Option<CgroupIdentity> {
    let container = elements.iter().enumerate().rev().find_map(|(i, e)| {
        container_from_element(e).or_else(|| {
            let parent = elements.get(i.checked_sub(1)?)?;
            bare_container(e, parent, i == 1)
        })
    })?;
    Some(CgroupIdentity {
        container_id: container.id,
        runtime: container.runtime,
        ..CgroupIdentity::default()
    })
}

/// The pod uid and QoS class an element names: `pod<uid>` under the
/// cgroupfs driver, whose QoS is in the parent directories
/// (`kubepods/burstable/pod…`), or `…-pod<u_i_d>.slice` under systemd, whose
/// QoS is in its own name (`kubepods-burstable-pod….slice`), also as the
/// slice part of containerd's `slice:prefix:name`.
fn pod_from_element(element: &str, parents: &[&str]) -> Option<(String, Option<QosClass>)> {
    let slice = colon_form(element).map_or(element, |(slice, _, _)| slice);
    match slice.strip_suffix(".slice") {
        Some(stem) => {
            let (ancestors, pod) = stem.rsplit_once('-').unwrap_or(("", stem));
            let uid = pod_uid_from(pod.strip_prefix("pod")?)?;
            Some((uid, qos_class(ancestors.split('-'))))
        }
        None => {
            let uid = pod_uid_from(slice.strip_prefix("pod")?)?;
            Some((uid, qos_class(parents.iter().copied())))
        }
    }
}

/// kubelet puts Burstable and BestEffort pods in a cgroup of that name
/// under `kubepods`, and Guaranteed pods directly in `kubepods`.
/// `ancestors` are the pod's parents, outermost first.
fn qos_class<'a>(ancestors: impl DoubleEndedIterator<Item = &'a str>) -> Option<QosClass> {
    let mut nearest = ancestors.rev();
    match (nearest.next()?, nearest.next()) {
        ("kubepods", _) => Some(QosClass::Guaranteed),
        ("burstable", Some("kubepods")) => Some(QosClass::Burstable),
        ("besteffort", Some("kubepods")) => Some(QosClass::BestEffort),
        _ => None,
    }
}

/// A container named by its element alone: `<prefix><id>[.scope]`, or
/// containerd's `slice:prefix:name`, the systemd form runc normally expands
/// into `prefix-name.scope` but which shows up verbatim when containerd and
/// runc disagree on the cgroup driver.
fn container_from_element(element: &str) -> Option<Container> {
    let name = match colon_form(element) {
        Some((_, prefix, id)) => format!("{prefix}-{id}"),
        None => element.strip_suffix(".scope").unwrap_or(element).to_owned(),
    };
    PREFIXES
        .iter()
        .find_map(|&(prefix, is_container, runtime)| {
            let id = name.strip_prefix(prefix)?;
            is_container_id(id).then(|| Container {
                id: is_container.then(|| id.to_owned()),
                runtime: Some(runtime),
            })
        })
}

/// A bare id names a container only where its parent says who made it:
/// `docker` (Docker's cgroupfs driver, at any depth for Docker in Docker)
/// or, at the top of the hierarchy, a containerd namespace (`k8s.io`,
/// `default`, `moby`: containerd's cgroupfs default is `/<namespace>/<id>`).
/// Docker's `--cgroup-parent=<name>` makes the same shape; those containers
/// run under containerd too, so the runtime is less specific there, not
/// wrong.
fn bare_container(element: &str, parent: &str, parent_is_top: bool) -> Option<Container> {
    if !is_container_id(element) {
        return None;
    }
    let runtime = if parent == "docker" {
        "docker"
    } else if parent_is_top && is_containerd_namespace(parent) {
        "containerd"
    } else {
        return None;
    };
    Some(Container {
        id: Some(element.to_owned()),
        runtime: Some(runtime),
    })
}

/// containerd's `slice:prefix:name` cgroups path, split.
fn colon_form(element: &str) -> Option<(&str, &str, &str)> {
    let mut parts = element.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(slice), Some(prefix), Some(name), None) => Some((slice, prefix, name)),
        _ => None,
    }
}

/// The API spelling of a pod uid written with dashes (cgroupfs) or
/// underscores (systemd, where `-` separates slice levels); a mix of both is
/// not a uid.
fn pod_uid_from(s: &str) -> Option<String> {
    if is_pod_uid(s) {
        Some(s.to_owned())
    } else if is_uuid(s, b'_') {
        Some(s.replace('_', "-"))
    } else {
        None
    }
}

/// Pod uids as Kubernetes spells them: a lowercase dashed UUID, or for
/// static pods the 32-hex md5 kubelet computes from the manifest.
fn is_pod_uid(s: &str) -> bool {
    is_uuid(s, b'-') || is_lower_hex(s, 32)
}

/// A lowercase UUID (8-4-4-4-12) with the given separator.
fn is_uuid(s: &str, separator: u8) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == separator,
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        })
}

/// Every runtime that names cgroups (containerd, CRI-O, Docker, Podman)
/// uses the full 64-hex id; the 12-char short form exists only in CLI
/// output. Shorter hex is not accepted, so that a directory that merely
/// looks hex (`deadbeef`) is not taken for a container.
fn is_container_id(s: &str) -> bool {
    is_lower_hex(s, 64)
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// containerd's namespace syntax (alphanumeric labels joined by `.`, `_` or
/// `-`, at most 76 bytes), minus names that are systemd's or a container's.
fn is_containerd_namespace(name: &str) -> bool {
    name.len() <= 76
        && name
            .split(['.', '_', '-'])
            .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric()))
        && !name.ends_with(".slice")
        && !is_systemd_unit(name)
        && !is_container_id(name)
}

/// systemd's unit name syntax (at most 255 bytes of `[A-Za-z0-9:_.\\@-]`)
/// with a type that holds processes.
fn is_systemd_unit(element: &str) -> bool {
    element.len() <= 255
        && UNIT_SUFFIXES
            .iter()
            .any(|suffix| element.strip_suffix(suffix).is_some_and(|n| !n.is_empty()))
        && element
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::QosClass::*;
    use super::*;

    const UID: &str = "0f8a1c2e-4b3d-4e5f-9a6b-7c8d9e0f1a2b";
    const UID_: &str = "0f8a1c2e_4b3d_4e5f_9a6b_7c8d9e0f1a2b";
    /// kubelet's uid for a static pod (md5 of the manifest).
    const STATIC: &str = "a81259cef8e959c624df1d456e5d3297";
    const ID: &str = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";
    const ID2: &str = "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d";

    /// A Kubernetes identity: pod, QoS and container.
    fn kube(uid: &str, qos: Option<QosClass>, id: Option<&str>) -> CgroupIdentity {
        CgroupIdentity {
            pod_uid: Some(uid.to_owned()),
            container_id: id.map(str::to_owned),
            qos_class: qos,
            runtime: None,
        }
    }

    fn container(id: Option<&str>) -> CgroupIdentity {
        CgroupIdentity {
            container_id: id.map(str::to_owned),
            ..CgroupIdentity::default()
        }
    }

    fn none() -> CgroupIdentity {
        CgroupIdentity::default()
    }

    /// Pod, QoS and container id per path (the runtime has its own table).
    fn check(rows: &[(String, CgroupIdentity)]) {
        for (path, want) in rows {
            let got = CgroupIdentity {
                runtime: None,
                ..parse(path)
            };
            assert_eq!(&got, want, "path {path:?}");
        }
    }

    #[test]
    fn the_runtime_of_every_layout() {
        let burstable =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        let rows = [
            (format!("/kubepods/burstable/pod{UID}/{ID}"), None),
            (format!("/kubepods/burstable/pod{UID}/crio-{ID}"), Some("cri-o")),
            (format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"), Some("cri-o")),
            (format!("{burstable}/cri-containerd-{ID}.scope"), Some("containerd")),
            (format!("{burstable}/crio-{ID}.scope"), Some("cri-o")),
            (format!("{burstable}/docker-{ID}.scope"), Some("docker")),
            (format!("/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"), Some("containerd")),
            (format!("/k8s.io/{ID}"), Some("containerd")),
            (format!("/default/{ID}"), Some("containerd")),
            (format!("/docker/{ID}"), Some("docker")),
            (format!("/docker/{ID2}/docker/{ID}"), Some("docker")),
            (format!("/system.slice/docker-{ID}.scope"), Some("docker")),
            (format!("/machine.slice/libpod-{ID}.scope"), Some("podman")),
            (format!("/machine.slice/libpod-{ID}.scope/container"), Some("podman")),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), Some("podman")),
            ("/system.slice/kubelet.service".to_owned(), None),
            (format!("/system.slice/{ID}"), None),
        ];
        for (path, runtime) in rows {
            assert_eq!(parse(&path).runtime, runtime, "path {path:?}");
        }
    }

    #[test]
    fn cgroupfs_driver() {
        check(&[
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                kube(UID, Some(Burstable), Some(ID)),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                kube(UID, Some(BestEffort), Some(ID)),
            ),
            (
                format!("/kubepods/pod{UID}/{ID}"),
                kube(UID, Some(Guaranteed), Some(ID)),
            ),
            (
                format!("/kubepods/burstable/pod{UID}"),
                kube(UID, Some(Burstable), None),
            ),
            (
                format!("/kubepods/pod{UID}/"),
                kube(UID, Some(Guaranteed), None),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
                kube(UID, Some(Burstable), Some(ID)),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"),
                kube(UID, Some(Burstable), None),
            ),
            (
                format!("/kubepods/burstable/pod{STATIC}/{ID}"),
                kube(STATIC, Some(Burstable), Some(ID)),
            ),
            // --cgroups-per-qos=false: no QoS level at all.
            (format!("/pod{UID}/{ID}"), kube(UID, None, Some(ID))),
            // A custom --cgroup-root.
            (
                format!("/custom/kubepods/besteffort/pod{UID}/{ID}"),
                kube(UID, Some(BestEffort), Some(ID)),
            ),
            ("/kubepods/burstable".to_owned(), none()),
            ("/kubepods".to_owned(), none()),
        ]);
    }

    #[test]
    fn systemd_driver() {
        let burstable =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        check(&[
            (
                format!("{burstable}/cri-containerd-{ID}.scope"),
                kube(UID, Some(Burstable), Some(ID)),
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                kube(UID, Some(BestEffort), Some(ID)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope"),
                kube(UID, Some(Guaranteed), Some(ID)),
            ),
            (
                format!("{burstable}/docker-{ID}.scope"),
                kube(UID, Some(Burstable), Some(ID)),
            ),
            (
                format!("{burstable}/crio-conmon-{ID}.scope"),
                kube(UID, Some(Burstable), None),
            ),
            (burstable.clone(), kube(UID, Some(Burstable), None)),
            (
                format!("/kubepods.slice/kubepods-pod{STATIC}.slice/crio-{ID}.scope"),
                kube(STATIC, Some(Guaranteed), Some(ID)),
            ),
            ("/kubepods.slice".to_owned(), none()),
            ("/kubepods.slice/kubepods-burstable.slice".to_owned(), none()),
        ]);
    }

    #[test]
    fn containers_outside_kubernetes() {
        check(&[
            (format!("/k8s.io/{ID}"), container(Some(ID))),
            (format!("/default/{ID}"), container(Some(ID))),
            (format!("/moby/{ID}"), container(Some(ID))),
            (format!("/docker/{ID}"), container(Some(ID))),
            (
                format!("/system.slice/docker-{ID}.scope"),
                container(Some(ID)),
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope"),
                container(Some(ID)),
            ),
            // Podman under systemd with cgroups v2 (`--cgroups=split` and the
            // systemd init mode) puts the processes one level down.
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                container(Some(ID)),
            ),
            (
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                container(None),
            ),
            (
                format!("/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"),
                kube(UID, Some(Burstable), Some(ID)),
            ),
            (
                format!("kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"),
                kube(UID, Some(Burstable), Some(ID)),
            ),
            (
                format!("/system.slice/containerd.service/system.slice:docker:{ID}"),
                container(Some(ID)),
            ),
            // A bare id with no parent naming its maker is not claimed.
            (format!("/{ID}"), none()),
            (format!("/system.slice/{ID}"), none()),
            (format!("/{ID2}/{ID}"), none()),
            // containerd's cgroupfs namespaces sit at the top only.
            (format!("/foo/k8s.io/{ID}"), none()),
        ]);
    }

    #[test]
    fn nested_and_differently_spelled_paths() {
        check(&[
            (
                format!("kubepods/burstable/pod{UID}/{ID}"),
                kube(UID, Some(Burstable), Some(ID)),
            ),
            (
                format!("//kubepods//burstable/pod{UID}/{ID}//"),
                kube(UID, Some(Burstable), Some(ID)),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/{ID}/sub"),
                kube(UID, Some(Burstable), Some(ID)),
            ),
            // Docker inside a pod: the pod is what Kubernetes users know.
            (
                format!("/kubepods/burstable/pod{UID}/{ID}/docker/{ID2}"),
                kube(UID, Some(Burstable), Some(ID)),
            ),
            // kind: a node container on a v1 host, kubelet's root inside it.
            (
                format!("/docker/{ID2}/kubepods/besteffort/pod{UID}/{ID}"),
                kube(UID, Some(BestEffort), Some(ID)),
            ),
            // kind on a v2 host (systemd driver, --cgroup-root=/kubelet).
            (
                format!("/system.slice/docker-{ID2}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                kube(UID, Some(Burstable), Some(ID)),
            ),
            (format!("/docker/{ID2}/docker/{ID}"), container(Some(ID))),
            // crun's `container` sub-cgroup under Podman on v2.
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                container(Some(ID)),
            ),
            // Rootless Podman under the user's manager.
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                container(Some(ID)),
            ),
        ]);
    }

    /// Pod look-alikes: a `pod<uid>` anyone with a delegated subtree can make
    /// names no pod; the ids that are a container's are still read outside
    /// Kubernetes.
    #[test]
    fn pods_only_under_the_kubelet_root() {
        let user = "/user.slice/user-1000.slice/user@1000.service";
        check(&[
            // A systemd user manager's subtree, with or without kubepods.
            (format!("{user}/app.slice/pod{UID}/{ID}"), none()),
            (format!("{user}/pod{UID}/{ID}"), none()),
            (format!("{user}/kubepods/burstable/pod{UID}/{ID}"), none()),
            (
                format!("{user}/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                container(Some(ID)),
            ),
            (format!("/user.slice/kubepods/pod{UID}/{ID}"), none()),
            // A Delegate=yes service's subtree.
            (
                format!("/system.slice/foo.service/kubepods/pod{UID}/{ID}"),
                none(),
            ),
            (format!("/system.slice/foo.service/pod{UID}/{ID}"), none()),
            // No kubelet root at all, below the top.
            (format!("/system.slice/pod{UID}/{ID}"), none()),
            (format!("/machine.slice/pod{UID}/{ID}"), none()),
            // A plain directory under system.slice: only root makes it, as a
            // custom --cgroup-root.
            (
                format!("/system.slice/foo/kubepods/pod{UID}/{ID}"),
                kube(UID, Some(Guaranteed), Some(ID)),
            ),
            // A nested engine inside a pod's container makes a look-alike
            // of another pod: the outer, real pod is the one named.
            (
                format!("/kubepods/burstable/pod{UID}/{ID}/kubepods/besteffort/pod{STATIC}/{ID2}"),
                kube(UID, Some(Burstable), Some(ID)),
            ),
            // containerd's unexpanded form elsewhere than under containerd.service.
            (
                format!("{user}/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"),
                container(Some(ID)),
            ),
        ]);
    }

    #[test]
    fn host_services() {
        check(&[
            ("/system.slice/kubelet.service".to_owned(), none()),
            ("/system.slice/containerd.service".to_owned(), none()),
            (
                "/user.slice/user-1000.slice/session-3.scope".to_owned(),
                none(),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox.scope"
                    .to_owned(),
                none(),
            ),
            (
                "/system.slice/system-getty.slice/getty@tty1.service".to_owned(),
                none(),
            ),
            ("/init.scope".to_owned(), none()),
            ("/system.slice".to_owned(), none()),
            ("/".to_owned(), none()),
            (String::new(), none()),
        ]);
    }

    /// Paths as kernels of each era print them in OOM reports; before 4.19:
    /// `Task in <task memcg> killed as a result of limit of <oom memcg>`,
    /// from 4.19: `oom-kill:constraint=CONSTRAINT_MEMCG,…,oom_memcg=<oom
    /// memcg>,task_memcg=<task memcg>,task=…,pid=…,uid=…`.
    #[test]
    fn paths_from_kernel_oom_reports() {
        // 3.10, RHEL 7, cgroupfs driver, v1, dockershim; uuid v1 pod uids.
        let el7_uid = "9b3f7f0e-5c3a-11e9-8d5c-0050568a1b2c";
        // 4.19 (Debian 10, docker) and 5.4 (Ubuntu 20.04, containerd):
        // systemd driver on v1.
        let uid_419 = "5d0c6a8e-2f1b-4c3d-9e8f-1a2b3c4d5e6f";
        let uid_54 = "c1d2e3f4-a5b6-4789-8abc-def012345678";
        let slice_419 = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            uid_419.replace('-', "_")
        );
        let slice_54 = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
            uid_54.replace('-', "_")
        );
        // 5.10, v2, systemd driver, containerd; v2 prints the same path for
        // oom_memcg and task_memcg when the container's own limit was hit.
        let task_510 = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        check(&[
            // Task in /kubepods/burstable/pod9b3f…/ca97… killed as a result
            // of limit of /kubepods/burstable/pod9b3f…/ca97…
            (
                format!("/kubepods/burstable/pod{el7_uid}/{ID}"),
                kube(el7_uid, Some(Burstable), Some(ID)),
            ),
            // Task in /kubepods/pod9b3f…/ca97… killed as a result of limit
            // of /kubepods/pod9b3f… (the pod's limit, not the container's)
            (
                format!("/kubepods/pod{el7_uid}"),
                kube(el7_uid, Some(Guaranteed), None),
            ),
            // 3.10 before QoS cgroups (kubelet < 1.6), systemd docker.
            (
                format!("/system.slice/docker-{ID}.scope"),
                container(Some(ID)),
            ),
            // 4.19: oom-kill:…,cpuset=docker-ca97….scope,mems_allowed=0,
            // oom_memcg=<slice_419>,task_memcg=<slice_419>/docker-ca97….scope,
            // task=java,pid=31337,uid=1000
            (slice_419.clone(), kube(uid_419, Some(Burstable), None)),
            (
                format!("{slice_419}/docker-{ID}.scope"),
                kube(uid_419, Some(Burstable), Some(ID)),
            ),
            // 5.4: oom-kill:…,oom_memcg=<slice_54>/cri-containerd-3e23….scope,
            // task_memcg=<slice_54>/cri-containerd-3e23….scope,task=python3,…
            (
                format!("{slice_54}/cri-containerd-{ID2}.scope"),
                kube(uid_54, Some(BestEffort), Some(ID2)),
            ),
            // 5.4 with k3s (cgroupfs driver, dashed uid).
            (
                format!("/kubepods/besteffort/pod{uid_54}/{ID2}"),
                kube(uid_54, Some(BestEffort), Some(ID2)),
            ),
            // 5.10: oom-kill:constraint=CONSTRAINT_MEMCG,…,oom_memcg=/<task_510>,
            // task_memcg=/<task_510>,task=node,pid=4242,uid=0
            (format!("/{task_510}"), kube(UID, Some(Burstable), Some(ID))),
            (task_510, kube(UID, Some(Burstable), Some(ID))),
            // 5.10, global OOM of a host daemon: oom_memcg is absent,
            // task_memcg=/system.slice/containerd.service
            ("/system.slice/containerd.service".to_owned(), none()),
        ]);
    }

    #[test]
    fn malformed_parts_stay_none() {
        let upper = ID.to_uppercase();
        let short = &ID[..12];
        check(&[
            (format!("/kubepods/burstable/podxyz/{ID}"), none()),
            (format!("/kubepods/burstable/pod{UID}x/{ID}"), none()),
            // Group lengths 9-3-4-4-12.
            (
                format!("/kubepods/burstable/pod0f8a1c2e4-b3d-4e5f-9a6b-7c8d9e0f1a2b/{ID}"),
                none(),
            ),
            (format!("/kubepods/pod{}/{ID}", UID.to_uppercase()), none()),
            // Dashes and underscores mixed.
            (
                format!("/kubepods/pod0f8a1c2e-4b3d_4e5f-9a6b-7c8d9e0f1a2b/{ID}"),
                none(),
            ),
            // A dashed uid cannot be in a slice name: `-` nests slices.
            (format!("/kubepods.slice/kubepods-pod{UID}.slice"), none()),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod.slice".to_owned(),
                none(),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/{upper}"),
                kube(UID, Some(Burstable), None),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/{short}"),
                kube(UID, Some(Burstable), None),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/{}g", &ID[..63]),
                kube(UID, Some(Burstable), None),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}0.scope"),
                kube(UID, Some(Guaranteed), None),
            ),
            (format!("/docker/{upper}"), none()),
            (format!("/k8s.io/{short}"), none()),
            // An unreadable container scope is still a unit.
            (format!("/system.slice/docker-{upper}.scope"), none()),
            (format!("/kubepods/burstable/pod{UID}/../{ID}"), none()),
            (format!("/kubepods/burstable/pod{UID}/./{ID}"), none()),
            ("/system.slice/../kubelet.service".to_owned(), none()),
            (format!("/a:b:c:d/x:{ID}:y"), none()),
            ("x".repeat(100_000), none()),
            ("/".repeat(10_000), none()),
            (format!("/{}", "pod".repeat(30_000)), none()),
            (format!("{}.service", "a".repeat(300)), none()),
            ("/kubepods/burstable/pod\u{e9}\u{301}/\0".to_owned(), none()),
        ]);
    }

    #[test]
    fn as_str_uses_kubernetes_spellings() {
        let classes = [Guaranteed, Burstable, BestEffort].map(QosClass::as_str);
        assert_eq!(classes, ["Guaranteed", "Burstable", "BestEffort"]);
    }

    /// xorshift64: reproducible pseudo-random numbers without a crate.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn random_paths_never_panic_and_give_well_formed_ids() {
        let pieces = format!(
            "/|/|/|kubepods|/kubepods|/burstable|/besteffort|/pod|pod{UID}|pod{UID_}|pod{STATIC}|\
             {ID}|/{ID2}|{short}|kubepods-|burstable-pod|.slice|.scope|.service|-|_|:|\
             cri-containerd-|crio-|crio-conmon-|/docker|docker-|libpod-|..|.|/k8s.io|\
             /system.slice|kubelet|é|\0|A|g|0| |@",
            short = &ID[..40],
        );
        let fragments: Vec<&str> = pieces.split('|').collect();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let (mut pods, mut containers) = (0, 0);
        for _ in 0..5000 {
            let len = rng.below(16);
            let path: String = (0..len)
                .map(|_| fragments[rng.below(fragments.len())])
                .collect();
            let id = parse(&path);
            if let Some(uid) = &id.pod_uid {
                assert!(is_pod_uid(uid), "{path:?} gave pod uid {uid:?}");
                pods += 1;
            }
            if let Some(cid) = &id.container_id {
                assert!(is_container_id(cid), "{path:?} gave container {cid:?}");
                assert!(path.contains(cid.as_str()), "{path:?} gave {cid:?}");
                containers += 1;
            }
            if id.qos_class.is_some() {
                assert!(id.pod_uid.is_some(), "{path:?}: QoS without a pod");
            }
        }
        assert!(
            pods > 20 && containers > 20,
            "fragments too rarely form layouts: {pods} pods, {containers} containers"
        );
    }
}
