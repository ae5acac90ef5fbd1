//! Which cgroups stall when the node does, for a node `memory_pressure`.
//!
//! On cgroup v2 every cgroup has its own PSI (`memory.pressure`), and a task
//! stalled on memory counts in its cgroup and in every ancestor. While the
//! node is under watch (stalled or short within `--pressure-clear-after`)
//! the shell walks the hierarchy about once a second ([`StallingWalk`]),
//! reading each cgroup's `some` total: the cgroups whose total grew by at
//! least [`FLOOR`] percent of the time since the previous walk stall, and
//! the deepest of them are named (a pod's container rather than the pod,
//! `kubepods` and the root). Any cgroup is found, watched or not (a process
//! filling the node from a cgroup without a limit included). Totals, not
//! `some avg10`: the kernel updates the averages every 2 s and they rise
//! slowly, so at the start of a stall they still say 0; `avg10` is used
//! only for a cgroup with no earlier reading. On a calm node nothing is
//! read.
//!
//! On cgroup v1 there is no per-cgroup PSI: the watched cgroups in a
//! pressure episode (notified and at their limit) are the ones named (the
//! shell's part).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::cgroupfs;

/// At most this many cgroups are named, the most stalled first.
pub const STALLING_MAX: usize = 5;

/// A cgroup stalled less than this percent of the time is not stalling.
pub const FLOOR: f64 = 1.0;

/// At most this many cgroups' `memory.pressure` are read per walk.
const VISIT_MAX: usize = 4096;

/// A walk this soon after the previous one gives the previous one's
/// answer (too short a span to compare totals over).
const SPAN_MIN: Duration = Duration::from_millis(250);

/// The walks of a v2 hierarchy, each compared with the one before.
#[derive(Debug)]
pub struct StallingWalk {
    root: PathBuf,
    last: Option<Walked>,
}

/// A walk: when, its `some` totals (µs) by directory, its answer.
#[derive(Debug)]
struct Walked {
    at: Instant,
    totals: HashMap<PathBuf, u64>,
    answer: Vec<(String, f64)>,
}

impl StallingWalk {
    /// Walks of the v2 hierarchy at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root, last: None }
    }

    /// The hierarchy's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The deepest cgroups that stalled at least [`FLOOR`] percent of the
    /// time since the previous walk, as `(path below root, percent)`, most
    /// stalled first (then by path), at most [`STALLING_MAX`]. A cgroup
    /// the previous walk did not read is judged by its `some avg10`. Within
    /// 250 ms of the previous walk, that walk's answer.
    pub fn walk(&mut self, now: Instant) -> Vec<(String, f64)> {
        if let Some(last) = &self.last {
            if now.saturating_duration_since(last.at) < SPAN_MIN {
                return last.answer.clone();
            }
        }
        let mut read = Vec::new();
        visit(&self.root, &mut read);
        let before = self.last.as_ref().map(|last| {
            let span_us = now.saturating_duration_since(last.at).as_micros().max(1) as f64;
            (span_us, &last.totals)
        });
        let stalling: Vec<(&PathBuf, f64)> = read
            .iter()
            .filter_map(|(dir, psi)| {
                let percent = match before.and_then(|(span, totals)| Some((span, totals.get(dir)?)))
                {
                    Some((span_us, &total)) => {
                        psi.some_total_us.saturating_sub(total) as f64 * 100.0 / span_us
                    }
                    None => psi.some_avg10,
                };
                // Two decimals, as the kernel prints its averages.
                let percent = (percent.min(100.0) * 100.0).round() / 100.0;
                (percent >= FLOOR).then_some((dir, percent))
            })
            .collect();
        let mut answer: Vec<(String, f64)> = stalling
            .iter()
            .filter(|(dir, _)| {
                !stalling
                    .iter()
                    .any(|(other, _)| other != dir && other.starts_with(dir))
            })
            .map(|(dir, percent)| (path_below(&self.root, dir), *percent))
            .collect();
        answer.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        answer.truncate(STALLING_MAX);
        let totals = read
            .into_iter()
            .map(|(dir, psi)| (dir, psi.some_total_us))
            .collect();
        self.last = Some(Walked {
            at: now,
            totals,
            answer: answer.clone(),
        });
        answer
    }

    /// Forgets the previous walk (the node is calm: the next walk, maybe
    /// much later, is not compared with it).
    pub fn forget(&mut self) {
        self.last = None;
    }
}

/// Reads the PSI of every cgroup below `dir`, depth first, at most
/// [`VISIT_MAX`] in all.
fn visit(dir: &Path, read: &mut Vec<(PathBuf, crate::event::Psi)>) {
    for child in subdirs(dir) {
        if read.len() >= VISIT_MAX {
            return;
        }
        if let Some(psi) = cgroupfs::read_psi(&child.join("memory.pressure")) {
            read.push((child.clone(), psi));
            visit(&child, read);
        }
    }
}

/// The directories in `dir`, by name.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .collect();
    dirs.sort();
    dirs
}

/// `/a/b` for `<root>/a/b`.
fn path_below(root: &Path, dir: &Path) -> String {
    let relative = dir.strip_prefix(root).unwrap_or(dir);
    format!("/{}", relative.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the cgroups' `memory.pressure` (`(path, some avg10, some
    /// total µs)`) below `root`, making the directories.
    fn write(root: &Path, cgroups: &[(&str, f64, u64)]) {
        for (path, avg10, total) in cgroups {
            let dir = root.join(path.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            fs::write(
                dir.join("memory.pressure"),
                format!(
                    "some avg10={avg10:.2} avg60=0.00 avg300=0.00 total={total}\n\
                     full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
                ),
            )
            .unwrap();
        }
    }

    fn root(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("oom-probe-stalling-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        root
    }

    #[test]
    fn the_deepest_cgroups_whose_totals_grew_are_named_most_stalled_first() {
        let root = root("deep");
        let t0 = Instant::now();
        let quiet = [
            ("/kubepods", 0.0, 1_000),
            ("/kubepods/burstable", 0.0, 1_000),
            ("/kubepods/burstable/pod1", 0.0, 500),
            ("/kubepods/burstable/pod1/app", 0.0, 500),
            ("/kubepods/burstable/pod1/sidecar", 0.0, 0),
            ("/kubepods/burstable/pod2", 0.0, 500),
            ("/kubepods/burstable/pod2/web", 0.0, 500),
            ("/system.slice", 0.0, 0),
            ("/squeeze", 0.0, 0),
        ];
        write(&root, &quiet);
        let mut walk = StallingWalk::new(root.clone());
        assert!(walk.walk(t0).is_empty(), "no earlier totals, avg10 all 0");
        // One second later: app stalled 300 ms, web 120 ms, the sidecar
        // 5 ms, /squeeze 80 ms; the averages have not moved yet.
        write(
            &root,
            &[
                ("/kubepods", 0.0, 1_000 + 420_000),
                ("/kubepods/burstable", 0.0, 1_000 + 420_000),
                ("/kubepods/burstable/pod1", 0.0, 500 + 305_000),
                ("/kubepods/burstable/pod1/app", 0.0, 500 + 300_000),
                ("/kubepods/burstable/pod1/sidecar", 0.0, 5_000),
                ("/kubepods/burstable/pod2", 0.0, 500 + 120_000),
                ("/kubepods/burstable/pod2/web", 0.0, 500 + 120_000),
                ("/squeeze", 0.0, 80_000),
            ],
        );
        let t1 = t0 + Duration::from_secs(1);
        let named = walk.walk(t1);
        let paths: Vec<&str> = named.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/kubepods/burstable/pod1/app",
                "/kubepods/burstable/pod2/web",
                "/squeeze"
            ]
        );
        assert!((named[0].1 - 30.0).abs() < 0.01, "{named:?}");
        // Within 250 ms: the same answer, nothing compared over 100 ms.
        assert_eq!(walk.walk(t1 + Duration::from_millis(100)), named);
        // A second later, nothing grew: none.
        assert!(walk.walk(t1 + Duration::from_secs(1)).is_empty());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn without_an_earlier_walk_some_avg10_decides() {
        let root = root("avg10");
        // Its own processes stall (its children each below the floor).
        write(
            &root,
            &[
                ("/a", 5.0, 9),
                ("/a/x", 0.9, 9),
                ("/a/y", 0.9, 9),
                ("/b", 0.0, 0),
            ],
        );
        let mut walk = StallingWalk::new(root.clone());
        assert_eq!(walk.walk(Instant::now()), [("/a".to_string(), 5.0)]);
        // Forgotten (the node calm): avg10 again.
        walk.forget();
        assert_eq!(
            walk.walk(Instant::now() + Duration::from_secs(5)),
            [("/a".to_string(), 5.0)]
        );
        assert!(StallingWalk::new(root.join("missing"))
            .walk(Instant::now())
            .is_empty());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn at_most_five_are_named() {
        let root = root("many");
        let cgroups: Vec<(String, f64, u64)> =
            (1..=8).map(|i| (format!("/c{i}"), i as f64, 0)).collect();
        let refs: Vec<(&str, f64, u64)> = cgroups
            .iter()
            .map(|(p, a, t)| (p.as_str(), *a, *t))
            .collect();
        write(&root, &refs);
        let named: Vec<String> = StallingWalk::new(root.clone())
            .walk(Instant::now())
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(named, ["/c8", "/c7", "/c6", "/c5", "/c4"]);
        let _ = fs::remove_dir_all(&root);
    }
}
