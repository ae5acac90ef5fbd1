//! This node's pods in memory, in the shape of kube-rs' reflector: a
//! [`Writer`] that applies the watcher's events and nothing else (no I/O, the
//! clock passed in), and a cheap, cloneable [`Store`] that answers lookups.
//! The watch loop that feeds the writer is [`super::watch`]; the tests here
//! feed it events by hand.
//!
//! Deleted pods are kept for a while, because the pod of a kill is often
//! deleted moments after it (a Job's pod, a rollout, an eviction) and must
//! still be named.
//!
//! Over 500 lines for its tests (every store rule fed as watcher events); the
//! code is about 300.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;

use super::pod::{bare_container_id, eviction, summarize, Eviction, PodMatch, PodSummary};

/// How long a deleted pod stays in the store unless told otherwise: long
/// enough to name the pod of a kill reported late, short enough to stay small
/// on a node that churns through short-lived pods.
pub const DEFAULT_RETAIN_DELETED: Duration = Duration::from_secs(10 * 60);

/// Container ids remembered per container. A container the kernel OOM-killed
/// restarts under a new id, and the kill may be looked up after the status
/// moved on; a few old ids cover repeated restarts without growing.
const IDS_PER_CONTAINER: usize = 4;

/// A new, empty store and the only writer that fills it; deleted pods stay
/// nameable for `retain`.
pub fn store(retain: Duration) -> (Store, Writer) {
    let store = Store(Arc::new(Shared {
        pods: RwLock::default(),
        retain,
        synced: AtomicBool::new(false),
    }));
    let writer = Writer {
        store: store.clone(),
        listed: HashSet::new(),
    };
    (store, writer)
}

/// The read side: lookups by pod uid or container id, from memory.
#[derive(Clone)]
pub struct Store(Arc<Shared>);

struct Shared {
    pods: RwLock<Pods>,
    retain: Duration,
    synced: AtomicBool,
}

impl Store {
    /// The pod with this uid as of `now` and, when `container_id` is one of
    /// its containers' (current or recent) ids, that container. The uid may
    /// use `_` for `-`, as systemd cgroup names do; the container id may be
    /// bare hex or carry its runtime prefix (`containerd://`).
    pub fn lookup(
        &self,
        pod_uid: &str,
        container_id: Option<&str>,
        now: Instant,
    ) -> Option<PodMatch> {
        let uid = pod_uid.replace('_', "-");
        self.read()
            .find(&uid, container_id.map(bare_container_id), self.expiry(now))
    }

    /// The pod and container with this container id, for cgroup layouts
    /// whose path names the container but not the pod.
    pub fn lookup_by_container_id(&self, container_id: &str, now: Instant) -> Option<PodMatch> {
        let id = bare_container_id(container_id);
        let pods = self.read();
        let uid = pods.by_container.get(id)?;
        pods.find(uid, Some(id), self.expiry(now))
    }

    /// True once the first full list of the node's pods is in: before that a
    /// miss means "not loaded yet", after it "not a pod of this node".
    pub fn is_synced(&self) -> bool {
        self.0.synced.load(Ordering::Relaxed)
    }

    /// How long deleted pods stay nameable.
    pub fn retain(&self) -> Duration {
        self.0.retain
    }

    /// Pods held, deleted ones in their retention included, and container
    /// ids indexed: what the store costs in memory.
    pub fn len(&self) -> (usize, usize) {
        let pods = self.read();
        (pods.by_uid.len(), pods.by_container.len())
    }

    /// True when the store holds no pod at all.
    pub fn is_empty(&self) -> bool {
        self.len().0 == 0
    }

    fn expiry(&self, now: Instant) -> Expiry {
        Expiry {
            now,
            retain: self.0.retain,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Pods> {
        self.0.pods.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Pods> {
        self.0.pods.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The write side: applies the watcher's events, in order. Pure: what
/// happens depends only on the events and the `now` given.
pub struct Writer {
    store: Store,
    /// Uids seen since the watcher started a (re)list; pods missing from it
    /// were deleted meanwhile.
    listed: HashSet<String>,
}

impl Writer {
    /// Applies one watcher event as of `now`; returns the pod's eviction when
    /// this is the first sight of it evicted. Pods already evicted in the
    /// first list are old news and give none.
    pub fn apply(&mut self, event: &watcher::Event<Pod>, now: Instant) -> Option<Eviction> {
        let first_list = !self.store.is_synced();
        match event {
            watcher::Event::Init => {
                self.listed.clear();
                None
            }
            watcher::Event::InitApply(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    self.listed.insert(uid.clone());
                }
                self.apply_pod(pod, first_list)
            }
            watcher::Event::InitDone => {
                self.store.write().mark_unlisted_deleted(&self.listed, now);
                self.listed.clear();
                self.store.0.synced.store(true, Ordering::Relaxed);
                None
            }
            watcher::Event::Apply(pod) => self.apply_pod(pod, false),
            watcher::Event::Delete(pod) => {
                // The last state may be the first sight of an eviction.
                let eviction = self.apply_pod(pod, false);
                if let Some(uid) = &pod.metadata.uid {
                    self.store.write().mark_deleted(uid, now);
                }
                eviction
            }
        }
    }

    /// Drops deleted pods whose retention is over at `now`, and their ids.
    pub fn expire(&mut self, now: Instant) {
        let retain = self.store.0.retain;
        self.store.write().expire(now, retain);
    }

    fn apply_pod(&mut self, pod: &Pod, first_list: bool) -> Option<Eviction> {
        let summary = summarize(pod)?;
        let eviction = eviction(pod);
        let newly_evicted = self
            .store
            .write()
            .apply(summary, eviction.is_some(), first_list);
        eviction.filter(|_| newly_evicted)
    }
}

/// "Now" and the retention, to tell live and retained pods from expired ones.
#[derive(Clone, Copy)]
struct Expiry {
    now: Instant,
    retain: Duration,
}

#[derive(Default)]
struct Pods {
    by_uid: HashMap<String, Entry>,
    /// Bare container id -> pod uid.
    by_container: HashMap<String, String>,
}

struct Entry {
    pod: PodSummary,
    deleted_at: Option<Instant>,
    /// Seen evicted already: an eviction is reported once per pod.
    evicted: bool,
}

impl Entry {
    fn expired(&self, at: Expiry) -> bool {
        self.deleted_at
            .is_some_and(|deleted| at.now.saturating_duration_since(deleted) >= at.retain)
    }
}

impl Pods {
    /// Stores a pod's latest state (alive again if it was marked deleted),
    /// keeping container ids its status no longer lists. Returns whether to
    /// report it as newly evicted.
    fn apply(&mut self, mut pod: PodSummary, evicted: bool, first_list: bool) -> bool {
        let uid = pod.uid.clone();
        let old = self.by_uid.remove(&uid);
        if let Some(old) = &old {
            for container in &mut pod.containers {
                let earlier = old
                    .pod
                    .containers
                    .iter()
                    .find(|c| c.name == container.name && c.kind == container.kind);
                for id in earlier.into_iter().flat_map(|c| &c.ids) {
                    if !container.ids.contains(id) {
                        container.ids.push(id.clone());
                    }
                }
                container.ids.truncate(IDS_PER_CONTAINER);
            }
            for id in old.pod.container_ids() {
                if self.by_container.get(id) == Some(&uid) {
                    self.by_container.remove(id);
                }
            }
        }
        for id in pod.container_ids() {
            self.by_container.insert(id.clone(), uid.clone());
        }
        let was_evicted = old.as_ref().is_some_and(|old| old.evicted);
        let report = evicted && !was_evicted && !(first_list && old.is_none());
        self.by_uid.insert(
            uid,
            Entry {
                pod,
                deleted_at: None,
                evicted: evicted || was_evicted,
            },
        );
        report
    }

    fn mark_deleted(&mut self, uid: &str, now: Instant) {
        if let Some(entry) = self.by_uid.get_mut(uid) {
            entry.deleted_at.get_or_insert(now);
        }
    }

    /// After a (re)list: live pods it did not contain were deleted while the
    /// watch was down.
    fn mark_unlisted_deleted(&mut self, listed: &HashSet<String>, now: Instant) {
        for (uid, entry) in &mut self.by_uid {
            if !listed.contains(uid) {
                entry.deleted_at.get_or_insert(now);
            }
        }
    }

    /// Drops deleted pods past their retention, and their container ids.
    fn expire(&mut self, now: Instant, retain: Duration) {
        let at = Expiry { now, retain };
        let expired: Vec<String> = self
            .by_uid
            .iter()
            .filter(|(_, entry)| entry.expired(at))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in expired {
            if let Some(entry) = self.by_uid.remove(&uid) {
                for id in entry.pod.container_ids() {
                    if self.by_container.get(id) == Some(&uid) {
                        self.by_container.remove(id);
                    }
                }
            }
        }
    }

    fn find(&self, uid: &str, container_id: Option<&str>, at: Expiry) -> Option<PodMatch> {
        let entry = self.by_uid.get(uid).filter(|entry| !entry.expired(at))?;
        let pod = &entry.pod;
        let container = container_id.and_then(|id| {
            pod.containers
                .iter()
                .find(|c| c.ids.iter().any(|known| known == id))
                .map(|c| (c, id))
        });
        Some(PodMatch {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            node: pod.node.clone(),
            qos_class: pod.qos_class.clone(),
            owner: pod.owner.clone(),
            deleted: entry.deleted_at.is_some(),
            container_name: container.map(|(c, _)| c.name.clone()),
            container_kind: container.map(|(c, _)| c.kind),
            container_id: container.map(|(_, id)| id.to_owned()),
            memory_request_bytes: container.and_then(|(c, _)| c.memory_request_bytes),
            memory_limit_bytes: container.and_then(|(c, _)| c.memory_limit_bytes),
            share_process_namespace: pod.share_process_namespace,
        })
    }
}

#[cfg(test)]
mod tests {
    //! The writer fed watcher events by hand, as the watch loop feeds it:
    //! no server, no clock but the `now` each call is given.

    use super::*;
    use crate::kube::{fixtures::*, pod::ContainerKind};
    use serde_json::{json, Value};

    fn object(value: Value) -> Pod {
        serde_json::from_value(value).expect("a Pod")
    }

    /// A store whose first list held `pods`.
    fn listed(pods: Vec<Value>, retain: Duration) -> (Store, Writer) {
        let (store, mut writer) = store(retain);
        let now = Instant::now();
        assert_eq!(writer.apply(&watcher::Event::Init, now), None);
        for pod in pods {
            assert_eq!(
                writer.apply(&watcher::Event::InitApply(object(pod)), now),
                None
            );
        }
        assert!(!store.is_synced(), "not before the list is done");
        writer.apply(&watcher::Event::InitDone, now);
        assert!(store.is_synced());
        (store, writer)
    }

    #[test]
    fn names_pod_container_qos_owner_and_memory() {
        let (store, _) = listed(vec![web_pod()], DEFAULT_RETAIN_DELETED);
        let now = Instant::now();
        let app = web_match(
            "app",
            ContainerKind::Regular,
            APP_ID,
            Some(128 * MIB),
            Some(1536 * MIB),
        );
        assert_eq!(store.lookup(UID, Some(APP_ID), now), Some(app.clone()));
        // As the path of a systemd-driver cgroup spells it, with a runtime prefix.
        assert_eq!(
            store.lookup(
                &UID.replace('-', "_"),
                Some(&format!("containerd://{APP_ID}")),
                now
            ),
            Some(app.clone())
        );
        assert_eq!(store.lookup_by_container_id(APP_ID, now), Some(app));
        assert_eq!(
            store.lookup(UID, Some(SIDECAR_ID), now),
            Some(web_match(
                "sidecar",
                ContainerKind::Regular,
                SIDECAR_ID,
                Some(100_000_000),
                None
            ))
        );
        assert_eq!(
            store.lookup_by_container_id(&format!("cri-o://{INIT_ID}"), now),
            Some(web_match(
                "migrate",
                ContainerKind::Init,
                INIT_ID,
                Some(64 * MIB),
                Some(64 * MIB)
            ))
        );
        assert_eq!(
            store.lookup_by_container_id(DEBUG_ID, now),
            Some(web_match(
                "debugger",
                ContainerKind::Ephemeral,
                DEBUG_ID,
                None,
                None
            ))
        );

        // The pod is known, the container is not (the sandbox, or a status
        // not updated yet): the pod's fields, no container's.
        let pod_only = PodMatch {
            container_name: None,
            container_kind: None,
            container_id: None,
            memory_request_bytes: None,
            memory_limit_bytes: None,
            ..web_match("", ContainerKind::Regular, "", None, None)
        };
        assert_eq!(
            store.lookup(UID, Some("feedface"), now),
            Some(pod_only.clone())
        );
        assert_eq!(store.lookup(UID, None, now), Some(pod_only));
        assert_eq!(store.lookup_by_container_id("feedface", now), None);
        assert_eq!(
            store.lookup("00000000-0000-0000-0000-000000000000", Some(APP_ID), now),
            None
        );
    }

    #[test]
    fn restarted_container_is_found_by_old_and_new_ids_with_its_resized_limit() {
        let mut web = web_pod();
        let (store, mut writer) = listed(vec![web.clone()], DEFAULT_RETAIN_DELETED);
        let now = Instant::now();
        assert!(store.lookup(UID, Some(APP_ID), now).is_some());

        // The kernel killed app's init; the kubelet restarted it under a new
        // id and, meanwhile, an in-place resize raised its limit to 2Gi.
        let restarted = "1111111111111111111111111111111111111111111111111111111111111111";
        let mut app = container_status("app", &format!("containerd://{restarted}"));
        app["restartCount"] = json!(1);
        app["lastState"] = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                                  "containerID": format!("containerd://{APP_ID}")}});
        app["resources"] = json!({"requests": {"memory": "128Mi"}, "limits": {"memory": "2Gi"}});
        web["status"]["containerStatuses"][0] = app.clone();
        writer.apply(&watcher::Event::Apply(object(web.clone())), now);
        assert_eq!(
            store.lookup(UID, Some(restarted), now),
            Some(web_match(
                "app",
                ContainerKind::Regular,
                restarted,
                Some(128 * MIB),
                Some(2048 * MIB)
            ))
        );
        let old = store.lookup(UID, Some(APP_ID), now).unwrap();
        assert_eq!(old.container_name.as_deref(), Some("app"));
        assert_eq!(old.container_id.as_deref(), Some(APP_ID));

        // A second restart: the status no longer names the first id, the
        // store still does.
        let again = "2222222222222222222222222222222222222222222222222222222222222222";
        app["containerID"] = json!(format!("containerd://{again}"));
        app["lastState"]["terminated"]["containerID"] = json!(format!("containerd://{restarted}"));
        web["status"]["containerStatuses"][0] = app;
        writer.apply(&watcher::Event::Apply(object(web)), now);
        for id in [APP_ID, restarted, again] {
            let found = store.lookup_by_container_id(id, now).unwrap();
            assert_eq!(found.container_name.as_deref(), Some("app"), "{id}");
        }
    }

    #[test]
    fn deleted_pod_is_named_until_its_retention_expires() {
        let retain = Duration::from_secs(2);
        let (store, mut writer) = listed(vec![web_pod()], retain);
        let deleted_at = Instant::now();
        assert!(!store.lookup(UID, Some(APP_ID), deleted_at).unwrap().deleted);

        // The pod goes right after its container's kill.
        writer.apply(&watcher::Event::Delete(object(web_pod())), deleted_at);
        assert_eq!(
            store.lookup(UID, Some(APP_ID), deleted_at),
            Some(PodMatch {
                deleted: true,
                ..web_match(
                    "app",
                    ContainerKind::Regular,
                    APP_ID,
                    Some(128 * MIB),
                    Some(1536 * MIB)
                )
            })
        );
        let almost = deleted_at + retain - Duration::from_millis(1);
        assert!(store
            .lookup_by_container_id(SIDECAR_ID, almost)
            .is_some_and(|m| m.deleted));

        let over = deleted_at + retain;
        assert_eq!(store.lookup(UID, Some(APP_ID), over), None);
        assert_eq!(store.lookup_by_container_id(SIDECAR_ID, over), None);
        // And the memory is given back, index included.
        assert_eq!(store.len(), (1, 4), "kept until the sweep");
        writer.expire(almost);
        assert_eq!(store.len(), (1, 4), "not before its time");
        writer.expire(over);
        assert!(store.is_empty());
        assert_eq!(store.len(), (0, 0));
    }

    #[test]
    fn a_relist_marks_pods_it_no_longer_holds_deleted() {
        let batch = pod(
            "shop",
            "batch-1",
            "00000000-0000-0000-0000-0000000000b1",
            "node-a",
        );
        let (store, mut writer) = listed(vec![web_pod(), batch], DEFAULT_RETAIN_DELETED);
        let now = Instant::now();
        writer.apply(&watcher::Event::Init, now);
        writer.apply(&watcher::Event::InitApply(object(web_pod())), now);
        let newcomer = pod(
            "shop",
            "batch-2",
            "00000000-0000-0000-0000-0000000000b2",
            "node-a",
        );
        writer.apply(&watcher::Event::InitApply(object(newcomer)), now);
        writer.apply(&watcher::Event::InitDone, now);
        let gone = store
            .lookup("00000000-0000-0000-0000-0000000000b1", None, now)
            .unwrap();
        assert!(
            gone.deleted,
            "missing from the relist: deleted, still named"
        );
        assert!(!store.lookup(UID, None, now).unwrap().deleted);
        assert!(store
            .lookup("00000000-0000-0000-0000-0000000000b2", None, now)
            .is_some());
    }

    #[test]
    fn an_eviction_is_reported_once_and_not_when_already_listed_evicted() {
        let evicted = |mut pod: Value, message: &str| {
            pod["status"]["phase"] = json!("Failed");
            pod["status"]["reason"] = json!("Evicted");
            pod["status"]["message"] = json!(message);
            pod
        };
        let old = pod(
            "shop",
            "old-evicted",
            "00000000-0000-0000-0000-0000000000e0",
            "node-a",
        );
        let (_store, mut writer) = listed(
            vec![evicted(old.clone(), "long ago"), web_pod()],
            DEFAULT_RETAIN_DELETED,
        );
        let now = Instant::now();
        assert_eq!(
            writer.apply(
                &watcher::Event::Apply(object(evicted(old, "long ago"))),
                now
            ),
            None,
            "old news"
        );
        let message =
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 90Mi.";
        let mut web = evicted(web_pod(), message);
        web["status"]["conditions"] = json!([{"type": "DisruptionTarget", "status": "True",
            "reason": "TerminationByKubelet", "lastTransitionTime": "2026-11-23T10:00:01Z"}]);
        assert_eq!(
            writer.apply(&watcher::Event::Apply(object(web.clone())), now),
            Some(Eviction {
                namespace: "shop".into(),
                pod: "web-7d9f8-x2x4q".into(),
                pod_uid: UID.into(),
                message: Some(message.into()),
                time: std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_428_001),
            })
        );
        assert_eq!(
            writer.apply(&watcher::Event::Apply(object(web.clone())), now),
            None
        );
        assert_eq!(
            writer.apply(&watcher::Event::Delete(object(web)), now),
            None,
            "evicted once, reported once"
        );
    }
}
