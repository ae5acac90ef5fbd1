//! Connecting the naming sources (the container runtime, the API server)
//! off the start-up path, and again after a failure: a state machine,
//! connecting then ready, that an event waits on at most [`CONNECT_WAIT`]
//! once per attempt before it goes out unnamed. Once ready, it hands out
//! the pods the kubelet evicts.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use anyhow::Result;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    kube::{
        events::EventPoster,
        names::{self, Namer, SourceOptions},
        pod::Eviction,
    },
    sink::metrics::Metrics,
};

/// How long an event waits for naming sources that are still connecting
/// before it goes out unnamed: a CRI connect and one call, each bounded by
/// [`crate::enrich::cri::CALL_TIMEOUT`].
pub const CONNECT_WAIT: Duration = Duration::from_secs(1);

/// How long after a failed connection the naming sources are tried again.
pub const CONNECT_RETRY: Duration = Duration::from_secs(5);

/// What a made connection gives.
pub trait Connection: Send + 'static {
    /// Which sources name pods, for the log.
    fn describe(&self) -> String;
    /// The pods the kubelet evicts, when an API server is in use.
    fn evictions(&mut self) -> Option<&mut mpsc::Receiver<Eviction>>;
}

/// The naming sources, connected: the namer, the Kubernetes Event poster
/// (with an API server and `--events`), and the evictions.
pub struct Names {
    /// Names the pod and container of a kill.
    pub namer: Namer,
    /// Posts a Kubernetes Event per kill.
    pub poster: Option<EventPoster>,
    evictions: Option<mpsc::Receiver<Eviction>>,
}

impl Connection for Names {
    fn describe(&self) -> String {
        self.namer.describe()
    }
    fn evictions(&mut self) -> Option<&mut mpsc::Receiver<Eviction>> {
        self.evictions.as_mut()
    }
}

/// What connecting the naming sources needs, kept to connect again.
#[derive(Clone)]
pub struct NamingSources {
    /// Where the runtime and the API server are.
    pub sources: SourceOptions,
    /// Post Kubernetes Events when an API server is configured.
    pub events: bool,
    /// This node's name (its pods are watched).
    pub node: String,
    /// Counts failures.
    pub metrics: Arc<Metrics>,
}

/// Connects the sources once: the API client (if any), the Event poster,
/// the namer and its evictions. Errors: an explicit `--cri-socket` that
/// does not work.
pub async fn connect_naming(sources: NamingSources) -> Result<Names> {
    let NamingSources {
        sources,
        events,
        node,
        metrics,
    } = sources;
    let api = names::api_client(&sources).await;
    let poster = api
        .clone()
        .filter(|_| events)
        .map(|client| EventPoster::start(client, &node, metrics.clone()));
    let namer = Namer::connect(&sources, api, &node, metrics).await?;
    let evictions = namer.take_evictions();
    Ok(Names {
        namer,
        poster,
        evictions,
    })
}

/// Makes one connection attempt; called afresh at each retry.
pub type Connect<C> =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<C>> + Send>> + Send + Sync>;

/// How long an event waits ([`CONNECT_WAIT`]) and a failure waits before
/// the next attempt ([`CONNECT_RETRY`]).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The longest an event waits for a connection under way.
    pub wait: Duration,
    /// The pause after a failed attempt.
    pub retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            wait: CONNECT_WAIT,
            retry: CONNECT_RETRY,
        }
    }
}

/// Pod and container naming: connecting at first (again after a failure),
/// then ready.
pub struct Naming<C: Connection = Names> {
    connect: Connect<C>,
    timing: Timing,
    metrics: Arc<Metrics>,
    state: State<C>,
    /// Said once that events went out unnamed while connecting.
    warned: bool,
}

enum State<C> {
    Connecting {
        task: JoinHandle<Result<C>>,
        /// An event already waited [`Timing::wait`] in vain for this
        /// attempt: the next ones go out unnamed without waiting.
        waited_out: bool,
    },
    Ready(Box<C>),
}

/// What [`Naming::next`] saw.
pub enum Update<C> {
    /// An attempt ended: give it to [`Naming::finish`].
    Connected(Result<C>),
    /// The kubelet evicted a pod.
    Eviction(Eviction),
}

impl Naming<Names> {
    /// Starts connecting the naming sources in a task of its own (after
    /// the ready line).
    pub fn start(sources: NamingSources) -> Self {
        let metrics = sources.metrics.clone();
        Self::new(
            Arc::new(move || Box::pin(connect_naming(sources.clone()))),
            metrics,
            Timing::default(),
        )
    }
}

impl<C: Connection> Naming<C> {
    /// Starts a first attempt of `connect` now.
    pub fn new(connect: Connect<C>, metrics: Arc<Metrics>, timing: Timing) -> Self {
        let task = spawn(&connect, Duration::ZERO);
        Self {
            connect,
            timing,
            metrics,
            state: State::Connecting {
                task,
                waited_out: false,
            },
            warned: false,
        }
    }

    /// Whether an attempt is under way.
    pub fn is_connecting(&self) -> bool {
        matches!(self.state, State::Connecting { .. })
    }

    /// The end of the attempt under way, or the next eviction once ready
    /// (never, without evictions). Cancel safe.
    pub async fn next(&mut self) -> Update<C> {
        match &mut self.state {
            State::Connecting { task, .. } => Update::Connected(joined(task.await)),
            State::Ready(connection) => match connection.evictions() {
                Some(evictions) => match evictions.recv().await {
                    Some(eviction) => Update::Eviction(eviction),
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            },
        }
    }

    /// Keeps what connected and says which sources name pods. A failure
    /// (a runtime that does not answer, a `--cri-socket` that does not
    /// work) is said and counted, and the sources are tried again after
    /// [`Timing::retry`]: the agent keeps reporting, unnamed meanwhile.
    pub fn finish(&mut self, connected: Result<C>) {
        match connected {
            Ok(connection) => {
                tracing::info!("{}", connection.describe());
                self.state = State::Ready(Box::new(connection));
            }
            Err(err) => {
                tracing::error!(
                    "cannot connect the naming sources ({err:#}); trying again in {} s, \
                     events go out unnamed meanwhile",
                    self.timing.retry.as_secs()
                );
                self.metrics.add_enrichment_failure();
                self.state = State::Connecting {
                    task: spawn(&self.connect, self.timing.retry),
                    waited_out: true,
                };
            }
        }
    }

    /// The connection, after waiting up to [`Timing::wait`] for it if it is
    /// still being made (not at all once an event waited in vain for this
    /// attempt); `None` when it is not made by then: the event goes out
    /// unnamed, counted as an enrichment failure (said once).
    pub async fn ready(&mut self) -> Option<&mut C> {
        if let State::Connecting { task, waited_out } = &mut self.state {
            let connected = match *waited_out {
                true => None,
                false => tokio::time::timeout(self.timing.wait, &mut *task)
                    .await
                    .ok(),
            };
            match connected {
                Some(connected) => self.finish(joined(connected)),
                None => {
                    *waited_out = true;
                    self.unnamed();
                    return None;
                }
            }
        }
        if self.is_connecting() {
            self.unnamed();
            return None;
        }
        match &mut self.state {
            State::Ready(connection) => Some(connection),
            State::Connecting { .. } => None,
        }
    }

    /// An event goes out unnamed because the naming sources are still
    /// connecting: counted as an enrichment failure, said once.
    fn unnamed(&mut self) {
        self.metrics.add_enrichment_failure();
        if !std::mem::replace(&mut self.warned, true) {
            tracing::warn!(
                "the naming sources (API server, container runtime) are still connecting; \
                 events go out unnamed until they answer"
            );
        }
    }
}

/// Starts an attempt of `connect` after `after`.
fn spawn<C: Connection>(connect: &Connect<C>, after: Duration) -> JoinHandle<Result<C>> {
    let attempt = connect();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        attempt.await
    })
}

/// An attempt's task as it ended: a panic is a failed attempt.
fn joined<C>(joined: Result<Result<C>, tokio::task::JoinError>) -> Result<C> {
    joined.map_err(|e| anyhow::anyhow!("naming sources failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A connection made of nothing but an eviction channel.
    struct Fake(Option<mpsc::Receiver<Eviction>>);

    impl Connection for Fake {
        fn describe(&self) -> String {
            "fake".into()
        }
        fn evictions(&mut self) -> Option<&mut mpsc::Receiver<Eviction>> {
            self.0.as_mut()
        }
    }

    /// A naming whose attempt `n` (from 0) takes `delay(n)` and fails when
    /// `fails(n)`; the count of attempts made so far.
    fn naming(
        delay: fn(usize) -> Duration,
        fails: fn(usize) -> bool,
        timing: Timing,
    ) -> (Naming<Fake>, Arc<AtomicUsize>, Arc<Metrics>) {
        let attempts = Arc::new(AtomicUsize::new(0));
        let metrics = Arc::new(Metrics::new(Duration::from_secs(60)));
        let counted = attempts.clone();
        let connect: Connect<Fake> = Arc::new(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(delay(n)).await;
                match fails(n) {
                    true => Err(anyhow::anyhow!("attempt {n} fails")),
                    false => Ok(Fake(None)),
                }
            })
        });
        (
            Naming::new(connect, metrics.clone(), timing),
            attempts,
            metrics,
        )
    }

    fn failures(metrics: &Metrics) -> String {
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("oom_probe_enrichment_failures_total "))
            .unwrap_or_default()
            .to_string()
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn an_event_waits_for_the_attempt_under_way() {
        let timing = Timing {
            wait: LONG,
            retry: LONG,
        };
        let (mut naming, attempts, metrics) =
            naming(|_| Duration::from_millis(20), |_| false, timing);
        assert!(naming.is_connecting());
        assert!(naming.ready().await.is_some());
        assert!(!naming.is_connecting());
        assert!(naming.ready().await.is_some());
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert_eq!(failures(&metrics), "oom_probe_enrichment_failures_total 0");
    }

    #[tokio::test]
    async fn a_failed_attempt_is_said_counted_and_tried_again_without_making_events_wait() {
        let timing = Timing {
            wait: LONG,
            retry: Duration::from_millis(10),
        };
        let (mut naming, attempts, metrics) = naming(|_| Duration::ZERO, |n| n == 0, timing);
        // The first attempt fails while the event waits: unnamed.
        assert!(naming.ready().await.is_none());
        assert!(naming.is_connecting(), "tried again");
        // The next event does not wait for the new attempt.
        assert!(naming.ready().await.is_none());
        assert_eq!(failures(&metrics), "oom_probe_enrichment_failures_total 3");
        // The loop sees the new attempt end.
        match naming.next().await {
            Update::Connected(connected) => naming.finish(connected),
            Update::Eviction(_) => panic!("no evictions while connecting"),
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert!(naming.ready().await.is_some());
    }

    #[tokio::test]
    async fn a_slow_attempt_is_waited_for_once() {
        let timing = Timing {
            wait: Duration::from_millis(10),
            retry: LONG,
        };
        let (mut naming, _, metrics) = naming(|_| Duration::from_millis(50), |_| false, timing);
        assert!(naming.ready().await.is_none(), "waited in vain");
        // The attempt ends meanwhile; the next event does not look at it,
        // the loop does.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(naming.ready().await.is_none(), "not waited for again");
        assert!(naming.is_connecting());
        assert_eq!(failures(&metrics), "oom_probe_enrichment_failures_total 2");
        match naming.next().await {
            Update::Connected(connected) => naming.finish(connected),
            Update::Eviction(_) => panic!("no evictions while connecting"),
        }
        assert!(naming.ready().await.is_some());
    }

    #[tokio::test]
    async fn evictions_come_from_the_connection_once_ready() {
        let metrics = Arc::new(Metrics::new(Duration::from_secs(60)));
        let (send, receive) = mpsc::channel(1);
        let receive = std::sync::Mutex::new(Some(receive));
        let connect: Connect<Fake> = Arc::new(move || {
            let evictions = receive.lock().unwrap().take();
            Box::pin(async move { Ok(Fake(evictions)) })
        });
        let mut naming = Naming::new(connect, metrics, Timing::default());
        match naming.next().await {
            Update::Connected(connected) => naming.finish(connected),
            Update::Eviction(_) => panic!("not connected yet"),
        }
        let eviction = Eviction {
            namespace: "default".into(),
            pod: "web-1".into(),
            pod_uid: "uid".into(),
            message: None,
            time: std::time::SystemTime::UNIX_EPOCH,
        };
        send.send(eviction.clone()).await.unwrap();
        match naming.next().await {
            Update::Eviction(got) => assert_eq!(got, eviction),
            Update::Connected(_) => panic!("already connected"),
        }
    }
}
