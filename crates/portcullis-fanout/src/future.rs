//! The response future: every peer call of one fan-out lives inside it.

use crate::config::{Config, SharedLimit};
use crate::error::FanOutError;
use crate::in_flight::InFlight;
use crate::metrics::FanOutMetrics;
use crate::peer_call::PeerCall;
use crate::policy::Policy;
use crate::report::{Counts, Outcome, Report, Slot};
use pin_project_lite::pin_project;
use portcullis_pool::time::deadline_after;
use portcullis_pool::PolledAfterCompletion;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{sleep_until, Instant, Sleep};
use tokio_util::sync::PollSemaphore;
use tower::util::ServiceExt;
use tower_service::Service;

pin_project! {
    /// The future returned by [`FanOut`](crate::FanOut)'s `call`.
    ///
    /// It owns every peer call of the fan-out (no task is spawned), so dropping it cancels them
    /// all. It resolves to a [`Report`] once the [`Policy`] is settled, every peer has ended, or
    /// the overall deadline has elapsed; to a [`FanOutError`] only if the call could not start.
    ///
    /// Deadlines use tokio's timer: poll this future inside a tokio runtime with time enabled.
    pub struct ResponseFuture<K, S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        overall: Option<Sleep>,
        span: tracing::Span,
        state: State<K, S, Req>,
    }
}

// Boxing `Running` to even out the variants would cost an allocation on every fan-out to save
// space only on calls refused before they start.
#[allow(clippy::large_enum_variant)]
enum State<K, S, Req>
where
    S: Service<Req>,
{
    Refused(Option<FanOutError>),
    Running(Running<K, S, Req>),
}

/// One fan-out in progress. The per-peer path (`top_up`, `settle`) touches only this struct:
/// counts are kept here and published to the shared [`FanOutMetrics`] once, at the end.
struct Running<K, S, Req>
where
    S: Service<Req>,
{
    keys: Arc<Vec<K>>,
    services: Arc<Vec<S>>,
    /// Cloned for every peer but the last, which takes it.
    request: Option<Req>,
    policy: Policy,
    max_in_flight: usize,
    per_peer_timeout: Option<Duration>,
    deadline: Option<Instant>,
    limit: Option<PollSemaphore>,
    in_flight: InFlight<PeerCall<S, Req>>,
    next: usize,
    slots: Vec<Slot<S::Response, S::Error>>,
    counts: Counts,
    peak_in_flight: usize,
    started: Instant,
    /// The clock as read once in this poll (see `Running::now`).
    now: Option<Instant>,
    /// The last latency computed, with the instants it was computed from.
    last_latency: Option<(Instant, Instant, Duration)>,
    /// Per-peer deadline timers of finished calls, reset and reused by the next ones, so a
    /// fan-out allocates at most `max_in_flight` of them.
    spare_timers: Vec<Pin<Box<Sleep>>>,
    metrics: FanOutMetrics,
    done: bool,
}

// === impl ResponseFuture ===

impl<K, S, Req> ResponseFuture<K, S, Req>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        keys: Arc<Vec<K>>,
        services: Arc<Vec<S>>,
        request: Req,
        config: &Config,
        limit: Option<&SharedLimit>,
        metrics: &FanOutMetrics,
    ) -> Self {
        let peers = services.len();
        let started = Instant::now();
        metrics.fan_out_started();
        let span = tracing::debug_span!("fan_out", peers, policy = ?config.policy);
        let running = Running {
            keys,
            services,
            request: Some(request),
            policy: config.policy,
            max_in_flight: config.max_in_flight,
            per_peer_timeout: config.per_peer_timeout,
            deadline: config
                .overall_timeout
                .map(|timeout| deadline_after(started, timeout)),
            limit: limit.map(|l| PollSemaphore::new(l.semaphore())),
            in_flight: InFlight::with_capacity(config.max_in_flight.min(peers)),
            next: 0,
            slots: (0..peers).map(|_| Slot::NOT_STARTED).collect(),
            counts: Counts::default(),
            peak_in_flight: 0,
            started,
            // Not `started`: the first poll may come later, and peer deadlines count from it.
            now: None,
            last_latency: None,
            spare_timers: Vec::new(),
            metrics: metrics.clone(),
            done: false,
        };
        Self {
            overall: None,
            span,
            state: State::Running(running),
        }
    }

    pub(crate) fn refused(error: FanOutError, metrics: &FanOutMetrics) -> Self {
        metrics.refused();
        Self {
            overall: None,
            span: tracing::Span::none(),
            state: State::Refused(Some(error)),
        }
    }
}

impl<K, S, Req> Future for ResponseFuture<K, S, Req>
where
    K: fmt::Debug,
    S: Service<Req> + Clone,
    Req: Clone,
{
    type Output = Result<Report<K, S::Response, S::Error>, FanOutError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        match this.state {
            State::Refused(error) => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Ready(Err(FanOutError::PolledAfterCompletion(
                    PolledAfterCompletion::new(),
                ))),
            },
            State::Running(running) if running.done => Poll::Ready(Err(
                FanOutError::PolledAfterCompletion(PolledAfterCompletion::new()),
            )),
            State::Running(running) => Poll::Ready(Ok(ready!(running.poll(this.overall, cx)))),
        }
    }
}

impl<K, S, Req> fmt::Debug for ResponseFuture<K, S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Refused(error) => f
                .debug_struct("ResponseFuture")
                .field("refused", error)
                .finish(),
            State::Running(r) => f
                .debug_struct("ResponseFuture")
                .field("peers", &r.slots.len())
                .field("started_peers", &r.next)
                .field("in_flight", &r.in_flight.len())
                .field("counts", &r.counts)
                .field("policy", &r.policy)
                .field("done", &r.done)
                .finish(),
        }
    }
}

// === impl Running ===

impl<K, S, Req> Running<K, S, Req>
where
    K: fmt::Debug,
    S: Service<Req> + Clone,
    Req: Clone,
{
    fn poll(
        &mut self,
        mut overall: Pin<&mut Option<Sleep>>,
        cx: &mut Context<'_>,
    ) -> Poll<Report<K, S::Response, S::Error>> {
        loop {
            self.top_up(cx);
            match self.in_flight.poll_next(cx) {
                Poll::Ready(Some(ended)) => {
                    let latency = self.latency_since(ended.started);
                    if let Some(timer) = ended.timer {
                        self.spare_timers.push(timer);
                    }
                    self.settle(ended.index, ended.outcome, latency);
                    if self.policy.is_settled(&self.counts, self.slots.len()) {
                        return Poll::Ready(self.finish(false));
                    }
                }
                Poll::Ready(None) if self.next >= self.slots.len() => {
                    return Poll::Ready(self.finish(false));
                }
                // Peer calls pending, or none in flight while waiting for a shared permit.
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        // The next poll is a later moment.
        self.now = None;
        // Completions are taken before the deadline is looked at, so a peer that answered by
        // the deadline is reported as answered.
        if let Some(deadline) = self.deadline {
            if overall.is_none() {
                overall.set(Some(sleep_until(deadline)));
            }
        }
        if let Some(sleep) = overall.as_pin_mut() {
            if sleep.poll(cx).is_ready() {
                return Poll::Ready(self.finish(true));
            }
        }
        Poll::Pending
    }

    /// The clock, read at most once per poll: peer calls that start or end in the same poll
    /// share an instant, which spares a clock read per peer on the per-peer path (latencies are
    /// measured to the poll in which a call was seen to end).
    fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }

    /// From `started` to this poll's instant. Peers that start in one poll and end in another
    /// share both instants, so the last result is kept rather than subtracted again.
    fn latency_since(&mut self, started: Instant) -> Duration {
        let now = self.now();
        match self.last_latency {
            Some((s, n, latency)) if s == started && n == now => latency,
            _ => {
                let latency = now.saturating_duration_since(started);
                self.last_latency = Some((started, now, latency));
                latency
            }
        }
    }

    /// Starts peer calls until `max_in_flight` are in flight, the shared limit has no permit,
    /// or every peer has been called.
    fn top_up(&mut self, cx: &mut Context<'_>) {
        let peers = self.services.len();
        while self.in_flight.len() < self.max_in_flight && self.next < peers {
            // Taking the permit only when the call starts means a permit is never held by a
            // peer call that is not running.
            let permit = match &mut self.limit {
                None => None,
                Some(limit) => match limit.poll_acquire(cx) {
                    Poll::Ready(Some(permit)) => Some(permit),
                    // Only closed if someone closed the semaphore behind our back: stop limiting
                    // rather than stall forever.
                    Poll::Ready(None) => {
                        self.limit = None;
                        None
                    }
                    Poll::Pending => break,
                },
            };
            let index = self.next;
            self.next += 1;
            let request = if self.next == peers {
                self.request.take()
            } else {
                self.request.clone()
            };
            let (Some(request), Some(service)) = (request, self.services.get(index)) else {
                break;
            };
            let call = service.clone().oneshot(request);
            let started = self.now();
            let deadline = self
                .per_peer_timeout
                .map(|timeout| deadline_after(started, timeout));
            let call = PeerCall::new(
                index,
                started,
                permit,
                call,
                deadline,
                &mut self.spare_timers,
            );
            self.in_flight.push(call);
        }
        self.peak_in_flight = self.peak_in_flight.max(self.in_flight.len());
    }

    fn settle(&mut self, index: usize, outcome: Outcome<S::Response, S::Error>, latency: Duration) {
        if let Some(key) = self.keys.get(index) {
            match outcome {
                Outcome::TimedOut => tracing::debug!(peer = ?key, ?latency, "peer call timed out"),
                _ => {
                    tracing::debug!(peer = ?key, outcome = outcome.as_str(), ?latency, "peer call ended")
                }
            }
        }
        self.counts.add(&outcome);
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Slot {
                outcome,
                latency: Some(latency),
            };
        }
    }

    fn finish(&mut self, overall_timed_out: bool) -> Report<K, S::Response, S::Error> {
        // Calls cut short by the overall deadline did not end on their own: they have no
        // latency, in the report as in the latency histogram.
        if overall_timed_out {
            for call in self.in_flight.iter() {
                if let Some(slot) = self.slots.get_mut(call.index()) {
                    *slot = Slot {
                        outcome: Outcome::TimedOut,
                        latency: None,
                    };
                    self.counts.timed_out += 1;
                }
            }
            tracing::warn!(
                in_flight = self.in_flight.len(),
                not_started = self.slots.len() - self.next,
                "fan-out overall deadline elapsed"
            );
        }
        // Stragglers are dropped (cancelled) before the caller sees the report, and so is a
        // pending acquire of the shared limit, whose permit would otherwise stay parked in it
        // until the finished future is dropped.
        self.in_flight.clear();
        self.limit = None;
        self.counts.cancelled = self.slots.len() - self.counts.finished();
        let met = self.policy.is_met(&self.counts, self.slots.len());
        self.done = true;
        self.metrics.fan_out_ended(
            &self.counts,
            Some(met),
            overall_timed_out,
            self.peak_in_flight,
            &self.slots,
        );
        tracing::debug!(met, counts = ?self.counts, peak_in_flight = self.peak_in_flight, "fan-out ended");
        Report {
            keys: self.keys.clone(),
            slots: std::mem::take(&mut self.slots),
            policy: self.policy,
            met,
            overall_timed_out,
            counts: self.counts,
            peak_in_flight: self.peak_in_flight,
            elapsed: self.now().saturating_duration_since(self.started),
        }
    }
}

impl<K, S, Req> Drop for Running<K, S, Req>
where
    S: Service<Req>,
{
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The caller went away: whatever had not ended is cancelled with the peer futures,
        // which drop right after this.
        self.counts.cancelled = self.slots.len() - self.counts.finished();
        self.metrics
            .fan_out_ended(&self.counts, None, false, self.peak_in_flight, &self.slots);
        tracing::debug!(counts = ?self.counts, "fan-out dropped before it ended");
    }
}

#[cfg(test)]
mod tests {
    use crate::{FanOut, Outcome};
    use std::convert::Infallible;
    use std::future::{ready, Ready};
    use std::task::{Context, Poll};
    use std::time::Duration;
    use tokio_test::{assert_pending, assert_ready, task};
    use tower_service::Service;

    /// A peer that is never ready, or answers `()` at once.
    #[derive(Clone, Debug)]
    struct Peer {
        ready: bool,
    }

    impl Service<()> for Peer {
        type Response = ();
        type Error = Infallible;
        type Future = Ready<Result<(), Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.ready {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }

        fn call(&mut self, (): ()) -> Self::Future {
            ready(Ok(()))
        }
    }

    fn assert_send<T: Send>(_: &T) {}

    #[tokio::test(start_paused = true)]
    async fn waiting_for_readiness_counts_against_the_per_peer_deadline() {
        let mut fanout = FanOut::builder()
            .per_peer_timeout(Duration::from_millis(50))
            .build([
                ("up", Peer { ready: true }),
                ("stuck", Peer { ready: false }),
            ])
            .unwrap();
        let future = fanout.call(());
        assert_send(&future);
        assert!(format!("{future:?}").contains("peers: 2, started_peers: 0, in_flight: 0"));
        let mut call = task::spawn(future);
        assert_pending!(call.poll());

        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(call.is_woken());
        let report = assert_ready!(call.poll()).unwrap();
        assert_eq!(report.get(&"up"), Some(&Outcome::Response(())));
        assert_eq!(report.get(&"stuck"), Some(&Outcome::TimedOut));
    }

    /// A timeout too long for the clock is practically never, not no deadline at all.
    #[tokio::test(start_paused = true)]
    async fn a_timeout_too_long_for_the_clock_ends_in_the_far_future() {
        use portcullis_pool::time::FAR_FUTURE;
        let mut fanout = FanOut::builder()
            .overall_timeout(Duration::MAX)
            .build([("stuck", Peer { ready: false })])
            .unwrap();
        let mut call = task::spawn(fanout.call(()));
        assert_pending!(call.poll());

        tokio::time::advance(FAR_FUTURE - Duration::from_millis(1)).await;
        assert_pending!(call.poll());
        tokio::time::advance(Duration::from_millis(1)).await;
        let report = assert_ready!(call.poll()).unwrap();
        assert!(report.overall_timed_out());
        assert_eq!(report.get(&"stuck"), Some(&Outcome::TimedOut));
    }

    #[tokio::test(start_paused = true)]
    async fn polled_after_completion_is_a_typed_error_not_a_hang() {
        use crate::FanOutError;
        use portcullis_pool::PolledAfterCompletion;
        let mut fanout = FanOut::builder()
            .build([("up", Peer { ready: true })])
            .unwrap();
        let mut call = task::spawn(fanout.call(()));
        assert!(assert_ready!(call.poll()).is_ok());
        assert_eq!(
            assert_ready!(call.poll()).unwrap_err(),
            FanOutError::PolledAfterCompletion(PolledAfterCompletion::new())
        );

        // A refused call (quorum above the peer set) answers once, then the same way.
        let mut fanout = FanOut::builder()
            .policy(crate::Policy::Quorum(2))
            .build([("up", Peer { ready: true })])
            .unwrap();
        let mut call = task::spawn(fanout.call(()));
        assert!(matches!(
            assert_ready!(call.poll()),
            Err(FanOutError::QuorumExceedsPeers { .. })
        ));
        assert_eq!(
            assert_ready!(call.poll()).unwrap_err(),
            FanOutError::PolledAfterCompletion(PolledAfterCompletion::new())
        );
    }
}
