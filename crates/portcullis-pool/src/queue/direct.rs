//! Direct dispatch: a caller that finds nothing queued and an endpoint ready at once calls the
//! pool itself, without the hand-off to the worker.
//!
//! A cross-task hand-off is the floor of any buffer: the request and the response future each
//! cross a channel, and the worker must be woken and scheduled. When nothing waits and an
//! endpoint is ready, none of that buys anything, so the caller may skip it.
//!
//! # The rules
//!
//! - **The worker still owns the pool's life.** Discovery, `poll_pool`, the queue and failfast
//!   stay the worker's. The pool sits behind a mutex that the worker holds for its whole turn;
//!   a caller only ever *tries* the lock, and steps aside while the worker waits for it, so a
//!   stream of direct callers cannot keep the worker (and discovery updates) out.
//! - **FIFO.** A caller dispatches directly only if no request is queued (sent to the worker
//!   and not yet dispatched or answered), checked again under the lock. A request queued
//!   after that check came after this caller; one queued before makes it queue too.
//! - **Readiness is polled with the worker's waker**, not the caller's: most services keep
//!   only the last waker they were polled with, so a poll with the caller's would take the
//!   registration away from the worker. Whatever a direct poll found pending wakes the worker
//!   when it turns ready.
//! - **Nothing the worker has yet to do is skipped.** The worker polls everything (discovery,
//!   the request channel, the pool, its timers) with a waker of ours that notes it was woken
//!   before it wakes the worker's task, and clears the note when its turn begins. While the
//!   note is set, callers queue: a discovery update that has arrived but is not applied yet
//!   (the worker woken, not yet run) is applied before the next request is routed, as it was
//!   when every request went through the worker.
//! - **Pending means queue.** If the pool is not ready at once, the request is queued exactly
//!   as without direct dispatch, and the worker takes over.
//! - **Everything else is as queued:** a direct dispatch happens only with a slot reserved by
//!   `poll_ready` (so the capacity and failfast answers are the same), the response future is
//!   driven by the caller as always, and a pool error met by a direct poll stops the worker
//!   with that error, as if the worker had met it.

use super::error::BoxError;
use super::shared::Shared;
use crate::Pool;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::task::{Context, Poll, Wake, Waker};

/// How many times a caller tries the lock again before it queues its request, while another
/// caller holds it.
const SPINS: u32 = 64;
/// Spin-loop hints between two tries: a caller that tries at once takes the lock's line from
/// the holder, who needs it back to unlock (with callers on two cores, trying at once cost
/// 140 ns a request against 60 ns with this pause).
const PAUSES: u32 = 32;

/// The pool as the worker and direct callers share it.
#[derive(Debug)]
pub(crate) struct Direct<P, K, T> {
    inner: Mutex<Inner<P>>,
    /// Whether direct dispatch is on (`PoolQueueBuilder::direct_dispatch`).
    enabled: bool,
    /// Set while the worker waits for the lock: callers step aside.
    worker_waiting: AtomicBool,
    /// Set while the worker holds the lock for its turn (which may be long: a discovery update
    /// of thousands of endpoints): callers queue rather than spin.
    worker_turn: AtomicBool,
    /// A direct dispatch found an endpoint ready since the worker last looked: the failfast
    /// clock's "an endpoint was ready" event.
    saw_ready: AtomicBool,
    /// A pool error a direct poll met, for the worker to stop on.
    error: Mutex<Option<BoxError>>,
    /// What the worker polls everything with, and direct callers poll the pool with.
    wake: Arc<WorkerWake>,
    waker: Waker,
    _target: PhantomData<fn(K, T)>,
}

#[derive(Debug)]
pub(crate) struct Inner<P> {
    /// `None` once the worker has ended: the pool goes with it, as it did before direct
    /// dispatch, and later callers queue (and learn that the worker is gone).
    pub(crate) pool: Option<P>,
}

/// The worker's hold on the pool for its turn: callers see it held by the worker until it
/// ends.
pub(crate) struct Turn<'a, P> {
    guard: MutexGuard<'a, Inner<P>>,
    worker_turn: &'a AtomicBool,
}

impl<P> std::ops::Deref for Turn<'_, P> {
    type Target = Inner<P>;

    fn deref(&self) -> &Inner<P> {
        &self.guard
    }
}

impl<P> std::ops::DerefMut for Turn<'_, P> {
    fn deref_mut(&mut self) -> &mut Inner<P> {
        &mut self.guard
    }
}

impl<P> Drop for Turn<'_, P> {
    fn drop(&mut self) {
        // Before the guard unlocks: a caller that then finds the lock held spins for a caller.
        self.worker_turn.store(false, Ordering::Relaxed);
    }
}

/// The worker's waker, wrapped: a wake-up is noted (the worker has something to do) before it
/// is passed on to the worker's task.
#[derive(Debug)]
struct WorkerWake {
    /// Set by every wake-up, cleared when a turn begins; set until the first turn.
    woken: AtomicBool,
    /// The worker task's waker as of its last turn.
    task: Mutex<Option<Waker>>,
}

impl Wake for WorkerWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

/// What a handle sees of [`Direct`], without naming the pool's type.
pub(crate) trait DirectDispatch<Req, F>: Send + Sync {
    /// Dispatches `request` at once if nothing is queued and an endpoint is ready; gives it
    /// back otherwise, to be queued. `checked`: the caller has just found
    /// [`may_dispatch`](Self::may_dispatch) true (what can change since is checked again
    /// under the lock). A dispatch is counted in the handle's `stripe`.
    fn try_dispatch(
        &self,
        request: Req,
        shared: &Shared,
        checked: bool,
        stripe: usize,
    ) -> Result<F, Req>;

    /// Whether a request would be dispatched directly if an endpoint is ready: direct
    /// dispatch on, nothing queued, the worker neither woken nor waiting for the lock.
    fn may_dispatch(&self, shared: &Shared) -> bool;
}

impl<P, K, T> Direct<P, K, T> {
    pub(crate) fn new(pool: P, enabled: bool) -> Self {
        let wake = Arc::new(WorkerWake {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Self {
            inner: Mutex::new(Inner { pool: Some(pool) }),
            enabled,
            worker_waiting: AtomicBool::new(false),
            worker_turn: AtomicBool::new(false),
            saw_ready: AtomicBool::new(false),
            error: Mutex::new(None),
            waker: Waker::from(wake.clone()),
            wake,
            _target: PhantomData,
        }
    }

    /// The waker the worker polls everything with during its turn.
    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    /// The worker's lock for its turn, taken with the worker task's `waker`; callers step
    /// aside while it waits. The turn begins: the wake-up note is cleared. A poisoned lock (a
    /// pool that panicked in a caller's direct dispatch) is taken as it is: the pool's own
    /// state is the pool's business, and the queue must keep answering.
    pub(crate) fn lock_for_turn(&self, waker: &Waker) -> Turn<'_, P> {
        self.worker_waiting.store(true, Ordering::Relaxed);
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        self.worker_turn.store(true, Ordering::Relaxed);
        self.worker_waiting.store(false, Ordering::Relaxed);
        {
            let mut task = self
                .wake
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *task = Some(waker.clone());
            }
        }
        self.wake.woken.store(false, Ordering::Release);
        Turn {
            guard,
            worker_turn: &self.worker_turn,
        }
    }

    /// Drops the pool: the worker has ended.
    pub(crate) fn drop_pool(&self) {
        let pool = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pool
            .take();
        drop(pool);
    }

    /// Whether a direct dispatch found an endpoint ready since the last call.
    pub(crate) fn take_saw_ready(&self) -> bool {
        self.saw_ready.load(Ordering::Relaxed) && self.saw_ready.swap(false, Ordering::Relaxed)
    }

    /// The pool error a direct poll met, if any.
    pub(crate) fn take_error(&self) -> Option<BoxError> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl<P, K, T, Req> DirectDispatch<Req, P::Future> for Direct<P, K, T>
where
    P: Pool<K, T, Req> + Send,
    P::Error: Into<BoxError>,
{
    fn may_dispatch(&self, shared: &Shared) -> bool {
        self.enabled
            && !self.wake.woken.load(Ordering::Acquire)
            && !self.worker_waiting.load(Ordering::Relaxed)
            && !shared.any_queued()
            && !shared.is_closed()
    }

    fn try_dispatch(
        &self,
        request: Req,
        shared: &Shared,
        checked: bool,
        stripe: usize,
    ) -> Result<P::Future, Req> {
        if !checked && !self.may_dispatch(shared) {
            return Err(request);
        }
        let mut spins = SPINS;
        let mut guard = loop {
            match self.inner.try_lock() {
                Ok(guard) => break guard,
                Err(TryLockError::Poisoned(poisoned)) => break poisoned.into_inner(),
                // Most likely another caller, inside for a pick and a call: worth a few
                // tries before the hand-off, which costs far more (and, once one request is
                // queued, every caller queues behind it until the worker has run). Never
                // while the worker waits for the lock, and only a bounded number of times:
                // a caller never blocks on the lock.
                Err(TryLockError::WouldBlock) => {
                    if spins == 0
                        || self.worker_waiting.load(Ordering::Relaxed)
                        || self.worker_turn.load(Ordering::Relaxed)
                    {
                        return Err(request);
                    }
                    spins -= 1;
                    for _ in 0..PAUSES {
                        std::hint::spin_loop();
                    }
                }
            }
        };
        // Again under the lock: a request queued, or anything for the worker to do, before
        // it was taken goes first.
        if shared.any_queued() || self.wake.woken.load(Ordering::Acquire) {
            return Err(request);
        }
        let Some(pool) = guard.pool.as_mut() else {
            return Err(request);
        };
        let waker = &self.waker;
        let mut cx = Context::from_waker(waker);
        match pool.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {
                // Written only when the worker has taken the last note: callers on other
                // cores then share the line rather than take turns owning it.
                if !self.saw_ready.load(Ordering::Relaxed) {
                    self.saw_ready.store(true, Ordering::Relaxed);
                }
                tracing::trace!("dispatching directly");
                let future = pool.call(request);
                // Under the lock, like every other count of a direct dispatch.
                shared.dispatched_directly(stripe, &guard);
                Ok(future)
            }
            Poll::Ready(Err(error)) => {
                *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.into());
                waker.wake_by_ref();
                Err(request)
            }
            Poll::Pending => Err(request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EndpointCounts, Update};
    use std::future::Ready;
    use std::sync::Arc;
    use std::time::Duration;
    use tower_service::Service;

    /// A pool that is never ready and keeps every waker it is polled with.
    struct Recording(Arc<Mutex<Vec<Waker>>>);

    impl Service<()> for Recording {
        type Response = ();
        type Error = BoxError;
        type Future = Ready<Result<(), BoxError>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(cx.waker().clone());
            Poll::Pending
        }

        fn call(&mut self, (): ()) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }

    impl Pool<(), (), ()> for Recording {
        fn update_pool(&mut self, _: Update<(), ()>) {}

        fn poll_pool(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn endpoints(&self) -> EndpointCounts {
            EndpointCounts::default()
        }
    }

    #[test]
    fn a_direct_poll_registers_the_workers_waker_so_a_pending_endpoint_wakes_the_worker() {
        let wakers = Arc::new(Mutex::new(Vec::new()));
        let direct = Direct::<_, (), ()>::new(Recording(wakers.clone()), true);
        let shared = Shared::new(4, Duration::from_secs(1));

        // Before the worker's first turn there is no waker to poll with: nothing is polled.
        assert!(DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, false, 0).is_err());
        assert!(wakers.lock().unwrap().is_empty());

        let mut worker = tokio_test::task::spawn(());
        worker.enter(|cx, _| drop(direct.lock_for_turn(cx.waker())));
        assert!(DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, false, 0).is_err());
        let polled_with = wakers.lock().unwrap().pop().unwrap();
        assert!(!worker.is_woken());
        polled_with.wake();
        assert!(
            worker.is_woken(),
            "the endpoint's wake-up reaches the worker"
        );
    }

    /// While the worker holds the pool for its turn, a caller queues at once (it does not
    /// spin for a lock that may be held for a long turn), and the pool is not polled.
    #[test]
    fn callers_queue_at_once_while_the_worker_holds_its_turn() {
        let wakers = Arc::new(Mutex::new(Vec::new()));
        let direct = Direct::<_, (), ()>::new(Recording(wakers.clone()), true);
        let shared = Shared::new(4, Duration::from_secs(1));
        let mut worker = tokio_test::task::spawn(());
        worker.enter(|cx, _| {
            let turn = direct.lock_for_turn(cx.waker());
            assert!(direct.worker_turn.load(Ordering::Relaxed));
            assert!(DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, false, 0).is_err());
            drop(turn);
        });
        assert!(
            !direct.worker_turn.load(Ordering::Relaxed),
            "the turn ended"
        );
        assert!(wakers.lock().unwrap().is_empty(), "the pool was not polled");
    }

    #[test]
    fn callers_step_aside_while_the_worker_waits_for_the_lock_and_while_anything_is_queued() {
        let wakers = Arc::new(Mutex::new(Vec::new()));
        let direct = Direct::<_, (), ()>::new(Recording(wakers.clone()), true);
        let shared = Shared::new(4, Duration::from_secs(1));
        let mut worker = tokio_test::task::spawn(());
        worker.enter(|cx, _| drop(direct.lock_for_turn(cx.waker())));

        shared.enqueued();
        assert!(DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, false, 0).is_err());
        shared.dequeued();
        direct.worker_waiting.store(true, Ordering::Relaxed);
        assert!(DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, false, 0).is_err());
        assert!(wakers.lock().unwrap().is_empty(), "the pool was not polled");
        direct.worker_waiting.store(false, Ordering::Relaxed);
        assert!(DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, false, 0).is_err());
        assert_eq!(wakers.lock().unwrap().len(), 1, "polled once, not ready");
    }
}
