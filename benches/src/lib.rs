//! What the benchmarks in `benches/` share: the trivial endpoints every comparison runs over,
//! the baselines they are measured against (a fan-out with `buffer_unordered`, tower's retry
//! configured like portcullis's), and portcullis's retry as they run it.
#![forbid(unsafe_code)]

use futures_util::{stream, FutureExt, StreamExt};
use portcullis_retry::classify::{predicate, Predicate};
use portcullis_retry::{BudgetBuilder, RetryBuilder};
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::retry::{budget::Budget as _, budget::TpsBudget, Policy};
use tower::{Layer, ServiceExt};
use tower_service::Service;

/// An endpoint that is always ready and answers each request with itself at once, so that a
/// benchmark measures the middleware in front of it and nothing else.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request))
    }
}

/// An endpoint that answers each request with itself after waiting once: its response future
/// is pending at its first poll (it wakes itself at once) and ready at the next, as a response
/// that waits for I/O is. A load that times round trips has one to time here; [`Echo`]'s
/// responses are ready at their first poll.
#[derive(Clone, Copy, Debug, Default)]
pub struct WaitOnce;

impl Service<u64> for WaitOnce {
    type Response = u64;
    type Error = Infallible;
    type Future = Waiting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        Waiting {
            request,
            waited: false,
        }
    }
}

/// The response future of [`WaitOnce`].
#[derive(Debug)]
pub struct Waiting {
    request: u64,
    waited: bool,
}

impl std::future::Future for Waiting {
    type Output = Result<u64, Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.waited {
            return Poll::Ready(Ok(self.request));
        }
        self.waited = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// tower's `Retry` policy with its `TpsBudget`, configured like portcullis's retry: every first
/// attempt deposits, every retry withdraws, at most `max_attempts` attempts, no backoff. tower
/// clones the policy for each request, so the attempt count is per request.
#[derive(Clone, Debug)]
pub struct TowerBudgetPolicy {
    budget: Arc<TpsBudget>,
    max_attempts: u32,
    attempts: u32,
}

impl TowerBudgetPolicy {
    /// A policy over `budget`, allowing `max_attempts` attempts per request.
    pub fn new(budget: TpsBudget, max_attempts: u32) -> Self {
        Self {
            budget: Arc::new(budget),
            max_attempts,
            attempts: 0,
        }
    }

    /// The policy set as portcullis's `Retry` is by default: its attempts
    /// (`RetryBuilder::DEFAULT_MAX_ATTEMPTS`, 3) and a `TpsBudget` of its budget's defaults
    /// (`BudgetBuilder::DEFAULT_TTL`, `DEFAULT_MIN_PER_SEC`, `DEFAULT_RATIO`: 10 s, 10 retries
    /// a second, 20 %).
    pub fn like_portcullis() -> Self {
        let budget = TpsBudget::new(
            BudgetBuilder::DEFAULT_TTL,
            BudgetBuilder::DEFAULT_MIN_PER_SEC,
            BudgetBuilder::DEFAULT_RATIO as f32,
        );
        Self::new(budget, RetryBuilder::DEFAULT_MAX_ATTEMPTS)
    }
}

/// tower's `Retry` around `inner` with [`TowerBudgetPolicy::like_portcullis`]: the retry
/// stack [`our_retry`] is measured against.
pub fn tower_retry<S>(inner: S) -> tower::retry::Retry<TowerBudgetPolicy, S> {
    tower::retry::Retry::new(TowerBudgetPolicy::like_portcullis(), inner)
}

/// portcullis's `Retry` with its defaults (3 attempts, the default budget) around `inner`,
/// retrying every error: the retry stack every comparison measures.
// The classifier's closure type is named by what it does, so that it stays inlined.
#[allow(clippy::type_complexity)]
pub fn our_retry<S>(
    inner: S,
) -> portcullis_retry::Retry<
    S,
    Predicate<impl Fn(Result<&u64, &Infallible>) -> bool + Copy + Send + Sync + 'static>,
> {
    portcullis_retry::Retry::builder()
        .build_layer(predicate(|r: Result<&u64, &Infallible>| r.is_err()))
        .expect("the defaults are valid")
        .layer(inner)
}

/// The fan-out every `FanOut` comparison is measured against: `request` to a clone of every
/// peer, at most `limit` calls at a time, through `futures`' `buffer_unordered`, in the
/// calling task. Returns each peer's key and result, in the order they ended.
pub async fn buffer_unordered<S>(
    peers: &[(usize, S)],
    request: u64,
    limit: usize,
) -> Vec<(usize, Result<S::Response, S::Error>)>
where
    S: Service<u64> + Clone,
{
    stream::iter(peers.iter())
        .map(|(key, peer)| {
            peer.clone()
                .oneshot(request)
                .map(move |result| (*key, result))
        })
        .buffer_unordered(limit)
        .collect()
        .await
}

impl<Res, E> Policy<u64, Res, E> for TowerBudgetPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<Res, E>) -> Option<Ready<()>> {
        self.attempts += 1;
        if self.attempts == 1 {
            self.budget.deposit();
        }
        match result {
            Err(_) if self.attempts < self.max_attempts && self.budget.withdraw() => {
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, request: &u64) -> Option<u64> {
        Some(*request)
    }
}
