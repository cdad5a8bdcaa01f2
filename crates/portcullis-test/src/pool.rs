//! A mock [`Pool`] that a test steers through a [`PoolControl`].
//!
//! The test decides whether the pool is ready, whether `poll_pool` has pending endpoints left
//! to drive, and when either fails (or panics, to stand in for a buggy pool). The mock records
//! every discovery update it receives and keeps the resulting endpoint set; every request it
//! is called with is handed to the test, which answers it with a [`Responder`] (or never does,
//! to stand in for a hung endpoint).
//!
//! ```
//! use portcullis_pool::{Pool, Update};
//! use portcullis_test::pool;
//!
//! let (mut mock, control) = pool::pair::<&str, u16, &str, &str>();
//! mock.update_pool(Update::Add(vec![("a", 1), ("b", 2)]));
//! assert_eq!(control.endpoints(), vec![("a", 1), ("b", 2)]);
//! ```

use crate::{BoxError, MockError};
use portcullis_pool::{EndpointCounts, EndpointSet, Pool, Update, UpdateKind};
use std::{
    collections::{HashMap, VecDeque},
    fmt,
    future::Future,
    hash::Hash,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};
use tokio::sync::{oneshot, Notify};
use tower_service::Service;

/// A mock pool and the control for it.
#[allow(clippy::type_complexity)] // a pair of two named types reads more plainly than an alias
pub fn pair<K, T, Req, Rsp>() -> (MockPool<K, T, Req, Rsp>, PoolControl<K, T, Req, Rsp>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            ready: Readiness::Pending,
            pool_pending: false,
            pool_failure: None,
            panic_on_call: false,
            ready_waker: None,
            pool_waker: None,
            endpoints: EndpointList(Vec::new()),
            history: Some(Vec::new()),
            update_counts: HashMap::new(),
            requests: VecDeque::new(),
            poll_ready_calls: 0,
            poll_pool_calls: 0,
            calls: 0,
            dropped: false,
        }),
        notify: Notify::new(),
    });
    (
        MockPool {
            shared: shared.clone(),
        },
        PoolControl { shared },
    )
}

/// A [`Pool`] whose behaviour a [`PoolControl`] decides. Not ready until told.
pub struct MockPool<K, T, Req, Rsp> {
    shared: Arc<Shared<K, T, Req, Rsp>>,
}

/// Steers a [`MockPool`] and observes what it was asked to do. Cloneable.
pub struct PoolControl<K, T, Req, Rsp> {
    shared: Arc<Shared<K, T, Req, Rsp>>,
}

/// Answers one request the mock pool was called with. Dropping it unanswered fails the
/// request; keeping it unanswered keeps the request hanging.
pub struct Responder<Rsp> {
    tx: oneshot::Sender<Result<Rsp, BoxError>>,
}

/// The response future of a [`MockPool`].
pub struct MockResponse<Rsp> {
    rx: oneshot::Receiver<Result<Rsp, BoxError>>,
}

struct Shared<K, T, Req, Rsp> {
    state: Mutex<State<K, T, Req, Rsp>>,
    notify: Notify,
}

enum Readiness {
    Ready,
    Pending,
    Fail(String),
    Panic,
}

struct State<K, T, Req, Rsp> {
    ready: Readiness,
    pool_pending: bool,
    pool_failure: Option<String>,
    panic_on_call: bool,
    ready_waker: Option<Waker>,
    pool_waker: Option<Waker>,
    endpoints: EndpointList<K, T>,
    history: Option<Vec<Update<K, T>>>,
    update_counts: HashMap<UpdateKind, u64>,
    requests: VecDeque<(Req, Responder<Rsp>)>,
    poll_ready_calls: u64,
    poll_pool_calls: u64,
    calls: u64,
    dropped: bool,
}

/// The endpoint set the updates so far add up to, in the order keys were first added: a reset
/// replaces it in the order given, an added key already present keeps its place and takes the
/// new target.
struct EndpointList<K, T>(Vec<(K, T)>);

fn lock<K, T, Req, Rsp>(shared: &Shared<K, T, Req, Rsp>) -> MutexGuard<'_, State<K, T, Req, Rsp>> {
    // A test that panicked while holding the lock has failed already; keep the state readable.
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// === impl MockPool ===

impl<K, T, Req, Rsp> Service<Req> for MockPool<K, T, Req, Rsp> {
    type Response = Rsp;
    type Error = BoxError;
    type Future = MockResponse<Rsp>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut state = lock(&self.shared);
        state.poll_ready_calls += 1;
        match &state.ready {
            Readiness::Ready => Poll::Ready(Ok(())),
            Readiness::Pending => {
                state.ready_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Readiness::Fail(message) => Poll::Ready(Err(Box::new(MockError(message.clone())))),
            Readiness::Panic => {
                drop(state);
                panic!("mock pool told to panic in poll_ready");
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let (tx, rx) = oneshot::channel();
        let mut state = lock(&self.shared);
        if state.panic_on_call {
            drop(state);
            panic!("mock pool told to panic in call");
        }
        state.calls += 1;
        state.requests.push_back((request, Responder { tx }));
        drop(state);
        self.shared.notify.notify_one();
        MockResponse { rx }
    }
}

impl<K, T, Req, Rsp> Pool<K, T, Req> for MockPool<K, T, Req, Rsp>
where
    K: Hash + Eq + Clone,
    T: Clone,
{
    fn update_pool(&mut self, update: Update<K, T>) {
        let mut state = lock(&self.shared);
        *state.update_counts.entry(update.kind()).or_default() += 1;
        if let Some(history) = state.history.as_mut() {
            history.push(update.clone());
        }
        update.apply_to(&mut state.endpoints);
    }

    fn poll_pool(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut state = lock(&self.shared);
        state.poll_pool_calls += 1;
        if let Some(message) = &state.pool_failure {
            return Poll::Ready(Err(Box::new(MockError(message.clone()))));
        }
        // Kept even when there is nothing to drive, so that a later `fail_pool` or
        // `set_pool_pending` wakes the task that owns the pool, as a real pool's would.
        state.pool_waker = Some(cx.waker().clone());
        if state.pool_pending {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// Every endpoint in one state, following the mock's readiness: ready when it is ready,
    /// failed when its readiness fails, pending otherwise (not ready yet).
    fn endpoints(&self) -> EndpointCounts {
        let state = lock(&self.shared);
        let n = state.endpoints.0.len();
        match state.ready {
            Readiness::Ready => EndpointCounts {
                ready: n,
                ..Default::default()
            },
            Readiness::Fail(_) | Readiness::Panic => EndpointCounts {
                failed: n,
                ..Default::default()
            },
            Readiness::Pending => EndpointCounts {
                pending: n,
                ..Default::default()
            },
        }
    }
}

impl<K, T, Req, Rsp> Drop for MockPool<K, T, Req, Rsp> {
    fn drop(&mut self) {
        lock(&self.shared).dropped = true;
    }
}

impl<K, T, Req, Rsp> fmt::Debug for MockPool<K, T, Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockPool").finish_non_exhaustive()
    }
}

// === impl EndpointList ===

impl<K: PartialEq, T> EndpointSet<K, T> for EndpointList<K, T> {
    fn reset(&mut self, endpoints: Vec<(K, T)>) {
        self.0 = endpoints;
    }

    fn add(&mut self, endpoints: Vec<(K, T)>) {
        for (key, target) in endpoints {
            match self.0.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = target,
                None => self.0.push((key, target)),
            }
        }
    }

    fn remove(&mut self, keys: Vec<K>) {
        self.0.retain(|(k, _)| !keys.contains(k));
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

// === impl PoolControl ===

impl<K, T, Req, Rsp> PoolControl<K, T, Req, Rsp> {
    fn set_readiness(&self, ready: Readiness) {
        let mut state = lock(&self.shared);
        state.ready = ready;
        let waker = state.ready_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Makes the pool ready (an endpoint is ready) or not; waking a task waiting for it.
    pub fn set_ready(&self, ready: bool) {
        self.set_readiness(if ready {
            Readiness::Ready
        } else {
            Readiness::Pending
        });
    }

    /// Makes `poll_ready` fail with this message.
    pub fn fail_ready(&self, message: impl Into<String>) {
        self.set_readiness(Readiness::Fail(message.into()));
    }

    /// Makes `poll_ready` panic, as a buggy pool would.
    pub fn panic_on_ready(&self) {
        self.set_readiness(Readiness::Panic);
    }

    /// Makes `call` panic, as a buggy pool (or endpoint) would; `poll_ready` answers as set.
    pub fn panic_on_call(&self) {
        lock(&self.shared).panic_on_call = true;
    }

    /// Makes `poll_pool` report endpoints still to drive (`Pending`) or none (`Ready`); waking
    /// a task waiting on it.
    pub fn set_pool_pending(&self, pending: bool) {
        let mut state = lock(&self.shared);
        state.pool_pending = pending;
        let waker = state.pool_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Makes `poll_pool` fail with this message; waking a task waiting on it.
    pub fn fail_pool(&self, message: impl Into<String>) {
        let mut state = lock(&self.shared);
        state.pool_failure = Some(message.into());
        let waker = state.pool_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Stops keeping every update (counts are still kept), for tests that send many.
    pub fn forget_updates(&self) {
        lock(&self.shared).history = None;
    }

    /// The next request the pool was called with, waiting for one.
    pub async fn next_request(&self) -> (Req, Responder<Rsp>) {
        loop {
            let notified = self.shared.notify.notified();
            if let Some(next) = self.try_next_request() {
                return next;
            }
            notified.await;
        }
    }

    /// The next request the pool was called with, if there is one.
    pub fn try_next_request(&self) -> Option<(Req, Responder<Rsp>)> {
        lock(&self.shared).requests.pop_front()
    }

    /// How many times `poll_ready` was called.
    pub fn poll_ready_calls(&self) -> u64 {
        lock(&self.shared).poll_ready_calls
    }

    /// How many times `poll_pool` was called.
    pub fn poll_pool_calls(&self) -> u64 {
        lock(&self.shared).poll_pool_calls
    }

    /// How many requests the pool was called with.
    pub fn calls(&self) -> u64 {
        lock(&self.shared).calls
    }

    /// How many updates of this kind the pool received.
    pub fn update_count(&self, kind: UpdateKind) -> u64 {
        lock(&self.shared)
            .update_counts
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// How many updates of any kind the pool received.
    pub fn updates_received(&self) -> u64 {
        lock(&self.shared).update_counts.values().sum()
    }

    /// Whether the pool has been dropped.
    pub fn is_dropped(&self) -> bool {
        lock(&self.shared).dropped
    }
}

impl<K: Clone, T: Clone, Req, Rsp> PoolControl<K, T, Req, Rsp> {
    /// Every update received, in order (empty after [`PoolControl::forget_updates`]).
    pub fn updates(&self) -> Vec<Update<K, T>> {
        lock(&self.shared).history.clone().unwrap_or_default()
    }

    /// The endpoint set the updates so far add up to.
    pub fn endpoints(&self) -> Vec<(K, T)> {
        lock(&self.shared).endpoints.0.clone()
    }
}

impl<K, T, Req, Rsp> Clone for PoolControl<K, T, Req, Rsp> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K, T, Req, Rsp> fmt::Debug for PoolControl<K, T, Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared);
        f.debug_struct("PoolControl")
            .field("endpoints", &state.endpoints.0.len())
            .field("pending_requests", &state.requests.len())
            .field("calls", &state.calls)
            .finish()
    }
}

// === impl Responder ===

impl<Rsp> Responder<Rsp> {
    /// Answers the request.
    pub fn respond(self, response: Rsp) {
        let _ = self.tx.send(Ok(response));
    }

    /// Fails the request with this message.
    pub fn fail(self, message: impl Into<String>) {
        let _ = self.tx.send(Err(Box::new(MockError(message.into()))));
    }

    /// Whether the caller dropped the response future.
    pub fn is_canceled(&self) -> bool {
        self.tx.is_closed()
    }
}

impl<Rsp> fmt::Debug for Responder<Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("canceled", &self.tx.is_closed())
            .finish()
    }
}

// === impl MockResponse ===

impl<Rsp> Future for MockResponse<Rsp> {
    type Output = Result<Rsp, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|result| {
            result.unwrap_or_else(|_| Err(Box::new(MockError("responder dropped".into()))))
        })
    }
}

impl<Rsp> fmt::Debug for MockResponse<Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockResponse").finish_non_exhaustive()
    }
}

/// The queue of [`full_shedding_queue`]: requests and responses are `&'static str`.
pub type FullQueue = portcullis_pool::PoolQueue<&'static str, MockResponse<&'static str>>;

/// A [`PoolQueue`](portcullis_pool::PoolQueue) that sheds and is full: capacity 1,
/// `shed_when_full`, over a mock pool that is never ready (its control, third, counts calls),
/// its one slot held by the second handle, polled ready and never called. Every call through
/// the first is shed with [`Overloaded`](portcullis_pool::Overloaded) while the second is kept.
/// Call it inside a tokio runtime: the queue spawns its worker.
#[allow(clippy::type_complexity)] // three named types read more plainly than an alias
pub async fn full_shedding_queue() -> Result<
    (
        FullQueue,
        FullQueue,
        PoolControl<&'static str, u16, &'static str, &'static str>,
    ),
    BoxError,
> {
    let (pool, control) = pair::<&'static str, u16, &'static str, &'static str>();
    let (_updates, discovery) = crate::discovery::channel();
    let queue = portcullis_pool::PoolQueue::builder()
        .capacity(1)
        .shed_when_full(true)
        .build(pool, discovery)?;
    let mut holder = queue.clone();
    std::future::poll_fn(|cx| holder.poll_ready(cx)).await?;
    Ok((queue, holder, control))
}

/// The error a full [`PoolQueue`](portcullis_pool::PoolQueue) that sheds answers
/// ([`Overloaded`](portcullis_pool::Overloaded)), made by one ([`full_shedding_queue`]). For
/// the tests of what handles it (classifiers, clients). Call it inside a tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let error = portcullis_test::pool::overloaded_error().await;
/// assert!(error.is::<portcullis_pool::Overloaded>(), "{error}");
/// # }
/// ```
pub async fn overloaded_error() -> BoxError {
    let (mut queue, _holder, _control) = match full_shedding_queue().await {
        Ok(full) => full,
        Err(error) => return error,
    };
    if let Err(error) = std::future::poll_fn(|cx| queue.poll_ready(cx)).await {
        return error;
    }
    match queue.call("shed").await {
        Ok(response) => format!("a full queue answered {response}").into(),
        Err(error) => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_add_up_to_the_endpoint_set_in_first_added_order() {
        let (mut mock, control) = pair::<&str, u16, (), ()>();
        mock.update_pool(Update::Reset(vec![("b", 1), ("a", 1)]));
        mock.update_pool(Update::Add(vec![("c", 1), ("b", 2)]));
        assert_eq!(control.endpoints(), vec![("b", 2), ("a", 1), ("c", 1)]);
        mock.update_pool(Update::Remove(vec!["a", "unknown"]));
        assert_eq!(control.endpoints(), vec![("b", 2), ("c", 1)]);
        mock.update_pool(Update::DoesNotExist);
        assert!(control.endpoints().is_empty());
        assert_eq!(control.updates_received(), 4);
    }
}
