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
//!   a caller only ever *tries* the lock, and never while the worker waits for it or holds
//!   it, so a stream of direct callers cannot keep the worker (and discovery updates) out. A
//!   caller that meets the worker's turn waits a bounded while for it to end (a turn with
//!   nothing queued is short), then queues.
//! - **FIFO.** A caller dispatches directly only if no request is queued (sent to the worker
//!   and not yet dispatched or answered), checked again under the lock. A request queued
//!   after that check came after this caller; one queued before makes it queue too.
//! - **Readiness is polled with the worker's waker**, not the caller's: most services keep
//!   only the last waker they were polled with, so a poll with the caller's would take the
//!   registration away from the worker. Whatever a direct poll found pending wakes the worker
//!   when it turns ready.
//! - **An update that has arrived is applied first.** The worker polls discovery with a waker
//!   of ours that notes an update may be waiting before it wakes the worker's task, and clears
//!   the note when its turn begins. While the note is set, callers queue: a discovery update
//!   that has arrived but is not applied yet (the worker woken, not yet run) is applied before
//!   the next request is routed, as it was when every request went through the worker.
//! - **Only that and FIFO hold callers back.** Every other wake-up of the worker (an endpoint
//!   turning ready, a rebuild or ejection timer, the failfast clock, a request queued) wakes it
//!   without the note: a queued request holds callers back by itself (FIFO, above), and an
//!   endpoint's readiness is what a direct caller polls anyway. So one endpoint's readiness
//!   churn does not send every other caller through the queue.
//! - **Pending means queue.** If the pool is not ready at once, the request is queued exactly
//!   as without direct dispatch, and the worker takes over.
//! - **Everything else is as queued:** a direct dispatch happens only with a slot reserved by
//!   `poll_ready` (so the capacity and failfast answers are the same, and `Ready` means the
//!   call will be taken), and the response future is driven by the caller as always.
//! - **The worker's runtime, whoever calls.** Pool code runs in the runtime context of the
//!   worker's runtime (entered around a direct poll and call, unless the caller is a task on a
//!   thread the worker has run on, which is in that runtime already), so a caller on a plain
//!   thread or on another runtime can drive it, and the timers it arms (a rebuild backoff, an
//!   ejection) live and fire with the worker, not with the caller's runtime.
//! - **Terminal before direct.** A direct caller checks, under the lock, that the queue has not
//!   ended. A pool error met by a direct poll ends the queue *there*, under the lock, with a
//!   [`PoolFailed`]: no later caller reaches the pool, and the worker answers what is queued.
//! - **A panic never reaches a caller.** A panic raised while a caller drives the pool (its
//!   `poll_ready` or `call`, and the endpoints' inside them) is caught, the pool is dropped and
//!   the queue ends exactly as if the worker had panicked: the caller and everyone after it get
//!   [`WorkerGone`](super::WorkerGone). A lock poisoned by a panic anywhere is read the same
//!   way: the pool behind it is never used again.

use super::error::{BoxError, FailureSource, PoolFailed};
use super::shared::Shared;
use crate::Pool;
use futures_util::task::AtomicWaker;
use std::cell::Cell;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::task::{Context, Poll, Wake, Waker};
use tokio::runtime::{Handle, RuntimeFlavor};

/// How many times a caller tries the lock again before it queues its request, while another
/// caller holds it.
const SPINS: u32 = 64;
/// Spin-loop hints between two tries: a caller that tries at once takes the lock's line from
/// the holder, who needs it back to unlock (with callers on two cores, trying at once cost
/// 140 ns a request against 60 ns with this pause).
const PAUSES: u32 = 32;

/// Numbers the queues (never reused, unlike addresses).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The last few queues whose worker took a turn on this thread, when it is a thread of a
    /// multi-thread runtime: such a thread belongs to that runtime for life, and so does every
    /// task it runs, so a caller in a task there is in the worker's runtime already, and
    /// entering it again (tokio's `Handle::enter`: about 120 instructions and an atomic on a
    /// line every thread shares) is skipped. Anywhere else (a plain thread, another runtime,
    /// a current-thread runtime's thread, which may drive another runtime later), the
    /// worker's runtime is entered.
    static WORKERS_HERE: Cell<[u64; 4]> = const { Cell::new([0; 4]) };
}

/// The pool as the worker and direct callers share it.
#[derive(Debug)]
pub(crate) struct Direct<P, K, T> {
    inner: Mutex<Inner<P>>,
    /// Whether direct dispatch is on (`PoolQueueBuilder::direct_dispatch`).
    enabled: bool,
    /// Set while the worker waits for the lock: callers do not try it.
    worker_waiting: AtomicBool,
    /// Set while the worker holds the lock for its turn: callers do not try the lock, and
    /// queue if the turn outlasts their bounded wait (a discovery update of thousands of
    /// endpoints).
    worker_turn: AtomicBool,
    /// A direct dispatch found an endpoint ready since the worker last looked: the failfast
    /// clock's "an endpoint was ready" event.
    saw_ready: AtomicBool,
    /// The runtime the worker runs on, as of its first turn: entered around a direct poll by a
    /// caller that may be elsewhere.
    runtime: OnceLock<Handle>,
    /// This queue's number, for the threads to note that its worker took a turn there.
    id: u64,
    /// The worker's task, and the note of an update waiting.
    wake: Arc<WorkerWake>,
    /// What the worker polls the pool, the requests and its timers with, and direct callers
    /// poll the pool with: it wakes the worker, and holds no caller back.
    waker: Waker,
    /// What the worker polls discovery with: it notes an update may be waiting, then wakes the
    /// worker; callers queue until the worker's next turn.
    discovery_waker: Waker,
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

/// The worker's task as its wakers reach it, and the note that discovery woke it (see
/// [`DiscoveryWake`]).
#[derive(Debug)]
struct WorkerWake {
    /// Set by a discovery wake-up (an update may be waiting), cleared when a turn begins; set
    /// until the first turn, so that the first endpoint set is applied before any request is
    /// routed.
    update_pending: AtomicBool,
    /// The worker task's waker, registered at each of its turns. Woken once until the next
    /// turn registers it again: the worker is scheduled by then, and its turn looks at
    /// everything.
    task: AtomicWaker,
}

impl WorkerWake {
    fn wake_task(&self) {
        self.task.wake();
    }
}

/// Wakes the worker, and holds no caller back.
impl Wake for WorkerWake {
    fn wake(self: Arc<Self>) {
        self.wake_task();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_task();
    }
}

/// Discovery's wake-up: notes that an update may be waiting, then wakes the worker.
#[derive(Debug)]
struct DiscoveryWake(Arc<WorkerWake>);

impl Wake for DiscoveryWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.update_pending.store(true, Ordering::Release);
        self.0.wake_task();
    }
}

/// What became of a direct dispatch attempt.
pub(crate) enum Dispatch<Req, F> {
    /// Dispatched: the pool's response future.
    Direct(F),
    /// Not dispatched: the request, to be queued.
    Queue(Req),
    /// The queue has ended (before or during this attempt): the error the caller gets.
    Ended(BoxError),
}

/// What a handle sees of [`Direct`], without naming the pool's type.
pub(crate) trait DirectDispatch<Req, F>: Send + Sync {
    /// Dispatches `request` at once if nothing is queued and an endpoint is ready; gives it
    /// back otherwise, to be queued. A dispatch is counted in the handle's `stripe`.
    fn try_dispatch(&self, request: Req, shared: &Shared, stripe: usize) -> Dispatch<Req, F>;

    /// Whether direct dispatch is on (`PoolQueueBuilder::direct_dispatch`).
    fn enabled(&self) -> bool;
}

impl<P, K, T> Direct<P, K, T> {
    pub(crate) fn new(pool: P, enabled: bool) -> Self {
        let wake = Arc::new(WorkerWake {
            update_pending: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            inner: Mutex::new(Inner { pool: Some(pool) }),
            enabled,
            worker_waiting: AtomicBool::new(false),
            worker_turn: AtomicBool::new(false),
            saw_ready: AtomicBool::new(false),
            runtime: OnceLock::new(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            waker: Waker::from(wake.clone()),
            discovery_waker: Waker::from(Arc::new(DiscoveryWake(wake.clone()))),
            wake,
            _target: PhantomData,
        }
    }

    /// The waker the worker polls the pool, the requests and its timers with during its turn.
    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    /// The waker the worker polls discovery with during its turn.
    pub(crate) fn discovery_waker(&self) -> &Waker {
        &self.discovery_waker
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
        self.wake.task.register(waker);
        self.wake.update_pending.store(false, Ordering::Release);
        if self.runtime.get().is_none() {
            if let Ok(runtime) = Handle::try_current() {
                let _ = self.runtime.set(runtime);
            }
        }
        // Only a multi-thread runtime's threads are its own for life; a thread that drives a
        // current-thread runtime may drive another one later.
        if self
            .runtime
            .get()
            .is_some_and(|runtime| runtime.runtime_flavor() == RuntimeFlavor::MultiThread)
        {
            WORKERS_HERE.with(|here| {
                let mut ids = here.get();
                if !ids.contains(&self.id) {
                    ids.rotate_right(1);
                    ids[0] = self.id;
                    here.set(ids);
                }
            });
        }
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

    /// A panic raised while a caller drove the pool, or a lock poisoned by one: the pool is
    /// dropped (a panic in its `Drop` is caught too) and the queue ends as it does when the
    /// worker panics. The worker is woken to answer what is queued.
    fn end_after_panic(&self, inner: &mut Inner<P>, shared: &Shared) -> BoxError {
        tracing::error!("the pool panicked while a caller drove it; pool queue stopped");
        let pool = inner.pool.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(pool)));
        shared.clear_failfast();
        shared.slots.close();
        self.waker.wake_by_ref();
        shared.closed_error()
    }
}

impl<P, K, T> Direct<P, K, T> {
    /// Whether the caller runs in a task on a thread this queue's worker has run on, so in
    /// the worker's runtime (see [`WORKERS_HERE`]).
    fn on_workers_runtime(&self) -> bool {
        tokio::task::try_id().is_some() && WORKERS_HERE.with(|here| here.get().contains(&self.id))
    }

    /// Whether a request may be dispatched directly, if an endpoint is ready: direct dispatch
    /// on, nothing queued, no discovery update waiting. Read without the lock, so checked
    /// again under it.
    fn may_dispatch(&self, shared: &Shared) -> bool {
        self.enabled && !self.wake.update_pending.load(Ordering::Acquire) && !shared.any_queued()
    }

    /// The pool's lock for a direct dispatch, or `None` to queue: tried, never waited for.
    /// A poisoned lock is handed back as `Err` for the caller to end the queue.
    ///
    /// While the worker waits for the lock or holds it for its turn, the caller does not try
    /// it (the worker goes first) but waits a bounded while for the turn to end: a turn with
    /// nothing queued is short (an endpoint that turned ready, a timer), and queueing behind
    /// it would send every caller after this one through the queue too (FIFO), until the
    /// worker had run again. A long turn (a large discovery update) outlasts the bound, and
    /// the caller queues; so does a caller that sees a request queued or an update waiting
    /// meanwhile, which it could not go ahead of anyway.
    #[allow(clippy::type_complexity)]
    fn try_lock(
        &self,
        shared: &Shared,
    ) -> Option<Result<MutexGuard<'_, Inner<P>>, MutexGuard<'_, Inner<P>>>> {
        let mut spins = SPINS;
        loop {
            let workers = self.worker_waiting.load(Ordering::Relaxed)
                || self.worker_turn.load(Ordering::Relaxed);
            if workers {
                if !self.may_dispatch(shared) {
                    return None;
                }
            } else {
                match self.inner.try_lock() {
                    Ok(guard) => return Some(Ok(guard)),
                    Err(TryLockError::Poisoned(poisoned)) => {
                        return Some(Err(poisoned.into_inner()))
                    }
                    // Most likely another caller, inside for a pick and a call: worth a few
                    // tries before the hand-off, which costs far more (and, once one request
                    // is queued, every caller queues behind it until the worker has run).
                    Err(TryLockError::WouldBlock) => {}
                }
            }
            // Only a bounded number of times: a caller never blocks on the lock.
            if spins == 0 {
                return None;
            }
            spins -= 1;
            for _ in 0..PAUSES {
                std::hint::spin_loop();
            }
        }
    }
}

impl<P, K, T, Req> DirectDispatch<Req, P::Future> for Direct<P, K, T>
where
    P: Pool<K, T, Req> + Send,
    P::Error: Into<BoxError>,
{
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn try_dispatch(
        &self,
        request: Req,
        shared: &Shared,
        stripe: usize,
    ) -> Dispatch<Req, P::Future> {
        // An ended queue (a terminal error, or a pool that panicked under another caller)
        // takes no request, whichever path it would take.
        if shared.is_closed() {
            return Dispatch::Ended(shared.closed_error());
        }
        if !self.may_dispatch(shared) {
            return Dispatch::Queue(request);
        }
        let mut guard = match self.try_lock(shared) {
            Some(Ok(guard)) => guard,
            Some(Err(mut poisoned)) => {
                return Dispatch::Ended(self.end_after_panic(&mut poisoned, shared));
            }
            None => return Dispatch::Queue(request),
        };
        // Again under the lock: a request queued, or a discovery update that arrived, before
        // it was taken goes first; and a queue that ended (the worker's terminal error, a
        // pool error or panic met by another caller) is never dispatched to.
        if shared.is_closed() {
            return Dispatch::Ended(shared.closed_error());
        }
        if shared.any_queued() || self.wake.update_pending.load(Ordering::Acquire) {
            return Dispatch::Queue(request);
        }
        let Some(pool) = guard.pool.as_mut() else {
            return Dispatch::Queue(request);
        };
        // The worker's runtime, whoever the caller is: timers the pool arms here belong to
        // the worker's runtime and outlive the caller's.
        let _runtime = if self.on_workers_runtime() {
            None
        } else {
            self.runtime.get().map(Handle::enter)
        };
        let mut cx = Context::from_waker(&self.waker);
        let polled = catch_unwind(AssertUnwindSafe(|| pool.poll_ready_for(&mut cx, &request)));
        match polled {
            Ok(Poll::Ready(Ok(()))) => {
                // Written only when the worker has taken the last note: callers on other
                // cores then share the line rather than take turns owning it.
                if !self.saw_ready.load(Ordering::Relaxed) {
                    self.saw_ready.store(true, Ordering::Relaxed);
                }
                tracing::trace!("dispatching directly");
                match catch_unwind(AssertUnwindSafe(|| pool.call(request))) {
                    Ok(future) => {
                        // Under the lock, like every other count of a direct dispatch.
                        shared.dispatched_directly(stripe, &guard);
                        Dispatch::Direct(future)
                    }
                    Err(_) => Dispatch::Ended(self.end_after_panic(&mut guard, shared)),
                }
            }
            Ok(Poll::Ready(Err(error))) => {
                // Terminal at once, under the lock: no caller after this one reaches the
                // pool, and the worker (woken) answers what is queued with the same error.
                let error = PoolFailed::new(FailureSource::Pool, error.into());
                tracing::error!(%error, "pool queue stopped");
                shared.terminate(error);
                self.waker.wake_by_ref();
                Dispatch::Ended(shared.closed_error())
            }
            Ok(Poll::Pending) => Dispatch::Queue(request),
            Err(_) => Dispatch::Ended(self.end_after_panic(&mut guard, shared)),
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

    /// A pool that is always ready and answers at once.
    struct AlwaysReady;

    impl Service<()> for AlwaysReady {
        type Response = ();
        type Error = BoxError;
        type Future = Ready<Result<(), BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, (): ()) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }

    impl Pool<(), (), ()> for AlwaysReady {
        fn update_pool(&mut self, _: Update<(), ()>) {}

        fn poll_pool(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn endpoints(&self) -> EndpointCounts {
            EndpointCounts::default()
        }
    }

    /// An endpoint turning ready, a timer, a request sent to the worker: each wakes the worker
    /// with the plain waker, and callers keep dispatching directly until its turn. Only
    /// discovery's wake-up (an update may be waiting) holds them back, until the turn begins.
    #[test]
    fn only_a_discovery_wake_up_holds_callers_back_until_the_workers_turn() {
        let direct = Direct::<_, (), ()>::new(AlwaysReady, true);
        let shared = Shared::new(4, Duration::from_secs(1));
        let mut worker = tokio_test::task::spawn(());
        worker.enter(|cx, _| drop(direct.lock_for_turn(cx.waker())));
        let dispatch = || DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, 0);
        assert!(matches!(dispatch(), Dispatch::Direct(_)));

        direct.waker().wake_by_ref();
        assert!(worker.is_woken(), "the worker is woken");
        assert!(
            matches!(dispatch(), Dispatch::Direct(_)),
            "a plain wake-up holds no caller back"
        );

        direct.discovery_waker().wake_by_ref();
        assert!(matches!(dispatch(), Dispatch::Queue(())));
        worker.enter(|cx, _| drop(direct.lock_for_turn(cx.waker())));
        assert!(
            matches!(dispatch(), Dispatch::Direct(_)),
            "the worker's turn took the note"
        );
    }

    #[test]
    fn a_direct_poll_registers_the_workers_waker_so_a_pending_endpoint_wakes_the_worker() {
        let wakers = Arc::new(Mutex::new(Vec::new()));
        let direct = Direct::<_, (), ()>::new(Recording(wakers.clone()), true);
        let shared = Shared::new(4, Duration::from_secs(1));

        // Before the worker's first turn there is no waker to poll with: nothing is polled.
        assert!(matches!(
            DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, 0),
            Dispatch::Queue(())
        ));
        assert!(wakers.lock().unwrap().is_empty());

        let mut worker = tokio_test::task::spawn(());
        worker.enter(|cx, _| drop(direct.lock_for_turn(cx.waker())));
        assert!(matches!(
            DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, 0),
            Dispatch::Queue(())
        ));
        let polled_with = wakers.lock().unwrap().pop().unwrap();
        assert!(!worker.is_woken());
        polled_with.wake();
        assert!(
            worker.is_woken(),
            "the endpoint's wake-up reaches the worker"
        );
    }

    /// While the worker holds the pool for its turn, a caller waits a bounded while and then
    /// queues (a turn may be long), and the pool is not polled.
    #[test]
    fn callers_queue_after_a_bounded_wait_while_the_worker_holds_its_turn() {
        let wakers = Arc::new(Mutex::new(Vec::new()));
        let direct = Direct::<_, (), ()>::new(Recording(wakers.clone()), true);
        let shared = Shared::new(4, Duration::from_secs(1));
        let mut worker = tokio_test::task::spawn(());
        worker.enter(|cx, _| {
            let turn = direct.lock_for_turn(cx.waker());
            assert!(direct.worker_turn.load(Ordering::Relaxed));
            assert!(matches!(
                DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, 0),
                Dispatch::Queue(())
            ));
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
        assert!(matches!(
            DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, 0),
            Dispatch::Queue(())
        ));
        shared.dequeued();
        direct.worker_waiting.store(true, Ordering::Relaxed);
        assert!(matches!(
            DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, 0),
            Dispatch::Queue(())
        ));
        assert!(wakers.lock().unwrap().is_empty(), "the pool was not polled");
        direct.worker_waiting.store(false, Ordering::Relaxed);
        assert!(matches!(
            DirectDispatch::<(), _>::try_dispatch(&direct, (), &shared, 0),
            Dispatch::Queue(())
        ));
        assert_eq!(wakers.lock().unwrap().len(), 1, "polled once, not ready");
    }
}
