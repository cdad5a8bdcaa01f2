//! `Hedge` in paused time, over a scripted service: each copy of a request takes the time and
//! gives the result its turn in the script says, and a copy dropped before it ends is counted.

use portcullis_retry::classify::{hedge_when, predicate, HedgeWhen, Predicate};
use portcullis_retry::hedge::{Hedge, HedgeDelay};
use portcullis_retry::{BoxError, Budget};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A request; `hedge` says whether the classifier lets it be hedged.
#[derive(Clone, Debug)]
struct Req {
    hedge: bool,
}

const HEDGE: Req = Req { hedge: true };

/// One copy's turn: how long it takes, and its answer (the copy's number, or a failure).
type Turn = (u64, Result<(), &'static str>);

#[derive(Clone, Default)]
struct Scripted {
    script: Arc<Mutex<VecDeque<Turn>>>,
    calls: Arc<AtomicU32>,
    dropped: Arc<AtomicU32>,
}

impl Scripted {
    fn new(turns: &[Turn]) -> Self {
        let scripted = Self::default();
        scripted.push(turns);
        scripted
    }

    fn push(&self, turns: &[Turn]) {
        self.script.lock().unwrap().extend(turns.iter().copied());
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    fn dropped(&self) -> u32 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Counts a copy dropped before it answered.
struct Unanswered(Option<Arc<AtomicU32>>);

impl Unanswered {
    fn answered(&mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(dropped) = self.0.take() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Service<Req> for Scripted {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Req) -> Self::Future {
        let copy = self.calls.fetch_add(1, Ordering::Relaxed);
        let (latency, result) = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((10, Ok(())));
        let mut unanswered = Unanswered(Some(self.dropped.clone()));
        Box::pin(async move {
            tokio::time::sleep(ms(latency)).await;
            unanswered.answered();
            result.map(|()| copy).map_err(BoxError::from)
        })
    }
}

type Classifier = HedgeWhen<Predicate<fn(Result<&u32, &BoxError>) -> bool>, fn(&Req) -> bool>;

fn failed(res: Result<&u32, &BoxError>) -> bool {
    res.is_err()
}

fn marked(req: &Req) -> bool {
    req.hedge
}

fn classifier() -> Classifier {
    hedge_when(
        predicate(failed as fn(Result<&u32, &BoxError>) -> bool),
        marked as fn(&Req) -> bool,
    )
}

fn hedge_over(
    backend: &Scripted,
    delay: HedgeDelay,
    budget: Option<Budget>,
) -> Hedge<Scripted, Classifier> {
    let mut builder = Hedge::builder().delay(delay);
    if let Some(budget) = budget {
        builder = builder.budget(budget);
    }
    builder.build(backend.clone(), classifier()).unwrap()
}

/// Sends `request`; its result and how long it took.
async fn send(svc: &Hedge<Scripted, Classifier>, request: Req) -> (Result<u32, String>, Duration) {
    let started = Instant::now();
    let result = svc.clone().oneshot(request).await;
    (result.map_err(|e| e.to_string()), started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn the_first_success_wins_and_the_other_copy_is_dropped_at_once() {
    let backend = Scripted::new(&[(100, Ok(())), (10, Ok(()))]);
    let svc = hedge_over(&backend, HedgeDelay::Fixed(ms(20)), None);
    let (result, took) = send(&svc, HEDGE).await;
    assert_eq!(
        (result, took),
        (Ok(1), ms(30)),
        "the hedge, sent at 20 ms, answered"
    );
    assert_eq!(
        backend.dropped(),
        1,
        "the first copy was dropped when the hedge won"
    );
    let s = svc.metrics().snapshot();
    assert_eq!((s.hedgeable, s.hedges, s.won, s.cancelled), (1, 1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_failure_waits_for_the_copy_still_in_flight() {
    // The first copy fails at 30 ms while the hedge (sent at 20 ms) is in flight: the request
    // is the hedge's success at 40 ms.
    let backend = Scripted::new(&[(30, Err("reset")), (20, Ok(()))]);
    let svc = hedge_over(&backend, HedgeDelay::Fixed(ms(20)), None);
    assert_eq!(send(&svc, HEDGE).await, (Ok(1), ms(40)));
    assert_eq!(backend.dropped(), 0);

    // A failure with nothing else in flight (before the delay) is the answer at once.
    backend.push(&[(5, Err("reset"))]);
    let (result, took) = send(&svc, HEDGE).await;
    assert!(
        result.is_err() && took == ms(5),
        "{result:?} after {took:?}"
    );
    assert_eq!(backend.calls(), 3, "no hedge for the early failure");

    // Both copies fail: the answer is a failure, once the last one is in.
    backend.push(&[(30, Err("first")), (50, Err("second"))]);
    let (result, took) = send(&svc, HEDGE).await;
    assert_eq!(took, ms(70));
    assert!(result.unwrap_err().contains("second"));
}

#[tokio::test(start_paused = true)]
async fn a_request_the_classifier_does_not_let_hedge_is_never_hedged() {
    let backend = Scripted::new(&[(100, Ok(()))]);
    let svc = hedge_over(&backend, HedgeDelay::Fixed(ms(20)), None);
    assert_eq!(send(&svc, Req { hedge: false }).await, (Ok(0), ms(100)));
    assert_eq!(backend.calls(), 1);
    let s = svc.metrics().snapshot();
    assert_eq!((s.requests, s.hedgeable, s.hedges), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_budget_at_zero_sends_no_hedge() {
    let empty = Budget::builder().ratio(0.0).min_per_sec(0).build().unwrap();
    let backend = Scripted::new(&[(100, Ok(()))]);
    let svc = hedge_over(&backend, HedgeDelay::Fixed(ms(20)), Some(empty));
    assert_eq!(
        send(&svc, HEDGE).await,
        (Ok(0), ms(100)),
        "the first copy answered"
    );
    assert_eq!(backend.calls(), 1);
    let s = svc.metrics().snapshot();
    assert_eq!((s.hedges, s.budget_refusals), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn the_percentile_delay_follows_the_latencies() {
    let delay = HedgeDelay::Percentile {
        percentile: 90.0,
        window: 20,
        min_samples: 10,
        floor: ms(1),
    };
    let backend = Scripted::default();
    let svc = hedge_over(&backend, delay, None);
    // Until the minimum sample, no hedge, whatever the latency.
    backend.push(&[(10, Ok(())); 9]);
    for _ in 0..9 {
        assert!(send(&svc, HEDGE).await.0.is_ok());
    }
    assert_eq!(svc.metrics().snapshot().delay, None);
    backend.push(&[(10, Ok(())); 11]);
    for _ in 0..11 {
        assert!(send(&svc, HEDGE).await.0.is_ok());
    }
    assert_eq!(svc.metrics().snapshot().delay, Some(ms(10)));
    assert_eq!(svc.metrics().snapshot().hedges, 0);

    // Every copy now takes 50 ms: the first ones are hedged at 10 ms (the hedges take as
    // long), and within a window the delay is 50 ms and hedging stops.
    for _ in 0..30 {
        backend.push(&[(50, Ok(())), (50, Ok(()))]);
        assert!(send(&svc, HEDGE).await.0.is_ok());
    }
    let s = svc.metrics().snapshot();
    assert_eq!(s.delay, Some(ms(50)));
    let hedges = s.hedges;
    assert!(hedges > 0, "the shift was hedged at first");
    for _ in 0..10 {
        backend.push(&[(50, Ok(()))]);
        assert!(send(&svc, HEDGE).await.0.is_ok());
    }
    assert_eq!(
        svc.metrics().snapshot().hedges,
        hedges,
        "no hedge at the new delay"
    );
}

#[tokio::test]
async fn settings_out_of_range_are_refused_when_built() {
    for attempts in [0, 9] {
        let built = Hedge::builder()
            .max_attempts(attempts)
            .build_layer(classifier());
        assert!(built.is_err(), "{attempts} attempts");
    }
    assert!(Hedge::builder()
        .delay(HedgeDelay::percentile(100.0))
        .build_layer(classifier())
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn a_first_copy_cut_short_counts_at_the_delay_so_the_delay_does_not_climb() {
    let delay = HedgeDelay::Percentile {
        percentile: 50.0,
        window: 10,
        min_samples: 10,
        floor: ms(1),
    };
    let backend = Scripted::default();
    let ample = Budget::builder()
        .ratio(1.0)
        .min_per_sec(1_000)
        .build()
        .unwrap();
    let svc = hedge_over(&backend, delay, Some(ample));
    backend.push(&[(10, Ok(())); 10]);
    for _ in 0..10 {
        assert!(send(&svc, HEDGE).await.0.is_ok());
    }
    assert_eq!(svc.metrics().snapshot().delay, Some(ms(10)));
    // Every first copy now takes 100 ms and its hedge 5 ms: each request is the hedge's at
    // 15 ms. The first copies are known only to take over 10 ms: they count at 10 ms, and the
    // delay stays (counted at the 15 ms they had run, it would climb to 15 ms, and on).
    for _ in 0..20 {
        backend.push(&[(100, Ok(())), (5, Ok(()))]);
        assert_eq!(send(&svc, HEDGE).await.1, ms(15));
    }
    assert_eq!(svc.metrics().snapshot().delay, Some(ms(10)));
}
