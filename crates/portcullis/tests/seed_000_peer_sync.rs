//! Seed 000 (peer route sync): the naive route sync started one task per peer on every route
//! change, retried permanent errors, slept longer between retries than its own per-request
//! timeout, and blocked the lifecycle call until every peer was done, so one slow replica
//! added about a second to every sandbox operation.
//!
//! Pinned here, with `FanOut` over peers that each sit behind a `RetryLayer`:
//! - 3 replicas, one slow: the lifecycle call returns at the per-peer deadline, with the two
//!   healthy answers and the slow one reported as timed out;
//! - 200 peers (one hung, some failing transiently, some permanently), at most K in flight:
//!   peak in flight ≤ K (measured at the peers and reported), done at the per-peer deadline,
//!   only transient failures retried, permanent ones called exactly once;
//! - the retry sleeps fit inside the per-peer deadline: a layer whose worst-case backoff does
//!   not fit is refused when it is built, and a peer that always fails transiently stops
//!   retrying before the deadline with growing gaps between attempts.

use portcullis::fanout::{FanOut, Outcome, Policy};
use portcullis::retry::backoff::Jitter;
use portcullis::retry::classify::predicate;
use portcullis::retry::{
    Backoff, BoxError, Budget, BuildError, Retry, RetryError, RetryLayer, StopReason,
};
use portcullis_test::time::ms;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

/// What a peer does with a route-sync call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    /// Answers after this latency.
    Healthy(Duration),
    /// Fails with a transient error (503) the first `n` times, then answers.
    FlakyThenOk(usize),
    /// Always fails with a transient error.
    Unavailable,
    /// Fails with a permanent error (409 conflict).
    Conflict,
    /// Never answers.
    Hung,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncError {
    Unavailable,
    Conflict,
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for SyncError {}

/// What every peer of a test saw: calls in flight (and their peak), and each peer's call times.
#[derive(Default)]
struct Stats {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    calls: Mutex<Vec<Vec<Instant>>>,
}

struct InFlight(Arc<Stats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

impl Stats {
    fn new(peers: usize) -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::new(vec![Vec::new(); peers]),
            ..Self::default()
        })
    }

    fn calls(&self, peer: usize) -> Vec<Instant> {
        self.calls.lock().unwrap()[peer].clone()
    }
}

/// A simulated peer: a service counting itself in flight from call to drop.
fn peer(
    id: usize,
    behaviour: Peer,
    stats: Arc<Stats>,
) -> impl Service<&'static str, Response = usize, Error = SyncError, Future = impl Send> + Clone {
    service_fn(move |_route: &'static str| {
        let n = {
            let mut calls = stats.calls.lock().unwrap();
            calls[id].push(Instant::now());
            calls[id].len()
        };
        let now = stats.in_flight.fetch_add(1, SeqCst) + 1;
        stats.peak.fetch_max(now, SeqCst);
        let guard = InFlight(stats.clone());
        async move {
            let _guard = guard;
            match behaviour {
                Peer::Healthy(latency) => {
                    tokio::time::sleep(latency).await;
                    Ok(id)
                }
                Peer::FlakyThenOk(fails) if n <= fails => Err(SyncError::Unavailable),
                Peer::FlakyThenOk(_) => Ok(id),
                Peer::Unavailable => Err(SyncError::Unavailable),
                Peer::Conflict => Err(SyncError::Conflict),
                Peer::Hung => std::future::pending().await,
            }
        }
    })
}

const PER_PEER_DEADLINE: Duration = Duration::from_millis(200);

/// The retry policy of one peer's attempt sequence: transient errors only, a growing jittered
/// backoff whose worst case fits inside the per-peer deadline.
fn retry() -> Result<
    RetryLayer<impl portcullis::retry::Classify<&'static str, usize, SyncError> + Clone>,
    BuildError,
> {
    Retry::builder()
        .max_attempts(4)
        .backoff(
            Backoff::new(ms(10), 2.0, ms(50))
                .unwrap()
                .jitter(Jitter::Equal)
                .seed(7),
        )
        .budget(
            Budget::builder()
                .ratio(0.2)
                .min_per_sec(10)
                .build()
                .unwrap(),
        )
        .deadline(PER_PEER_DEADLINE)
        .build_layer(predicate(|res: Result<&usize, &SyncError>| {
            matches!(res, Err(SyncError::Unavailable))
        }))
}

fn retry_error(error: &BoxError) -> &RetryError {
    error
        .downcast_ref::<RetryError>()
        .unwrap_or_else(|| panic!("not a RetryError: {error}"))
}

#[tokio::test(start_paused = true)]
async fn three_replicas_one_slow_returns_at_the_per_peer_deadline() {
    let stats = Stats::new(3);
    let retry = retry().unwrap();
    let behaviours = [
        Peer::Healthy(ms(5)),
        Peer::Healthy(ms(1_000)),
        Peer::Healthy(ms(7)),
    ];
    let peers = behaviours
        .iter()
        .enumerate()
        .map(|(id, b)| (id, retry.layer(peer(id, *b, stats.clone()))));
    let config = FanOut::builder()
        .max_in_flight(16)
        .per_peer_timeout(PER_PEER_DEADLINE)
        .policy(Policy::All);
    let fanout = config.build(peers).unwrap();

    let started = Instant::now();
    let report = fanout.oneshot("/route").await.unwrap();
    // The naive sync waited for the slow replica: a full second.
    assert_eq!(started.elapsed(), PER_PEER_DEADLINE);
    assert_eq!(report.get(&0).and_then(Outcome::response), Some(&0));
    assert_eq!(report.get(&2).and_then(Outcome::response), Some(&2));
    let slow = report.get(&1).unwrap();
    assert!(
        slow.is_timed_out()
            || slow
                .error()
                .is_some_and(|e| retry_error(e).reason() == StopReason::Deadline),
        "{slow:?}"
    );
    // The slow call was cancelled, not left running in the background.
    assert_eq!(stats.in_flight.load(SeqCst), 0);
    assert_eq!(stats.peak.load(SeqCst), 3);
    for id in 0..3 {
        assert_eq!(stats.calls(id).len(), 1, "peer {id} called once");
    }
}

#[tokio::test(start_paused = true)]
async fn two_hundred_peers_stay_within_k_and_retry_only_transient_failures() {
    const PEERS: usize = 200;
    const K: usize = 16;
    let stats = Stats::new(PEERS);
    let retry = retry().unwrap();
    let behaviour = |id: usize| match id {
        0 => Peer::Hung,
        _ if id % 20 == 3 => Peer::FlakyThenOk(1),
        _ if id % 20 == 7 => Peer::Conflict,
        _ => Peer::Healthy(ms(1 + (id % 5) as u64)),
    };
    let peers = (0..PEERS).map(|id| (id, retry.layer(peer(id, behaviour(id), stats.clone()))));
    let config = FanOut::builder()
        .max_in_flight(K)
        .per_peer_timeout(PER_PEER_DEADLINE)
        .policy(Policy::All);
    let fanout = config.build(peers).unwrap();

    let started = Instant::now();
    let report = fanout.clone().oneshot("/route").await.unwrap();
    let elapsed = started.elapsed();

    // The hung peer holds one slot until its deadline; the other 199 share the rest.
    assert!(elapsed >= PER_PEER_DEADLINE, "{elapsed:?}");
    assert!(elapsed <= PER_PEER_DEADLINE + ms(5), "{elapsed:?}");
    assert!(report.peak_in_flight() <= K, "{}", report.peak_in_flight());
    assert!(stats.peak.load(SeqCst) <= K, "{}", stats.peak.load(SeqCst));
    assert_eq!(
        report.peak_in_flight(),
        K,
        "the limit is used, not just respected"
    );
    assert_eq!(stats.in_flight.load(SeqCst), 0);

    let mut retried = 0;
    for id in 0..PEERS {
        let calls = stats.calls(id).len();
        let outcome = report.get(&id).unwrap();
        match behaviour(id) {
            Peer::Hung => {
                assert_eq!(calls, 1);
                assert!(outcome.is_timed_out() || outcome.is_error(), "{outcome:?}");
            }
            Peer::FlakyThenOk(_) => {
                assert_eq!(calls, 2, "peer {id}: a transient failure is retried once");
                assert_eq!(outcome.response(), Some(&id));
                retried += 1;
            }
            Peer::Conflict => {
                assert_eq!(calls, 1, "peer {id}: a permanent failure is not retried");
                let error = retry_error(outcome.error().unwrap());
                assert_eq!(
                    (error.reason(), error.attempts()),
                    (StopReason::Permanent, 1)
                );
            }
            _ => {
                assert_eq!(calls, 1);
                assert_eq!(outcome.response(), Some(&id));
            }
        }
    }
    assert_eq!(retry.metrics().snapshot().retries, retried);
    assert_eq!(report.counts().total(), PEERS);
}

#[tokio::test(start_paused = true)]
async fn retry_sleeps_fit_inside_the_per_peer_deadline() {
    // The seed's configuration: a retry budget larger than the request timeout is refused
    // when the layer is built, not discovered in production.
    let too_long = Retry::builder()
        .max_attempts(4)
        .backoff(Backoff::new(ms(100), 2.0, ms(1_000)).unwrap())
        .deadline(PER_PEER_DEADLINE)
        .build_layer(predicate(|res: Result<&usize, &SyncError>| res.is_err()));
    assert!(
        matches!(too_long, Err(BuildError::BackoffExceedsDeadline { deadline, .. }) if deadline == PER_PEER_DEADLINE)
    );

    // The accepted policy's worst case fits, and a peer that never recovers is given up on
    // before the deadline, with growing gaps between attempts.
    let backoff = Backoff::new(ms(10), 2.0, ms(50)).unwrap();
    assert!(backoff.worst_case(3) < PER_PEER_DEADLINE);
    let stats = Stats::new(1);
    let retry = retry().unwrap();
    let svc = retry.layer(peer(0, Peer::Unavailable, stats.clone()));
    let started = Instant::now();
    let error = svc.oneshot("/route").await.unwrap_err();
    let error = retry_error(&error);
    assert_eq!(
        (error.reason(), error.attempts()),
        (StopReason::AttemptsExhausted, 4)
    );
    assert!(
        started.elapsed() < PER_PEER_DEADLINE,
        "{:?}",
        started.elapsed()
    );

    let calls = stats.calls(0);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps.len(), 3);
    assert!(gaps.iter().sum::<Duration>() <= backoff.worst_case(3));
    // Equal jitter keeps each delay within [ceiling / 2, ceiling], so with a factor of 2
    // the gaps never shrink: the backoff grows.
    assert!(gaps.windows(2).all(|w| w[0] <= w[1]), "{gaps:?}");
    assert!(gaps[0] >= ms(5) && gaps[2] <= ms(40), "{gaps:?}");
}
