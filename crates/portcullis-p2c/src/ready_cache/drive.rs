//! Endpoints through their life in a [`ReadyCache`]: the pending ones driven to readiness,
//! the failed ones rebuilt once their backoff has elapsed, and a ready one checked again right
//! before its call (back to pending if it is not ready, evicted if it failed).

use super::Map;
use super::{ReadyCache, ReadyRef};
use crate::make::MakeEndpoint;
use crate::BoxError;
use futures_util::task::AtomicWaker;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use tokio::time::{Instant, Sleep};
use tower_service::Service;
use tracing::{debug, info, trace, warn};

/// How many entries an empty pending or failed set may keep room for; beyond it, the room is
/// given back once the set empties.
const SPARE_CAPACITY: usize = 64;

pub(super) struct PendingEndpoint<S> {
    id: u64,
    svc: S,
    /// Consecutive failures before this build, for the next backoff.
    failures: u32,
    /// The slow start it had when it was last ready, kept so that a ready endpoint found
    /// not ready for a moment does not start its ramp over.
    ramp_from: Option<Instant>,
    /// Whether it starts slow once ready: built while others were ready to spare it. The
    /// first endpoints of an empty pool take their share at once, as there is no one to take
    /// it instead.
    slow_start: bool,
}

/// The waker the pending endpoints are polled with. Polling every pending endpoint at every
/// drive cost as many readiness polls as there were pending endpoints, for each request the
/// pool served while they waited (a saturated fleet: every endpoint at its concurrency limit,
/// polled two or three times a request); now a pass polls them only once one of them has
/// woken, or one has joined the set since the last pass (it must be polled once, to register
/// this waker).
pub(super) struct PendingWake {
    wake: Arc<PendingWakeState>,
    waker: Waker,
    /// An endpoint joined the pending set since the last pass.
    joined: bool,
}

struct PendingWakeState {
    /// A pending endpoint woke since the last pass.
    woken: AtomicBool,
    /// Whoever drives the cache, as of its last drive.
    driver: AtomicWaker,
}

impl Wake for PendingWakeState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.driver.wake();
    }
}

impl PendingWake {
    pub(super) fn new() -> Self {
        let wake = Arc::new(PendingWakeState {
            woken: AtomicBool::new(false),
            driver: AtomicWaker::new(),
        });
        Self {
            waker: Waker::from(wake.clone()),
            wake,
            joined: false,
        }
    }

    /// Registers the driver's waker; `Some` with the waker to poll the pending endpoints with
    /// if a pass is due.
    fn pass(&mut self, driver: &Waker) -> Option<Waker> {
        self.wake.driver.register(driver);
        let woken = self.wake.woken.swap(false, Ordering::AcqRel);
        (woken || std::mem::take(&mut self.joined)).then(|| self.waker.clone())
    }
}

pub(super) struct FailedEndpoint {
    rebuild_at: Pin<Box<Sleep>>,
    failures: u32,
}

impl<K, T, M> ReadyCache<K, T, M>
where
    K: Hash + Eq + fmt::Debug,
    M: MakeEndpoint<K, T>,
{
    /// Rebuilds endpoints whose backoff has elapsed and promotes pending endpoints that are
    /// ready. Every endpoint still waiting has a waker registered that wakes `cx`'s (the
    /// pending ones through [`PendingWake`], polled again only once one of them has woken).
    pub(crate) fn drive<Req>(&mut self, cx: &mut Context<'_>)
    where
        M::Endpoint: Service<Req>,
        <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
    {
        let mut changed = self.drive_health(cx);
        changed |= self.drive_ramps(cx);

        // Before the pending pass, so a rebuilt endpoint is polled in this same pass.
        let mut i = 0;
        while let Some((_, failed)) = self.failed.get_index_mut(i) {
            if failed.rebuild_at.as_mut().poll(cx).is_pending() {
                i += 1;
                continue;
            }
            if let Some((key, failed)) = self.failed.swap_remove_index(i) {
                info!(
                    ?key,
                    failures = failed.failures,
                    "rebuilding endpoint: backoff elapsed"
                );
                self.metrics.rebuilt();
                self.build(key, failed.failures);
                changed = true;
            }
        }

        // With nothing pending (every endpoint ready: the common case), nothing to register.
        if !self.pending.is_empty() {
            if let Some(waker) = self.pending_wake.pass(cx.waker()) {
                changed |= self.drive_pending(cx, &waker);
            }
        }

        if changed {
            // A burst of pending endpoints (a large `Reset`) leaves the set's storage behind
            // once they are all ready: give it back rather than hold it for every idle one.
            if self.pending.is_empty() && self.pending.capacity() > SPARE_CAPACITY {
                self.pending = Map::default();
            }
            if self.failed.is_empty() && self.failed.capacity() > SPARE_CAPACITY {
                self.failed = Map::default();
            }
            self.sync_gauges();
        }
    }

    /// Polls every pending endpoint with `waker`, promoting the ready ones and evicting the
    /// failed ones; whether any moved.
    fn drive_pending<Req>(&mut self, cx: &mut Context<'_>, waker: &Waker) -> bool
    where
        M::Endpoint: Service<Req>,
        <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
    {
        let mut changed = false;
        let mut pending_cx = Context::from_waker(waker);
        let mut i = 0;
        while let Some((_, pending)) = self.pending.get_index_mut(i) {
            let poll = pending.svc.poll_ready(&mut pending_cx);
            if poll.is_pending() {
                i += 1;
                continue;
            }
            let Some((key, pending)) = self.pending.swap_remove_index(i) else {
                break;
            };
            changed = true;
            match poll {
                Poll::Ready(Ok(())) => {
                    debug!(?key, "endpoint ready");
                    let (id, svc) = (pending.id, pending.svc);
                    self.insert_ready(cx, key, id, svc, pending.ramp_from, pending.slow_start);
                }
                Poll::Ready(Err(error)) => {
                    let failures = pending.failures.saturating_add(1);
                    self.evict(cx, key, failures, error.into());
                }
                Poll::Pending => {}
            }
        }

        changed
    }

    /// Polls the endpoint `r` refers to again, right before a call: `Some` with where it
    /// stands now if it is still ready. `None` if it is gone, or was found not ready (it goes
    /// back to the pending set) or failed (it is evicted).
    pub(crate) fn check_ready<Req>(&mut self, cx: &mut Context<'_>, r: ReadyRef) -> Option<ReadyRef>
    where
        M::Endpoint: Service<Req>,
        <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
    {
        let pos = self.ready.find(r)?;
        let (_, ep) = self.ready.get_mut(pos)?;
        let poll = ep.svc.poll_ready(cx);
        if let Poll::Ready(Ok(())) = poll {
            return Some(ReadyRef { pos, ..r });
        }
        let (key, ep) = self.take_ready_at(pos)?;
        match poll {
            Poll::Ready(Err(error)) => self.evict(cx, key, 1, error.into()),
            _ => {
                trace!(?key, "chosen endpoint no longer ready");
                let pending = PendingEndpoint {
                    id: ep.id,
                    svc: ep.svc,
                    failures: 0,
                    ramp_from: ep.ramp_from,
                    slow_start: false,
                };
                self.insert_pending(key, pending);
            }
        }
        self.sync_gauges();
        None
    }

    /// Adds an endpoint to the pending set; the next drive polls it.
    fn insert_pending(&mut self, key: K, pending: PendingEndpoint<M::Endpoint>) {
        self.pending.insert(key, pending);
        self.pending_wake.joined = true;
    }

    /// Builds the endpoint for `key` from its target, with a new instance id, and queues it
    /// to be driven to readiness.
    pub(super) fn build(&mut self, key: K, failures: u32) {
        let Some(target) = self.targets.get(&key) else {
            return;
        };
        let svc = self.maker.make_endpoint(&key, &target.target);
        let slow_start = self.health.slow_start.is_some() && !self.ready.is_empty();
        let id = self.next_id;
        self.next_id += 1;
        self.insert_pending(
            key,
            PendingEndpoint {
                id,
                svc,
                failures,
                ramp_from: None,
                slow_start,
            },
        );
    }

    /// Moves an endpoint whose readiness failed to the failed set, to be rebuilt after its
    /// backoff.
    fn evict(&mut self, cx: &mut Context<'_>, key: K, failures: u32, error: BoxError)
    where
        K: fmt::Debug,
    {
        let delay = self.backoff.wait(failures.saturating_sub(1));
        warn!(?key, %error, failures, ?delay, "evicting endpoint: readiness failed");
        self.metrics.evicted();
        let mut rebuild_at = Box::pin(tokio::time::sleep(delay));
        // Registers the timer with this task now, so `Pending` from the pool has a waker
        // behind it. The delay is never zero, so this cannot complete here.
        let _ = rebuild_at.as_mut().poll(cx);
        self.failed.insert(
            key,
            FailedEndpoint {
                rebuild_at,
                failures,
            },
        );
    }
}
