//! Scenario tests: the whole `Retry` service in paused time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_retry::classify::{predicate, Predicate};
use portcullis_retry::{
    Backoff, BoxError, Budget, BuildError, Jitter, Retry, RetryError, StopReason,
};
use portcullis_test::time::ms;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, Service, ServiceExt};

type Res = Result<u16, &'static str>;

fn transient() -> Predicate<impl Fn(Result<&u16, &&'static str>) -> bool + Clone> {
    predicate(|res: Result<&u16, &&'static str>| matches!(res, Ok(503) | Err(&"reset")))
}

fn no_reserve(ratio: f64) -> Budget {
    Budget::builder()
        .ratio(ratio)
        .min_per_sec(0)
        .build()
        .unwrap()
}

/// The `RetryError` a give-up boxed into the service's `BoxError`.
fn retry_error(err: BoxError) -> Box<RetryError> {
    err.downcast::<RetryError>()
        .unwrap_or_else(|e| panic!("not a RetryError: {e:?}"))
}

/// A service answering from a script; records when each call arrived.
fn scripted(
    script: Vec<Res>,
    log: Arc<Mutex<Vec<Instant>>>,
) -> impl Service<u32, Response = u16, Error = &'static str, Future = impl Send> + Clone {
    let script = Arc::new(script);
    service_fn(move |_req: u32| {
        let mut log = log.lock().unwrap();
        let n = log.len();
        log.push(Instant::now());
        let res = script.get(n).copied().unwrap_or(Ok(200));
        async move { res }
    })
}

#[tokio::test(start_paused = true)]
async fn permanent_error_is_returned_at_once_with_the_inner_error() {
    let layer = Retry::builder().build_layer(transient()).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let svc = layer.layer(scripted(vec![Err("bad request")], log.clone()));
    let err = retry_error(svc.oneshot(1).await.unwrap_err());
    assert_eq!(err.reason(), StopReason::Permanent);
    assert_eq!(err.attempts(), 1);
    // `&str` errors are boxed as their message.
    assert_eq!(
        err.into_inner().map(|e| e.to_string()).as_deref(),
        Some("bad request")
    );
    assert_eq!(log.lock().unwrap().len(), 1);
    assert_eq!(layer.metrics().snapshot().permanent, 1);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_until_success() {
    let layer = Retry::builder()
        .budget(no_reserve(10.0))
        .build_layer(transient())
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let svc = layer.layer(scripted(vec![Err("reset"), Ok(503), Ok(200)], log.clone()));
    assert_eq!(svc.oneshot(1).await.unwrap(), 200);
    let s = layer.metrics().snapshot();
    assert_eq!(
        (s.requests, s.attempts, s.retries, s.succeeded),
        (1, 3, 2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn attempts_exhausted_returns_the_last_response() {
    let layer = Retry::builder()
        .budget(no_reserve(10.0))
        .max_attempts(2)
        .build_layer(transient())
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let svc = layer.layer(scripted(vec![Ok(503), Ok(503), Ok(200)], log.clone()));
    assert_eq!(svc.oneshot(1).await.unwrap(), 503);
    assert_eq!(log.lock().unwrap().len(), 2);
    assert_eq!(layer.metrics().snapshot().attempts_exhausted, 1);
}

#[tokio::test(start_paused = true)]
async fn budget_refusal_stops_and_keeps_the_inner_error() {
    let layer = Retry::builder()
        .budget(no_reserve(0.0))
        .build_layer(transient())
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let svc = layer.layer(scripted(vec![Err("reset")], log.clone()));
    let err = retry_error(svc.oneshot(1).await.unwrap_err());
    assert_eq!(err.reason(), StopReason::BudgetExhausted);
    assert_eq!(err.inner().map(|e| e.to_string()).as_deref(), Some("reset"));
    let s = layer.metrics().snapshot();
    assert_eq!(
        (s.budget_refusals, s.budget_exhausted, s.attempts),
        (1, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn config_with_backoff_total_not_below_deadline_is_refused() {
    let backoff = Backoff::new(ms(100), 2.0, ms(300)).unwrap();
    // 3 attempts: 100 + 200 = 300 ms of worst-case sleep.
    let build = |deadline| {
        Retry::builder()
            .backoff(backoff)
            .max_attempts(3)
            .deadline(deadline)
            .build_layer(transient())
    };
    assert_eq!(
        build(ms(300)).unwrap_err(),
        BuildError::BackoffExceedsDeadline {
            worst_case: ms(300),
            deadline: ms(300)
        }
    );
    assert!(build(ms(301)).is_ok());
    assert_eq!(
        Retry::builder()
            .max_attempts(0)
            .build_layer(transient())
            .unwrap_err(),
        BuildError::ZeroAttempts
    );
    // A backoff is checked where it is made, so a layer never holds a bad one.
    assert!(matches!(
        Backoff::new(ms(10), 0.5, ms(100)),
        Err(BuildError::Backoff(portcullis_retry::BackoffError::Factor(
            _
        )))
    ));
}

#[test]
fn building_with_u32_max_attempts_is_immediate_for_a_constant_or_zero_backoff() {
    // Each of these took minutes when the worst case was summed one retry at a time: the
    // ceilings of a constant backoff (factor 1) or a zero base never reach the cap.
    let build = |backoff: Backoff, deadline: Duration| {
        Retry::builder()
            .backoff(backoff)
            .max_attempts(u32::MAX)
            .deadline(deadline)
            .build_layer(transient())
    };
    let started = std::time::Instant::now();

    // Constant 1 ms under a 1 s cap: u32::MAX - 1 retries sleep at most 4 294 967.294 s.
    let constant = Backoff::new(ms(1), 1.0, ms(1000)).unwrap();
    let worst_case = ms(1) * (u32::MAX - 1);
    assert_eq!(
        build(constant, worst_case).unwrap_err(),
        BuildError::BackoffExceedsDeadline {
            worst_case,
            deadline: worst_case
        }
    );
    assert!(build(constant, worst_case + Duration::from_nanos(1)).is_ok());
    assert!(build(constant, Duration::MAX).is_ok());

    // A zero base sleeps nothing, whatever the factor: any deadline fits.
    for factor in [1.0, 2.0, f64::MAX] {
        let zero = Backoff::new(Duration::ZERO, factor, ms(1000)).unwrap();
        assert!(
            build(zero, Duration::from_nanos(1)).is_ok(),
            "factor {factor}"
        );
    }

    // A factor barely above 1 never reaches the cap either: answered in closed form.
    let creeping = Backoff::new(ms(1), 1.0 + 1e-12, ms(1000)).unwrap();
    let worst_case = creeping.worst_case(u32::MAX - 1);
    assert!(worst_case > ms(1) * (u32::MAX - 1));
    assert!(build(creeping, worst_case).is_err());
    assert!(build(creeping, worst_case + Duration::from_nanos(1)).is_ok());

    // Past u64::MAX ns: still compared rightly, saturating at Duration::MAX, never a panic.
    let long = Backoff::new(Duration::from_nanos(u64::MAX), 1.0, Duration::MAX).unwrap();
    let two_caps = Duration::from_nanos(u64::MAX) * 2;
    let long_build = |deadline| {
        Retry::builder()
            .backoff(long)
            .max_attempts(3)
            .deadline(deadline)
            .build_layer(transient())
    };
    assert!(long_build(two_caps).is_err());
    assert!(long_build(two_caps + Duration::from_nanos(1)).is_ok());
    let huge = Backoff::new(Duration::MAX, 1.0, Duration::MAX).unwrap();
    assert_eq!(
        build(huge, Duration::MAX).unwrap_err(),
        BuildError::BackoffExceedsDeadline {
            worst_case: Duration::MAX,
            deadline: Duration::MAX
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn per_attempt_timeout_triggers_a_retry() {
    let layer = Retry::builder()
        .budget(no_reserve(10.0))
        .backoff(
            Backoff::new(ms(10), 1.0, ms(10))
                .unwrap()
                .jitter(Jitter::None),
        )
        .attempt_timeout(ms(100))
        .build_layer(transient())
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let svc = layer.layer(service_fn({
        let calls = calls.clone();
        move |_req: u32| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                Ok::<u16, &'static str>(200)
            }
        }
    }));
    let start = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), 200);
    assert_eq!(start.elapsed(), ms(110));
    let s = layer.metrics().snapshot();
    assert_eq!((s.attempt_timeouts, s.retries, s.succeeded), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn deadline_cuts_a_hung_attempt() {
    let layer = Retry::builder()
        .budget(no_reserve(10.0))
        .backoff(Backoff::new(ms(10), 1.0, ms(10)).unwrap())
        .max_attempts(5)
        .attempt_timeout(ms(400))
        .deadline(ms(1000))
        .build_layer(transient())
        .unwrap();
    let svc = layer.layer(service_fn(|_req: u32| async {
        std::future::pending::<()>().await;
        Ok::<u16, &'static str>(200)
    }));
    let start = Instant::now();
    let err = retry_error(svc.oneshot(1).await.unwrap_err());
    assert_eq!(start.elapsed(), ms(1000), "stops at the deadline exactly");
    assert_eq!(err.reason(), StopReason::Deadline);
    assert!(err.is_timeout());
    assert_eq!(err.attempts(), 3);
}

#[tokio::test(start_paused = true)]
async fn backoff_sequences_differ_between_requests() {
    let layer = Retry::builder()
        .budget(no_reserve(10.0))
        .backoff(Backoff::new(ms(100), 2.0, ms(1000)).unwrap().seed(9))
        .max_attempts(4)
        .build_layer(transient())
        .unwrap();
    let logs: Vec<_> = (0..2).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let futures = logs.iter().map(|log| {
        layer
            .layer(scripted(vec![Ok(503); 4], log.clone()))
            .oneshot(1)
    });
    let results = futures_join(futures.collect()).await;
    assert!(results.iter().all(|r| matches!(r, Ok(503))));
    let gaps = |log: &Arc<Mutex<Vec<Instant>>>| {
        let log = log.lock().unwrap();
        log.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
    };
    let (a, b) = (gaps(&logs[0]), gaps(&logs[1]));
    assert_eq!(a.len(), 3);
    assert_ne!(
        a, b,
        "two requests failing together must not back off in lockstep"
    );
    for (n, gap) in a.iter().chain(&b).enumerate() {
        assert!(
            *gap <= Backoff::new(ms(100), 2.0, ms(1000))
                .unwrap()
                .ceiling((n % 3) as u32)
        );
    }
}

async fn futures_join<F: std::future::Future + Send + 'static>(futures: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn total_outage_costs_at_most_one_plus_ratio_calls_per_request() {
    let ratio = 0.2;
    let min_per_sec = 10;
    let layer = Retry::builder()
        .budget(
            Budget::builder()
                .ratio(ratio)
                .min_per_sec(min_per_sec)
                .build()
                .unwrap(),
        )
        .backoff(Backoff::new(ms(1), 2.0, ms(10)).unwrap().seed(1))
        .build_layer(transient())
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let mut svc = layer.layer(service_fn({
        let calls = calls.clone();
        move |_req: u32| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err::<u16, &'static str>("reset") }
        }
    }));
    let start = Instant::now();
    let requests = 10_000u32;
    for i in 0..requests {
        let _ = svc.ready().await.unwrap().call(i).await;
        if i % 100 == 0 {
            tokio::time::advance(ms(1)).await;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let calls = f64::from(calls.load(Ordering::Relaxed));
    let reserve = f64::from(min_per_sec) * (elapsed.ceil() + 1.0);
    assert!(
        calls <= (1.0 + ratio) * f64::from(requests) + reserve,
        "{calls} calls for {requests} requests over {elapsed}s"
    );
    // The budget is used, not merely unused: close to the ratio.
    assert!(calls >= (1.0 + ratio) * f64::from(requests) - 1.0);
    let s = layer.metrics().snapshot();
    assert_eq!(s.requests, u64::from(requests));
    assert_eq!(s.give_ups(), u64::from(requests));
}

#[tokio::test(start_paused = true)]
async fn clones_of_a_layer_share_budget_and_metrics() {
    let layer = Retry::builder()
        .budget(no_reserve(0.5))
        .build_layer(transient())
        .unwrap();
    let other = layer.clone();
    let log = Arc::new(Mutex::new(Vec::new()));
    // Two first attempts through different clones pay for one retry.
    assert_eq!(
        layer
            .layer(scripted(vec![Ok(200)], log.clone()))
            .oneshot(1)
            .await
            .unwrap(),
        200
    );
    let log2 = Arc::new(Mutex::new(Vec::new()));
    assert_eq!(
        other
            .layer(scripted(vec![Ok(503), Ok(200)], log2))
            .oneshot(1)
            .await
            .unwrap(),
        200
    );
    let s = layer.metrics().snapshot();
    assert_eq!((s.requests, s.retries, s.budget_balance), (2, 1, 0));
}

/// An inner error with a type of its own, to check it survives boxing.
#[derive(Debug, PartialEq)]
struct Refused(u32);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused #{}", self.0)
    }
}

impl std::error::Error for Refused {}

#[tokio::test(start_paused = true)]
async fn over_a_box_error_service_it_is_a_box_clone_service_and_the_reason_downcasts() {
    // The classifier sees the inner service's own error type, here `BoxError`.
    let layer = Retry::builder()
        .budget(no_reserve(10.0))
        .backoff(
            Backoff::new(ms(10), 1.0, ms(10))
                .unwrap()
                .jitter(Jitter::None),
        )
        .max_attempts(3)
        .build_layer(predicate(|res: Result<&u16, &BoxError>| {
            res.is_err_and(|e| e.downcast_ref::<Refused>().is_some())
        }))
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let inner = service_fn({
        let calls = calls.clone();
        move |req: u32| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match req {
                    0 => Err::<u16, BoxError>(Refused(n).into()),
                    1 if n == 0 => Err(Refused(n).into()),
                    _ => Ok(200),
                }
            }
        }
    });
    // Compile-time check: the retry service fits a `BoxCloneService<_, _, BoxError>`.
    let mut svc: BoxCloneService<u32, u16, BoxError> = BoxCloneService::new(layer.layer(inner));

    // Success after a retry, through the boxed service.
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 200);
    assert_eq!(calls.swap(0, Ordering::SeqCst), 2);

    // Give-up: the reason, the attempt count and the typed inner error are all reachable.
    let err = svc.clone().oneshot(0).await.unwrap_err();
    let retry = err.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(retry.reason(), StopReason::AttemptsExhausted);
    assert_eq!(retry.attempts(), 3);
    assert!(!retry.is_timeout());
    assert_eq!(
        retry.inner().and_then(|e| e.downcast_ref::<Refused>()),
        Some(&Refused(2)),
        "the last attempt's error, not dropped"
    );
    assert_eq!(
        std::error::Error::source(retry)
            .map(|e| e.to_string())
            .as_deref(),
        Some("refused #2")
    );
    // Display is this layer's failure only; the inner error is the source.
    assert_eq!(
        err.to_string(),
        "retry gave up after 3 attempts: attempts exhausted"
    );
    let s = layer.metrics().snapshot();
    assert_eq!((s.requests, s.retries, s.attempts_exhausted), (2, 3, 1));
}

/// Timers fire on millisecond ticks: a backoff that ends just before the deadline is noticed
/// at the deadline, and no retry may go out then. The caller gets the failure it had.
#[tokio::test(start_paused = true)]
async fn no_retry_goes_out_at_the_deadline() {
    let backoff = Backoff::new(
        Duration::from_micros(99_500),
        1.0,
        Duration::from_micros(99_500),
    )
    .unwrap()
    .jitter(Jitter::None);
    let layer = Retry::builder()
        .budget(no_reserve(1.0))
        .backoff(backoff)
        .max_attempts(2)
        .deadline(ms(100))
        .build_layer(transient())
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let svc = layer.layer(scripted(vec![Err("reset"), Ok(7)], log.clone()));
    let err = retry_error(svc.oneshot(1).await.unwrap_err());
    assert_eq!(log.lock().unwrap().len(), 1, "the retry was not sent");
    assert_eq!(err.reason(), StopReason::Deadline);
    assert!(!err.is_timeout(), "the last failure is the first attempt's");
    assert_eq!(err.inner().map(|e| e.to_string()).as_deref(), Some("reset"));
    let snapshot = layer.metrics().snapshot();
    assert_eq!((snapshot.attempts, snapshot.retries), (1, 0));
}

/// A retry that waits for the service's readiness until the deadline never goes out: the
/// caller gets the last attempt's error (not a made-up timeout), and no retry is counted. (A
/// response is let go while the service is not ready; see the next test.)
#[tokio::test(start_paused = true)]
async fn a_retry_stuck_waiting_for_readiness_returns_the_last_result() {
    #[derive(Clone)]
    struct ReadyOnce {
        calls: Arc<AtomicU32>,
    }
    impl Service<u32> for ReadyOnce {
        type Response = u16;
        type Error = &'static str;
        type Future = std::future::Ready<Res>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), &'static str>> {
            if self.calls.load(Ordering::SeqCst) == 0 {
                std::task::Poll::Ready(Ok(()))
            } else {
                std::task::Poll::Pending
            }
        }
        fn call(&mut self, _: u32) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err("reset"))
        }
    }
    let layer = Retry::builder()
        .budget(no_reserve(1.0))
        .backoff(
            Backoff::new(ms(10), 1.0, ms(10))
                .unwrap()
                .jitter(Jitter::None),
        )
        .deadline(ms(200))
        .build_layer(transient())
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let svc = layer.layer(ReadyOnce {
        calls: calls.clone(),
    });
    let started = Instant::now();
    let err = retry_error(svc.oneshot(1).await.unwrap_err());
    assert_eq!(started.elapsed(), ms(200));
    assert_eq!(err.reason(), StopReason::Deadline);
    assert!(
        !err.is_timeout(),
        "the last failure is the attempt's own error"
    );
    assert_eq!(err.inner().map(|e| e.to_string()).as_deref(), Some("reset"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let snapshot = layer.metrics().snapshot();
    assert_eq!(
        (snapshot.attempts, snapshot.retries, snapshot.deadline),
        (1, 0, 1)
    );
}

/// A service that is busy while a response it gave is alive (an HTTP/1 connection whose body
/// is unread). The retry layer must not hold the response it is retrying while it waits for
/// that service: the retry would wait on itself, forever with no deadline.
#[tokio::test(start_paused = true)]
async fn a_held_response_is_released_when_the_service_is_not_ready() {
    use std::sync::atomic::AtomicBool;
    use std::task::{Poll, Waker};

    #[derive(Clone, Default)]
    struct Connection {
        busy: Arc<AtomicBool>,
        waiting: Arc<Mutex<Option<Waker>>>,
        calls: Arc<AtomicU32>,
    }
    /// A response; the connection is busy until it is dropped.
    struct Held {
        status: u16,
        connection: Connection,
    }
    impl Drop for Held {
        fn drop(&mut self) {
            self.connection.busy.store(false, Ordering::SeqCst);
            if let Some(waker) = self.connection.waiting.lock().unwrap().take() {
                waker.wake();
            }
        }
    }
    impl Service<u32> for Connection {
        type Response = Held;
        type Error = &'static str;
        type Future = std::future::Ready<Result<Held, &'static str>>;
        fn poll_ready(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<Result<(), &'static str>> {
            if self.busy.load(Ordering::SeqCst) {
                *self.waiting.lock().unwrap() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }
        fn call(&mut self, _: u32) -> Self::Future {
            self.busy.store(true, Ordering::SeqCst);
            let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
            let status = if first { 503 } else { 200 };
            std::future::ready(Ok(Held {
                status,
                connection: self.clone(),
            }))
        }
    }

    let layer = Retry::builder()
        .budget(no_reserve(1.0))
        .backoff(
            Backoff::new(ms(10), 1.0, ms(10))
                .unwrap()
                .jitter(Jitter::None),
        )
        .build_layer(predicate(
            |res: Result<&Held, &&'static str>| matches!(res, Ok(held) if held.status == 503),
        ))
        .unwrap();
    let connection = Connection::default();
    let svc = layer.layer(connection.clone());
    let held = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(1))
        .await
        .expect("the retry went out instead of waiting on the response it held")
        .unwrap();
    assert_eq!(held.status, 200);
    assert_eq!(connection.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn polled_after_completion_is_a_typed_error() {
    let calls = Arc::new(AtomicU32::new(0));
    let layer = Retry::builder().build_layer(transient()).unwrap();
    let mut svc = layer.layer(service_fn({
        let calls = calls.clone();
        move |_: &'static str| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<u16, &'static str>(200) }
        }
    }));
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let mut call = tokio_test::task::spawn(svc.call("GET /"));
    assert_eq!(tokio_test::assert_ready!(call.poll()).unwrap(), 200);
    let error = tokio_test::assert_ready!(call.poll()).unwrap_err();
    assert!(
        error.is::<portcullis_pool::PolledAfterCompletion>(),
        "{error}"
    );
    // Neither the inner service nor the metrics saw a second request.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.metrics().snapshot().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn a_backoff_ending_within_a_timer_tick_of_the_deadline_is_not_slept() {
    // tokio's timer wakes on the first 1 ms tick at or after a sleep's end: a 3 ns backoff
    // under a 4 ns deadline would wake 1 ms later, long past the deadline. Found by the
    // builder properties (`max_attempts = 2, base = 3ns, factor = 1, deadline = 4ns`).
    for (backoff, deadline) in [
        (Duration::from_nanos(3), Duration::from_nanos(4)),
        (Duration::from_micros(99_500), ms(100)),
    ] {
        let layer = Retry::builder()
            .max_attempts(2)
            .backoff(
                Backoff::new(backoff, 1.0, backoff)
                    .unwrap()
                    .jitter(Jitter::None),
            )
            .deadline(deadline)
            .build_layer(transient())
            .unwrap();
        let svc = layer.layer(service_fn(|_: &'static str| async {
            Err::<u16, &'static str>("reset")
        }));
        let started = Instant::now();
        let error = svc.oneshot("GET /").await.unwrap_err();
        let error = error.downcast_ref::<RetryError>().unwrap();
        assert_eq!(error.reason(), StopReason::Deadline, "{backoff:?}");
        assert_eq!(error.attempts(), 1, "{backoff:?}");
        assert!(started.elapsed() <= deadline, "{:?}", started.elapsed());
    }
}
