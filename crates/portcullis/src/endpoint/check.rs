//! Active health checks, as Envoy's: each endpoint's backend is asked every `interval` whether
//! it serves, and an endpoint whose checks fail `unhealthy_threshold` times in a row is not
//! ready until `healthy_threshold` checks in a row pass.
//!
//! A failing check makes the endpoint *unready*, not ejected: the pool picks among the others
//! and panic mode is unchanged (ejection is for outliers among answers; a failed check says
//! the backend itself asked not to be used). The checks run in a task of their own per
//! endpoint, spawned when the endpoint is made and stopped when it is dropped, over the
//! endpoint's own connection.

use crate::BoxError;
use futures_core::future::BoxFuture;
use futures_util::task::AtomicWaker;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// What an active health check asks, and how often: see the [module](self). Given to
/// [`grpc::ChannelBuilder::health_check`](crate::grpc::ChannelBuilder::health_check) or
/// [`http::ClientBuilder::health_check`](crate::http::ClientBuilder::health_check), which
/// check it when they build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub(crate) ask: Ask,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) unhealthy_threshold: u32,
    pub(crate) healthy_threshold: u32,
}

/// What a check asks the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    /// `grpc.health.v1.Health/Check` for a service name (`""`: the server as a whole);
    /// `SERVING` passes.
    Grpc(String),
    /// `GET` of a path; a 2xx passes.
    Http(String),
}

impl HealthCheck {
    /// Every 5 s (Envoy's examples use 5 to 10 s).
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
    /// 1 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    /// 2 failures in a row make an endpoint unready.
    pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 2;
    /// 1 pass makes it ready again.
    pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 1;

    /// `grpc.health.v1.Health/Check` of `service` (`""`: the server as a whole); `SERVING`
    /// passes, any other answer or error fails.
    pub fn grpc(service: impl Into<String>) -> Self {
        Self::new(Ask::Grpc(service.into()))
    }

    /// `GET path` (`/healthz`, say); a 2xx passes, any other answer or error fails.
    pub fn http(path: impl Into<String>) -> Self {
        Self::new(Ask::Http(path.into()))
    }

    fn new(ask: Ask) -> Self {
        Self {
            ask,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            unhealthy_threshold: Self::DEFAULT_UNHEALTHY_THRESHOLD,
            healthy_threshold: Self::DEFAULT_HEALTHY_THRESHOLD,
        }
    }

    /// How often each endpoint is checked.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long one check may take before it fails.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Failures in a row that make an endpoint unready.
    pub fn unhealthy_threshold(mut self, n: u32) -> Self {
        self.unhealthy_threshold = n;
        self
    }

    /// Passes in a row that make an unready endpoint ready again.
    pub fn healthy_threshold(mut self, n: u32) -> Self {
        self.healthy_threshold = n;
        self
    }

    /// Refuses a zero interval, timeout or threshold, and a gRPC check over HTTP or the
    /// reverse (`for_grpc`: the client is a gRPC channel).
    pub(crate) fn check(&self, for_grpc: bool) -> Result<(), HealthCheckError> {
        let refuse = |reason| Err(HealthCheckError { reason });
        if self.interval.is_zero() {
            return refuse("a zero interval would check in a hot loop");
        }
        if self.timeout.is_zero() {
            return refuse("a zero timeout fails every check");
        }
        if self.unhealthy_threshold == 0 || self.healthy_threshold == 0 {
            return refuse("a threshold of 0 checks nothing");
        }
        match (&self.ask, for_grpc) {
            (Ask::Grpc(_), false) => refuse("a gRPC health check on an HTTP client"),
            (Ask::Http(path), _) if !path.starts_with('/') => {
                refuse("an HTTP health check path starts with '/'")
            }
            _ => Ok(()),
        }
    }
}

/// Why a [`HealthCheck`] was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckError {
    reason: &'static str,
}

impl fmt::Display for HealthCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid health check: {}", self.reason)
    }
}

impl std::error::Error for HealthCheckError {}

/// One check of one backend: whether it passed.
pub(crate) type Probe = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// An endpoint behind its active health checks: not ready while they fail.
pub(crate) struct Checked<S> {
    inner: S,
    state: Arc<CheckState>,
    /// The checks' task, stopped when the last clone goes.
    _task: Arc<AbortOnDrop>,
}

struct CheckState {
    healthy: AtomicBool,
    waker: AtomicWaker,
}

struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl<S> Checked<S> {
    /// `inner`, never checked: always as ready as it is.
    pub(crate) fn unchecked(inner: S) -> Self {
        Self {
            inner,
            state: Arc::new(CheckState {
                healthy: AtomicBool::new(true),
                waker: AtomicWaker::new(),
            }),
            _task: Arc::new(AbortOnDrop(None)),
        }
    }

    /// `inner`, checked by `probe` as `config` says, on the current runtime (none: not
    /// checked, with a warning).
    pub(crate) fn new(inner: S, config: &HealthCheck, probe: Probe, name: &str) -> Self {
        let state = Arc::new(CheckState {
            healthy: AtomicBool::new(true),
            waker: AtomicWaker::new(),
        });
        let task = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Some(
                runtime
                    .spawn(run_checks(
                        config.clone(),
                        probe,
                        state.clone(),
                        name.to_string(),
                    ))
                    .abort_handle(),
            ),
            Err(_) => {
                tracing::warn!(endpoint = name, "no runtime: health checks not run");
                None
            }
        };
        Self {
            inner,
            state,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }
}

async fn run_checks(config: HealthCheck, probe: Probe, state: Arc<CheckState>, name: String) {
    let (mut passes, mut failures) = (0u32, 0u32);
    let mut interval = tokio::time::interval(config.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let passed = tokio::time::timeout(config.timeout, probe())
            .await
            .unwrap_or(false);
        if passed {
            passes += 1;
            failures = 0;
        } else {
            failures += 1;
            passes = 0;
        }
        let healthy = state.healthy.load(Ordering::Relaxed);
        if healthy && failures >= config.unhealthy_threshold {
            tracing::info!(endpoint = %name, failures, "health checks failing: endpoint not ready");
            state.healthy.store(false, Ordering::Relaxed);
        } else if !healthy && passes >= config.healthy_threshold {
            tracing::info!(endpoint = %name, passes, "health checks passing: endpoint ready");
            state.healthy.store(true, Ordering::Relaxed);
            state.waker.wake();
        }
    }
}

impl<S, Req> Service<Req> for Checked<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = futures_util::future::MapErr<S::Future, fn(S::Error) -> BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if !self.state.healthy.load(Ordering::Relaxed) {
            self.state.waker.register(cx.waker());
            // Again, after registering: a pass that came in between is not missed.
            if !self.state.healthy.load(Ordering::Relaxed) {
                return Poll::Pending;
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        use futures_util::TryFutureExt;
        self.inner
            .call(req)
            .map_err(Into::into as fn(S::Error) -> BoxError)
    }
}

impl<S: Clone> Clone for Checked<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            state: self.state.clone(),
            _task: self._task.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Checked<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checked")
            .field("inner", &self.inner)
            .field("healthy", &self.state.healthy.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use tokio_test::{assert_pending, assert_ready_ok, task};

    #[test]
    fn bad_settings_are_refused() {
        let ok = HealthCheck::http("/healthz");
        assert_eq!(ok.check(false), Ok(()));
        assert_eq!(HealthCheck::grpc("").check(true), Ok(()));
        for bad in [
            ok.clone().interval(Duration::ZERO),
            ok.clone().timeout(Duration::ZERO),
            ok.clone().unhealthy_threshold(0),
            ok.clone().healthy_threshold(0),
            HealthCheck::http("healthz"),
        ] {
            assert!(bad.check(false).is_err(), "{bad:?}");
        }
        assert!(HealthCheck::grpc("").check(false).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn failing_checks_make_the_endpoint_unready_and_passing_ones_ready_again() {
        let passing = Arc::new(AtomicBool::new(true));
        let checks = Arc::new(AtomicU32::new(0));
        let probe: Probe = {
            let (passing, checks) = (passing.clone(), checks.clone());
            Arc::new(move || {
                checks.fetch_add(1, Ordering::Relaxed);
                let passed = passing.load(Ordering::Relaxed);
                Box::pin(async move { passed })
            })
        };
        let config = HealthCheck::http("/")
            .interval(Duration::from_secs(1))
            .unhealthy_threshold(2)
            .healthy_threshold(2);
        let mut svc = Checked::new(
            tower::service_fn(|()| async { Ok::<_, BoxError>(()) }),
            &config,
            probe,
            "a",
        );
        let mut t = task::spawn(());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_ready_ok!(t.enter(|cx, _| svc.poll_ready(cx)));

        passing.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_ready_ok!(
            t.enter(|cx, _| svc.poll_ready(cx)),
            "one failure is not enough"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_pending!(t.enter(|cx, _| svc.poll_ready(cx)));

        passing.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_pending!(
            t.enter(|cx, _| svc.poll_ready(cx)),
            "one pass is not enough"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(t.is_woken());
        assert_ready_ok!(t.enter(|cx, _| svc.poll_ready(cx)));
        assert!(checks.load(Ordering::Relaxed) >= 5);

        // The checks stop with the endpoint.
        drop(svc);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let after = checks.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(checks.load(Ordering::Relaxed), after);
    }
}
