//! Simulated endpoints: [`tower_service::Service`]s whose latency, readiness and failures a test
//! controls, in tokio time (so `start_paused` tests are deterministic).
//!
//! A [`SimControl`] is the test's handle; every [`SimEndpoint`] made from it shares its state,
//! so one control can stand for one replica across rebuilds (a pool that evicts and rebuilds an
//! endpoint gets a new `SimEndpoint` from the same control, which keeps counting calls).
//!
//! - latency: every response is delayed by [`SimControl::set_latency`] (tokio's clock);
//! - readiness: [`SimControl::set_ready`]`(false)` keeps `poll_ready` pending until set back,
//!   which wakes every task that waited;
//! - faults: [`SimControl::set_fail_ready`] makes `poll_ready` fail (a pool should evict the
//!   endpoint), [`SimControl::set_fail_calls`] makes responses fail, [`SimControl::set_hang`]
//!   makes responses never complete;
//! - capacity: [`SimControl::set_workers`]`(Some(c))` makes the replica one of finite capacity:
//!   `c` workers and a FIFO queue before them; a call waits for a free worker, then takes its
//!   latency (its *service time*). A call whose caller gave up still holds its worker to the
//!   end, as a server that does not see its client leave does;
//! - counting: [`SimControl::calls`], [`SimControl::in_flight`];
//! - scripts: [`SimControl::scripted`] makes an endpoint whose every call's latency and outcome
//!   a closure decides ([`SimCall`]): a seeded jitter, a latency that grows with the calls in
//!   flight, failures that follow the simulation's own clock.
//!
//! # Example
//!
//! ```
//! use portcullis_test::endpoint::{SimControl, SimError};
//! use std::time::Duration;
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let control = SimControl::new();
//! control.set_latency(Duration::from_millis(20));
//! let mut replica = control.endpoint(|req: u32| req * 2);
//!
//! let started = tokio::time::Instant::now();
//! let rsp = replica.ready().await.unwrap().call(21).await.unwrap();
//! assert_eq!(rsp, 42);
//! assert_eq!(started.elapsed(), Duration::from_millis(20));
//! assert_eq!(control.calls(), 1);
//!
//! control.set_fail_calls(true);
//! let err = replica.ready().await.unwrap().call(1).await.unwrap_err();
//! assert_eq!(err, SimError::Call);
//!
//! // An endpoint that answers with its id, whatever the request.
//! let mut named = control.endpoint_with_id::<(), _>("replica-a");
//! control.set_fail_calls(false);
//! assert_eq!(named.ready().await.unwrap().call(()).await.unwrap(), "replica-a");
//! # }
//! ```

use pin_project_lite::pin_project;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

/// The test's handle to one simulated replica. Cheap to clone; clones share state.
#[derive(Clone, Debug, Default)]
pub struct SimControl {
    shared: Arc<Shared>,
}

/// A simulated endpoint; see the [module documentation](self).
pub struct SimEndpoint<Req, Rsp> {
    shared: Arc<Shared>,
    respond: Respond<Req, Rsp>,
}

/// How a [`SimEndpoint`] answers a call.
enum Respond<Req, Rsp> {
    /// With `respond(request)` after the control's latency, or the control's call failure.
    Plain(Arc<dyn Fn(Req) -> Rsp + Send + Sync>),
    /// As the script says; shared by the endpoint's clones.
    Scripted(Arc<Mutex<Script<Req, Rsp>>>),
}

/// The closure of a [`SimControl::scripted`] endpoint.
type Script<Req, Rsp> = dyn FnMut(Req, usize) -> SimCall<Rsp> + Send;

/// What one call of a [scripted](SimControl::scripted) endpoint does: it ends with `outcome`
/// after `latency` (on tokio's clock; zero is at its first poll).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimCall<Rsp> {
    /// How long the call takes.
    pub latency: Duration,
    /// What it ends with.
    pub outcome: Result<Rsp, SimError>,
}

impl<Rsp> SimCall<Rsp> {
    /// A call answered with `response` after `latency`.
    pub fn answer(latency: Duration, response: Rsp) -> Self {
        Self {
            latency,
            outcome: Ok(response),
        }
    }

    /// A call that fails with [`SimError::Call`] after `latency`.
    pub fn fail(latency: Duration) -> Self {
        Self {
            latency,
            outcome: Err(SimError::Call),
        }
    }
}

/// A failure injected through a [`SimControl`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimError {
    /// `poll_ready` failed ([`SimControl::set_fail_ready`]).
    Readiness,
    /// The call failed ([`SimControl::set_fail_calls`]).
    Call,
}

pin_project! {
    /// The response future of a [`SimEndpoint`].
    #[derive(Debug)]
    pub struct SimFuture<Rsp> {
        #[pin]
        delay: Option<Sleep>,
        outcome: Option<Result<Rsp, SimError>>,
        hang: bool,
        in_flight: InFlight,
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    latency: Duration,
    ready: bool,
    fail_ready: bool,
    fail_calls: bool,
    hang: bool,
    panic_on_call: bool,
    calls: u64,
    in_flight: usize,
    /// Endpoint instances (and clones) not yet dropped.
    alive: usize,
    waiters: Vec<Waker>,
    /// With finite capacity: when each worker is next free (one entry per worker).
    workers: Option<BinaryHeap<Reverse<Instant>>>,
}

/// Counts a call as in flight until its future is dropped.
#[derive(Debug)]
struct InFlight(Arc<Shared>);

// === impl SimControl ===

impl SimControl {
    /// A healthy replica: ready, no latency, no faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// An endpoint of this replica that answers each request with `respond(request)`.
    pub fn endpoint<Req, Rsp>(
        &self,
        respond: impl Fn(Req) -> Rsp + Send + Sync + 'static,
    ) -> SimEndpoint<Req, Rsp> {
        self.shared.lock().alive += 1;
        SimEndpoint {
            shared: self.shared.clone(),
            respond: Respond::Plain(Arc::new(respond)),
        }
    }

    /// An endpoint of this replica whose calls follow `script`: each call `request` takes the
    /// latency and ends with the outcome of `script(request, in_flight)` ([`SimCall`]), where
    /// `in_flight` is how many of this replica's calls were in flight before it
    /// ([`SimControl::in_flight`]).
    ///
    /// The script stands in for [`set_latency`](Self::set_latency) and
    /// [`set_fail_calls`](Self::set_fail_calls), which this endpoint does not read; readiness,
    /// its failures, hangs and panics are the control's, and calls are counted as for any
    /// endpoint. The endpoint's clones share the script, which runs once per call, in call
    /// order: a script that draws a seeded jitter draws the same sequence every run.
    ///
    /// ```
    /// use portcullis_test::endpoint::{SimCall, SimControl};
    /// use std::time::Duration;
    /// use tower::{Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// // 10 ms per call already in flight, plus 10 ms; request 0 fails at once.
    /// let control = SimControl::new();
    /// let mut replica = control.scripted(|request: u32, in_flight| match request {
    ///     0 => SimCall::fail(Duration::ZERO),
    ///     _ => SimCall::answer(Duration::from_millis(10) * (in_flight as u32 + 1), request),
    /// });
    ///
    /// let first = replica.ready().await.unwrap().call(1);
    /// let second = replica.ready().await.unwrap().call(2);
    /// let started = tokio::time::Instant::now();
    /// assert_eq!(second.await, Ok(2));
    /// assert_eq!(started.elapsed(), Duration::from_millis(20));
    /// assert_eq!(first.await, Ok(1));
    /// assert!(replica.ready().await.unwrap().call(0).await.is_err());
    /// assert_eq!(control.calls(), 3);
    /// # }
    /// ```
    pub fn scripted<Req, Rsp>(
        &self,
        script: impl FnMut(Req, usize) -> SimCall<Rsp> + Send + 'static,
    ) -> SimEndpoint<Req, Rsp> {
        self.shared.lock().alive += 1;
        SimEndpoint {
            shared: self.shared.clone(),
            respond: Respond::Scripted(Arc::new(Mutex::new(script))),
        }
    }

    /// An endpoint of this replica that answers every request with a clone of `id`.
    pub fn endpoint_with_id<Req, Rsp>(&self, id: Rsp) -> SimEndpoint<Req, Rsp>
    where
        Rsp: Clone + Send + Sync + 'static,
    {
        self.endpoint(move |_: Req| id.clone())
    }

    /// Delays every later response by `latency` (tokio time).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Whether `poll_ready` says ready (`true`) or stays pending (`false`). Setting it ready
    /// wakes the tasks that were waiting.
    pub fn set_ready(&self, ready: bool) {
        let mut state = self.shared.lock();
        state.ready = ready;
        if ready {
            state.wake_waiters();
        }
    }

    /// Whether `poll_ready` fails with [`SimError::Readiness`]. Setting it wakes the tasks that
    /// were waiting, so they see the failure.
    pub fn set_fail_ready(&self, fail: bool) {
        let mut state = self.shared.lock();
        state.fail_ready = fail;
        if fail {
            state.wake_waiters();
        }
    }

    /// Whether later calls fail with [`SimError::Call`] (after the latency).
    pub fn set_fail_calls(&self, fail: bool) {
        self.shared.lock().fail_calls = fail;
    }

    /// Whether later calls never complete.
    pub fn set_hang(&self, hang: bool) {
        self.shared.lock().hang = hang;
    }

    /// Whether later calls panic inside `call`, as a buggy endpoint would (the panic is raised
    /// wherever the endpoint is called: a balancer's worker, or a caller dispatching itself).
    pub fn set_panic_on_call(&self, panic: bool) {
        self.shared.lock().panic_on_call = panic;
    }

    /// Gives the replica finite capacity: `Some(c)` workers (at least one), each serving one
    /// call at a time in the order the calls were made, or `None` for unbounded capacity (the
    /// default: every call takes just its latency). A change applies to later calls: workers
    /// added are free at once; of those removed, the ones free soonest retire when their
    /// current call ends.
    ///
    /// ```
    /// use portcullis_test::endpoint::SimControl;
    /// use std::time::Duration;
    /// use tower::{Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// // One worker, 10 ms a call: the second call waits for the first.
    /// let control = SimControl::new();
    /// control.set_latency(Duration::from_millis(10));
    /// control.set_workers(Some(1));
    /// let mut replica = control.endpoint(|n: u32| n);
    /// let first = replica.ready().await.unwrap().call(1);
    /// let second = replica.ready().await.unwrap().call(2);
    /// let started = tokio::time::Instant::now();
    /// assert_eq!(second.await, Ok(2));
    /// assert_eq!(started.elapsed(), Duration::from_millis(20));
    /// assert_eq!(first.await, Ok(1));
    /// # }
    /// ```
    pub fn set_workers(&self, workers: Option<usize>) {
        let mut state = self.shared.lock();
        let Some(count) = workers else {
            state.workers = None;
            return;
        };
        let count = count.max(1);
        let now = Instant::now();
        let heap = state.workers.get_or_insert_with(BinaryHeap::new);
        // Free soonest first: keep the `count` busy longest.
        let mut busy: Vec<Instant> = heap.drain().map(|Reverse(at)| at).collect();
        busy.sort_unstable();
        let keep = busy.len().saturating_sub(count);
        heap.extend(busy[keep..].iter().map(|&at| Reverse(at)));
        while heap.len() < count {
            heap.push(Reverse(now));
        }
    }

    /// The replica's workers, if its capacity is finite ([`set_workers`](Self::set_workers)).
    pub fn workers(&self) -> Option<usize> {
        self.shared.lock().workers.as_ref().map(BinaryHeap::len)
    }

    /// Calls made to any endpoint of this replica so far.
    pub fn calls(&self) -> u64 {
        self.shared.lock().calls
    }

    /// Response futures of this replica not yet dropped.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Endpoints of this replica (and their clones) that have not been dropped: 0 once a
    /// balancer has let go of every endpoint it built for the replica.
    pub fn alive(&self) -> usize {
        self.shared.lock().alive
    }

    /// Whether `poll_ready` would say ready now.
    pub fn is_ready(&self) -> bool {
        let state = self.shared.lock();
        state.ready && !state.fail_ready
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; keep the state usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for State {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            ready: true,
            fail_ready: false,
            fail_calls: false,
            hang: false,
            panic_on_call: false,
            calls: 0,
            in_flight: 0,
            alive: 0,
            waiters: Vec::new(),
            workers: None,
        }
    }
}

impl State {
    /// How long a call made now that takes `service` waits for a worker first: zero with
    /// unbounded capacity; else the wait for the worker free soonest, which it then holds
    /// until `now + wait + service` (calls are served in the order they are made).
    fn queue_wait(&mut self, service: Duration) -> Duration {
        let Some(workers) = self.workers.as_mut() else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let free = workers.pop().map_or(now, |Reverse(at)| at.max(now));
        workers.push(Reverse(free + service));
        free - now
    }

    fn wake_waiters(&mut self) {
        for waker in self.waiters.drain(..) {
            waker.wake();
        }
    }
}

// === impl SimEndpoint ===

impl<Req, Rsp> Drop for SimEndpoint<Req, Rsp> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.alive = state.alive.saturating_sub(1);
    }
}

impl<Req, Rsp> Clone for SimEndpoint<Req, Rsp> {
    fn clone(&self) -> Self {
        self.shared.lock().alive += 1;
        Self {
            shared: self.shared.clone(),
            respond: match &self.respond {
                Respond::Plain(respond) => Respond::Plain(respond.clone()),
                Respond::Scripted(script) => Respond::Scripted(script.clone()),
            },
        }
    }
}

impl<Req, Rsp> fmt::Debug for SimEndpoint<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimEndpoint")
            .field("state", &*self.shared.lock())
            .finish_non_exhaustive()
    }
}

impl<Req, Rsp> SimEndpoint<Req, Rsp> {
    /// The control of the replica this endpoint belongs to.
    pub fn control(&self) -> SimControl {
        SimControl {
            shared: self.shared.clone(),
        }
    }
}

impl<Req, Rsp> Service<Req> for SimEndpoint<Req, Rsp> {
    type Response = Rsp;
    type Error = SimError;
    type Future = SimFuture<Rsp>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SimError>> {
        let mut state = self.shared.lock();
        if state.fail_ready {
            return Poll::Ready(Err(SimError::Readiness));
        }
        if state.ready {
            return Poll::Ready(Ok(()));
        }
        if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            state.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn call(&mut self, req: Req) -> SimFuture<Rsp> {
        let (latency, fail, hang, in_flight) = {
            let mut state = self.shared.lock();
            if state.panic_on_call {
                drop(state);
                panic!("simulated endpoint told to panic in call");
            }
            state.calls += 1;
            state.in_flight += 1;
            (
                state.latency,
                state.fail_calls,
                state.hang,
                state.in_flight - 1,
            )
        };
        // The script runs outside the state's lock: it may read the control.
        let SimCall { latency, outcome } = match &self.respond {
            Respond::Plain(_) if fail => SimCall::fail(latency),
            Respond::Plain(respond) => SimCall::answer(latency, respond(req)),
            Respond::Scripted(script) => {
                let mut script = script.lock().unwrap_or_else(PoisonError::into_inner);
                script(req, in_flight)
            }
        };
        // With finite capacity, the latency is the call's service time, after its wait.
        let latency = latency + self.shared.lock().queue_wait(latency);
        SimFuture {
            delay: (!latency.is_zero()).then(|| tokio::time::sleep(latency)),
            outcome: Some(outcome),
            hang,
            in_flight: InFlight(self.shared.clone()),
        }
    }
}

// === impl SimFuture ===

impl<Rsp> Future for SimFuture<Rsp> {
    type Output = Result<Rsp, SimError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if *this.hang {
            return Poll::Pending;
        }
        if let Some(delay) = this.delay.as_pin_mut() {
            ready!(delay.poll(cx));
        }
        // Polled again after completion: behave like a hung call rather than panic.
        match this.outcome.take() {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

// === impl SimError ===

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Readiness => f.write_str("simulated readiness failure"),
            SimError::Call => f.write_str("simulated call failure"),
        }
    }
}

impl std::error::Error for SimError {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok, task};

    #[tokio::test(start_paused = true)]
    async fn readiness_gate_wakes_waiter() {
        let control = SimControl::new();
        let mut ep = control.endpoint_with_id::<(), _>(1u8);
        control.set_ready(false);
        let mut t = task::spawn(());
        assert_pending!(t.enter(|cx, _| ep.poll_ready(cx)));
        control.set_ready(true);
        assert!(t.is_woken());
        assert_ready_ok!(t.enter(|cx, _| ep.poll_ready(cx)));
        control.set_fail_ready(true);
        assert_eq!(
            assert_ready!(t.enter(|cx, _| ep.poll_ready(cx))),
            Err(SimError::Readiness)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn finite_capacity_queues_calls_behind_busy_workers() {
        let control = SimControl::new();
        control.set_latency(Duration::from_millis(10));
        control.set_workers(Some(2));
        let mut ep = control.endpoint(|n: u32| n);
        let started = Instant::now();
        // Four calls on two workers: two served at once, two after them.
        let mut calls: Vec<_> = (0..4).map(|n| task::spawn(ep.call(n))).collect();
        tokio::time::advance(Duration::from_millis(10)).await;
        let done: Vec<bool> = calls.iter_mut().map(|c| c.poll().is_ready()).collect();
        assert_eq!(done, [true, true, false, false]);
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(calls[2..].iter_mut().all(|c| c.poll().is_ready()));
        // Down to one worker: later calls queue one behind another, and a caller that gives
        // up does not free its worker.
        control.set_workers(Some(1));
        assert_eq!(control.workers(), Some(1));
        drop(ep.call(9));
        let mut next = task::spawn(ep.call(10));
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_pending!(next.poll());
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_ready_ok!(next.poll());
        assert_eq!(started.elapsed(), Duration::from_millis(40));
        control.set_workers(None);
        assert_eq!(control.workers(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_hang_and_in_flight() {
        let control = SimControl::new();
        let mut ep = control.endpoint(|n: u32| n + 1);
        control.set_latency(Duration::from_millis(10));
        let mut fut = task::spawn(ep.call(1));
        assert_eq!(control.in_flight(), 1);
        assert_pending!(fut.poll());
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(assert_ready_ok!(fut.poll()), 2);
        drop(fut);
        assert_eq!(control.in_flight(), 0);

        control.set_hang(true);
        let mut hung = task::spawn(ep.call(2));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_pending!(hung.poll());
        assert_eq!(control.calls(), 2);

        control.set_hang(false);
        control.set_fail_calls(true);
        let mut failing = task::spawn(ep.call(3));
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(assert_ready_err!(failing.poll()), SimError::Call);
    }

    #[tokio::test(start_paused = true)]
    async fn a_script_decides_each_calls_latency_and_outcome_and_sees_the_calls_in_flight() {
        let control = SimControl::new();
        // What the control says about latency and call failures is the script's to decide.
        control.set_latency(Duration::from_secs(60));
        control.set_fail_calls(true);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut ep = control.scripted(move |n: u32, in_flight| {
            log.lock().unwrap().push((n, in_flight));
            match n {
                0 => SimCall::fail(Duration::from_millis(1)),
                _ => SimCall::answer(Duration::from_millis(u64::from(n)), n * 10),
            }
        });
        let mut clone = ep.clone();
        let mut slow = task::spawn(ep.call(5));
        let mut failing = task::spawn(clone.call(0));
        let mut fast = task::spawn(ep.call(2));
        assert_eq!(*seen.lock().unwrap(), [(5, 0), (0, 1), (2, 2)]);
        assert_eq!((control.calls(), control.in_flight()), (3, 3));
        assert_pending!(slow.poll());
        assert_pending!(failing.poll());
        assert_pending!(fast.poll());

        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(assert_ready_err!(failing.poll()), SimError::Call);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(assert_ready_ok!(fast.poll()), 20);
        assert_pending!(slow.poll());
        tokio::time::advance(Duration::from_millis(3)).await;
        assert_eq!(assert_ready_ok!(slow.poll()), 50);
        drop((slow, failing, fast));
        assert_eq!(control.in_flight(), 0);

        // Readiness and hangs are still the control's.
        control.set_ready(false);
        let mut t = task::spawn(());
        assert_pending!(t.enter(|cx, _| ep.poll_ready(cx)));
        control.set_hang(true);
        let mut hung = task::spawn(ep.call(1));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_pending!(hung.poll());
    }
}
