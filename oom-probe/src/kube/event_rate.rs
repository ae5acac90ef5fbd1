//! The rate limit of Kubernetes Event posts (one API write each): token
//! buckets, one for the node's agent and one per referenced object (a pod's
//! container, or the Node), so a pod that is OOM-killed in a loop (or
//! forges kills) cannot turn every node's agent into a stream of API
//! writes. A pure state machine fed with times; [`super::events`] is its
//! I/O shell.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// One token bucket: `burst` tokens at most, refilled at `per_second`;
/// counted in billionths of a token, so refills of many short intervals
/// add up exactly.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    nanotokens: u64,
    at: Instant,
}

/// A token in [`Bucket::nanotokens`].
const TOKEN: u64 = 1_000_000_000;

/// `tokens` in billionths, rounded.
fn nano(tokens: f64) -> u64 {
    (tokens * TOKEN as f64).round() as u64
}

/// The rates and bursts of an [`EventRate`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Posts per second for the whole node, sustained.
    pub node_per_second: f64,
    /// Posts the node may make at once after a quiet spell.
    pub node_burst: f64,
    /// Posts per second for one referenced object (container or Node).
    pub object_per_second: f64,
    /// Posts one object may get at once.
    pub object_burst: f64,
    /// Dropped posts are said at most once per this interval.
    pub say_every: Duration,
}

impl Default for Limits {
    /// 1 post/s per node with a burst of 10; one every 5 s per object with
    /// a burst of 3 (kube's Recorder folds repeats into one Event's series
    /// anyway: past the first few, a post only bumps a count); dropped
    /// posts said once a minute.
    fn default() -> Self {
        Self {
            node_per_second: 1.0,
            node_burst: 10.0,
            object_per_second: 0.2,
            object_burst: 3.0,
            say_every: Duration::from_secs(60),
        }
    }
}

/// Buckets of one object above this many are forgotten once full again.
const OBJECTS: usize = 1024;

impl Bucket {
    /// A full bucket at `now`.
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            nanotokens: nano(burst),
            at: now,
        }
    }

    /// The tokens at `now` (refilled since the last look, capped at `burst`).
    fn refill(&mut self, per_second: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_nanos() as f64;
        let added = (elapsed * per_second).round() as u64;
        self.nanotokens = self.nanotokens.saturating_add(added).min(nano(burst));
        self.at = now;
    }
}

/// What the rate limit decided for one post.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Post it.
    Post,
    /// Drop it; `say` carries the posts dropped since the last time they
    /// were said (this one included) when they are due to be said now.
    Drop { say: Option<u64> },
}

/// The node's bucket and one per referenced object.
#[derive(Debug)]
pub struct EventRate {
    limits: Limits,
    node: Bucket,
    objects: HashMap<String, Bucket>,
    /// Posts dropped since they were last said.
    unsaid: u64,
    /// When drops were last said.
    said_at: Option<Instant>,
}

impl EventRate {
    /// Full buckets at `now`.
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            node: Bucket::full(limits.node_burst, now),
            objects: HashMap::new(),
            unsaid: 0,
            said_at: None,
        }
    }

    /// Whether a post about `object` (a key naming the referenced object)
    /// at `now` goes out: it needs a token from both the object's bucket
    /// and the node's, and takes one from each only when both have one.
    pub fn admit(&mut self, object: &str, now: Instant) -> Decision {
        let l = self.limits;
        self.node.refill(l.node_per_second, l.node_burst, now);
        if !self.objects.contains_key(object) && self.objects.len() >= OBJECTS {
            self.forget_full(now);
        }
        let bucket = self
            .objects
            .entry(object.to_string())
            .or_insert_with(|| Bucket::full(l.object_burst, now));
        bucket.refill(l.object_per_second, l.object_burst, now);
        if bucket.nanotokens >= TOKEN && self.node.nanotokens >= TOKEN {
            bucket.nanotokens -= TOKEN;
            self.node.nanotokens -= TOKEN;
            return Decision::Post;
        }
        self.unsaid += 1;
        let due = self
            .said_at
            .is_none_or(|at| now.saturating_duration_since(at) >= l.say_every);
        if !due {
            return Decision::Drop { say: None };
        }
        self.said_at = Some(now);
        Decision::Drop {
            say: Some(std::mem::take(&mut self.unsaid)),
        }
    }

    /// Drops the buckets that are full again at `now` (a new bucket would
    /// be the same), so the map stays bounded by the objects posted about
    /// recently.
    fn forget_full(&mut self, now: Instant) {
        let l = self.limits;
        self.objects.retain(|_, bucket| {
            bucket.refill(l.object_per_second, l.object_burst, now);
            bucket.nanotokens < nano(l.object_burst)
        });
    }

    /// Objects with a bucket now.
    pub fn objects(&self) -> usize {
        self.objects.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(decisions: &[Decision]) -> usize {
        decisions.iter().filter(|d| **d == Decision::Post).count()
    }

    #[test]
    fn one_object_gets_its_burst_then_one_post_per_refill() {
        let t0 = Instant::now();
        let mut rate = EventRate::new(Limits::default(), t0);
        let first: Vec<_> = (0..10).map(|_| rate.admit("ns/pod/app", t0)).collect();
        assert_eq!(posted(&first), 3, "the object's burst");
        // The first drop is said at once, with its count; later ones wait.
        assert_eq!(first[3], Decision::Drop { say: Some(1) });
        assert_eq!(first[4], Decision::Drop { say: None });
        // 4.9 s later: not a whole token yet; at 5 s, one.
        let almost = t0 + Duration::from_millis(4_900);
        assert_eq!(
            rate.admit("ns/pod/app", almost),
            Decision::Drop { say: None }
        );
        assert_eq!(
            rate.admit("ns/pod/app", t0 + Duration::from_secs(5)),
            Decision::Post
        );
        // A minute after the first said drop, the ones since are said:
        // 6 at t0 (4..10), 1 at 4.9 s, and this one.
        assert_eq!(
            rate.admit("ns/pod/app", t0 + Duration::from_secs(60)),
            Decision::Post,
            "refilled to its burst by then"
        );
        let later = t0 + Duration::from_secs(60);
        rate.admit("ns/pod/app", later);
        rate.admit("ns/pod/app", later);
        assert_eq!(
            rate.admit("ns/pod/app", later),
            Decision::Drop { say: Some(8) }
        );
    }

    #[test]
    fn the_node_bucket_bounds_many_objects_to_its_burst_then_one_per_second() {
        let t0 = Instant::now();
        let mut rate = EventRate::new(Limits::default(), t0);
        // 100 pods each killed once, at the same instant: 10 posts.
        let at_once: Vec<_> = (0..100)
            .map(|i| rate.admit(&format!("ns/p{i}/c"), t0))
            .collect();
        assert_eq!(posted(&at_once), 10);
        // Then a kill in a new pod every 100 ms for 10 s: one post a second.
        let spread: Vec<_> = (1..=100)
            .map(|i| rate.admit(&format!("ns/q{i}/c"), t0 + Duration::from_millis(100 * i)))
            .collect();
        assert_eq!(posted(&spread), 10);
        // A refused object does not spend the node's token, nor the reverse.
        let t1 = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(rate.admit("ns/busy/c", t1), Decision::Post);
        }
        assert!(matches!(rate.admit("ns/busy/c", t1), Decision::Drop { .. }));
        assert_eq!(
            rate.admit("ns/other/c", t1),
            Decision::Post,
            "node tokens left"
        );
    }

    #[test]
    fn buckets_of_objects_quiet_long_enough_are_forgotten() {
        let t0 = Instant::now();
        let limits = Limits {
            node_per_second: 1e9,
            node_burst: 1e9,
            ..Limits::default()
        };
        let mut rate = EventRate::new(limits, t0);
        for i in 0..OBJECTS {
            rate.admit(&format!("ns/p{i}/c"), t0);
        }
        assert_eq!(rate.objects(), OBJECTS);
        // Full again after 5 s (one token back): all forgotten for the new one.
        rate.admit("ns/new/c", t0 + Duration::from_secs(5));
        assert_eq!(rate.objects(), 1);
    }
}
