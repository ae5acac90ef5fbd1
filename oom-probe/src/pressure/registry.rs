//! The watches and the one epoll instance their notifications land on: each
//! [`Watched`] under its epoll key, found also by cgroup path and by the
//! inotify watch of its `memory.events`, and the v1 eventfds taken out of
//! the epoll set for [`READ_EVERY`] after they notified.
//!
//! tokio polls the epoll fd through [`AsyncFd`]: the cost of a quiet cgroup
//! is two file descriptors and a few hundred bytes, and no work.

use std::{
    collections::{HashMap, VecDeque},
    os::fd::{AsFd, OwnedFd},
    path::PathBuf,
    time::Instant,
};

use rustix::event::epoll;
use tokio::io::unix::AsyncFd;

use super::{
    cgroupfs::Notifier,
    episode::{Kind, Tracker, READ_EVERY},
};
use crate::event::PressureScope;

/// The epoll key of the inotify fd (`memory.events` changes, cgroups made
/// and removed, limits written); watches get keys from 1 up.
pub const INOTIFY_KEY: u64 = u64::MAX;

/// One watched cgroup (or the node).
pub struct Watched {
    /// Path below the hierarchy root (`None`: the node).
    pub path: Option<String>,
    /// The cgroup's directory, or the node's PSI file.
    pub dir: PathBuf,
    /// The cgroup's id (cgroupfs inode); `None` for the node.
    pub cgroup_id: Option<u64>,
    /// The registered notification; closing it unregisters.
    pub notifier: Notifier,
    /// The inotify watch on `memory.events` (v2).
    pub wd: Option<i32>,
    /// Its pressure state.
    pub tracker: Tracker,
}

impl Watched {
    /// Node or cgroup.
    pub fn scope(&self) -> PressureScope {
        match self.tracker.kind() {
            Kind::Node => PressureScope::Node,
            Kind::CgroupV1 | Kind::CgroupV2 => PressureScope::Cgroup,
        }
    }
}

/// The watches, keyed by their epoll key, and the epoll instance.
pub struct Registry {
    epoll: AsyncFd<OwnedFd>,
    watches: HashMap<u64, Watched>,
    /// Cgroup path -> key.
    by_path: HashMap<String, u64>,
    /// `memory.events` inotify watch -> key.
    by_wd: HashMap<i32, u64>,
    next_key: u64,
    /// v1 eventfds taken out of the epoll set after a notification, with
    /// when to poll them again (now + [`READ_EVERY`]). A cgroup thrashing at
    /// its limit signals its eventfd about 2,000 times a second; each was a
    /// wake-up of the agent (39,487 context switches and 830 ms of CPU in
    /// a 20 s hold, `cargo xtask bench --pressure-only`). The eventfd's
    /// counter keeps what comes in between, so nothing is missed: it wakes
    /// the agent at most every [`READ_EVERY`]. PSI triggers (v2, the node)
    /// are rate-limited by the kernel to one per window and stay armed.
    /// Pushed in time order (each `now` + the same delay), so the front is
    /// the next one due.
    disarmed: VecDeque<(Instant, u64)>,
}

impl Registry {
    /// An empty registry with a new epoll instance, polled by tokio (call
    /// inside a runtime).
    ///
    /// Errors: epoll cannot be created (fd limits) or registered with tokio.
    pub fn new() -> std::io::Result<Self> {
        let epfd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open
        // and unchanged for as long as it is registered.
        let epoll = unsafe { AsyncFd::register(epfd) }.map_err(|e| e.into_parts().1)?;
        Ok(Self {
            epoll,
            watches: HashMap::new(),
            by_path: HashMap::new(),
            by_wd: HashMap::new(),
            next_key: 1,
            disarmed: VecDeque::new(),
        })
    }

    /// Polls the inotify fd under [`INOTIFY_KEY`].
    pub fn add_inotify(&self, inotify: impl AsFd) -> std::io::Result<()> {
        epoll::add(
            self.epoll.get_ref(),
            inotify,
            epoll::EventData::new_u64(INOTIFY_KEY),
            epoll::EventFlags::IN,
        )?;
        Ok(())
    }

    /// Polls `watched`'s notifier (`POLLPRI` for a PSI trigger, readable for
    /// an eventfd); returns its key, or `None` (said) when epoll refuses it.
    pub fn add(&mut self, watched: Watched) -> Option<u64> {
        let key = self.next_key;
        self.next_key += 1;
        let flags = if watched.notifier.psi {
            epoll::EventFlags::PRI
        } else {
            epoll::EventFlags::IN
        };
        if let Err(err) = epoll::add(
            self.epoll.get_ref(),
            &watched.notifier.fd,
            epoll::EventData::new_u64(key),
            flags,
        ) {
            tracing::warn!("cannot poll a pressure notification ({err})");
            return None;
        }
        if let Some(path) = &watched.path {
            self.by_path.insert(path.clone(), key);
        }
        if let Some(wd) = watched.wd {
            self.by_wd.insert(wd, key);
        }
        self.watches.insert(key, watched);
        Some(key)
    }

    /// Stops polling `key` and forgets it; the caller drops its fds (the
    /// kernel drops the eventfd registration or the PSI trigger with them)
    /// and its `memory.events` watch.
    pub fn remove(&mut self, key: u64) -> Option<Watched> {
        let watched = self.watches.remove(&key)?;
        let _ = epoll::delete(self.epoll.get_ref(), &watched.notifier.fd);
        if let Some(wd) = watched.wd {
            self.by_wd.remove(&wd);
        }
        if let Some(path) = &watched.path {
            self.by_path.remove(path);
        }
        Some(watched)
    }

    /// The watch under `key`.
    pub fn get(&self, key: u64) -> Option<&Watched> {
        self.watches.get(&key)
    }

    /// The watch under `key`, to change.
    pub fn get_mut(&mut self, key: u64) -> Option<&mut Watched> {
        self.watches.get_mut(&key)
    }

    /// The key of the cgroup at `path` (below the root).
    pub fn key_of_path(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// The key of the cgroup whose `memory.events` inotify watches as `wd`.
    pub fn key_of_wd(&self, wd: i32) -> Option<u64> {
        self.by_wd.get(&wd).copied()
    }

    /// The paths of the watched cgroups.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.by_path.keys().map(String::as_str)
    }

    /// Every watch, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut Watched)> {
        self.watches.iter_mut().map(|(key, w)| (*key, w))
    }

    /// How many watches (cgroups and the node).
    pub fn len(&self) -> usize {
        self.watches.len()
    }

    /// True when nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    /// Waits until epoll has something ready, or the next disarmed eventfd
    /// is due. Cancel-safe: nothing is read. Never returns if tokio cannot
    /// poll the epoll fd any more.
    pub async fn wait(&self) {
        let rearm_at = self.disarmed.front().map(|&(at, _)| at);
        let readable = self.epoll.readable();
        let woke = match rearm_at {
            Some(at) => tokio::select! {
                ready = readable => Some(ready),
                () = tokio::time::sleep_until(at.into()) => None,
            },
            None => Some(readable.await),
        };
        match woke {
            Some(Ok(mut guard)) => guard.clear_ready(),
            Some(Err(_)) => std::future::pending().await,
            None => {}
        }
    }

    /// What epoll has ready now, without waiting, into `ready` (cleared
    /// first, filled up to its capacity); false when nothing is.
    pub fn ready(&self, ready: &mut Vec<epoll::Event>) -> bool {
        loop {
            ready.clear();
            let zero = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            match epoll::wait(
                self.epoll.get_ref(),
                rustix::buffer::spare_capacity(&mut *ready),
                Some(&zero),
            ) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(rustix::io::Errno::INTR) => continue,
                Err(err) => {
                    tracing::warn!("pressure notifications cannot be read ({err})");
                    return false;
                }
            }
        }
    }

    /// Takes `key`'s eventfd out of the epoll set until `now` +
    /// [`READ_EVERY`] (see `disarmed`). Called only on its readiness, which
    /// a disarmed fd does not report: a key is never in the queue twice.
    pub fn disarm(&mut self, key: u64, now: Instant) {
        let Some(watched) = self.watches.get(&key) else {
            return;
        };
        let quiet = epoll::modify(
            self.epoll.get_ref(),
            &watched.notifier.fd,
            epoll::EventData::new_u64(key),
            epoll::EventFlags::empty(),
        );
        if quiet.is_ok() {
            self.disarmed.push_back((now + READ_EVERY, key));
        }
    }

    /// Polls again the eventfds disarmed until `now` or before: one that
    /// notified in between is readable at once.
    pub fn rearm_due(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.disarmed.front() {
            if at > now {
                break;
            }
            self.disarmed.pop_front();
            let Some(watched) = self.watches.get(&key) else {
                continue; // unwatched meanwhile: its fd is closed
            };
            if let Err(err) = epoll::modify(
                self.epoll.get_ref(),
                &watched.notifier.fd,
                epoll::EventData::new_u64(key),
                epoll::EventFlags::IN,
            ) {
                tracing::warn!("cannot poll a pressure notification again ({err})");
            }
        }
    }
}
