//! [`Reachable`]: an endpoint that is ready only while its backend can be reached.
//!
//! The HTTP and gRPC endpoints connect inside their calls: a lazily connecting tonic channel,
//! a hyper-util client. So they are always "ready", whether or not their backend accepts
//! connections, and a fleet whose every backend is down fails every call instead of making
//! the pool unready (and the queue fail fast).
//!
//! [`Reachable`] fixes that from outside the connection. When a call fails because its
//! connection could not be made or broke (an I/O error of a connection kind anywhere in the
//! error's `source()` chain: refused, reset, aborted, timed out, unreachable), the endpoint
//! turns *not ready*, and its `poll_ready` probes the backend with a TCP connect after a
//! backoff, doubling from [`DEFAULT_BACKOFF_BASE`](Reachable::DEFAULT_BACKOFF_BASE) up to
//! [`DEFAULT_BACKOFF_MAX`](Reachable::DEFAULT_BACKOFF_MAX). It is ready again once a probe
//! connects; the probe's socket is closed, and the endpoint's own connection is made by its
//! next call. A pool drives a pending endpoint with no request in flight (the `PoolQueue`
//! worker does), so a backend that comes back is seen without a request spent on it.
//!
//! With every backend down, every endpoint is pending, the pool is not ready, and a
//! `PoolQueue` in front fails fast after its failfast timeout, until a probe connects.

use crate::BoxError;
use pin_project_lite::pin_project;
use portcullis_pool::backoff::ExponentialBackoff;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// An endpoint ready only while its backend can be reached; see the [module](self).
pub struct Reachable<S> {
    inner: S,
    authority: Arc<str>,
    /// Set by a response future whose call failed to connect; taken by `poll_ready`.
    down: Arc<AtomicBool>,
    backoff: ExponentialBackoff,
    connect_timeout: Duration,
    /// Failed probes in a row.
    failures: u32,
    /// The probe under way while the backend is unreachable.
    probe: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send>>>,
    /// How a probe checks the backend: a TCP connect to `authority` if `None`.
    check: Option<Check>,
}

/// A probe given to [`Reachable::probe_with`].
type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = io::Result<()>> + Send>> + Send + Sync>;

impl<S> Reachable<S> {
    /// The first wait before probing a backend that refused: 100 ms.
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(100);
    /// The longest wait between probes: 1 s. A probe is one TCP connect, so a dead backend
    /// costs a connect a second, and one that comes back is seen within a second of it.
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(1);
    /// How long a probe's connect may take: 1 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

    /// `inner`, whose backend is at `authority` (`host:port`), with the default backoff and
    /// connect timeout.
    pub fn new(inner: S, authority: impl Into<Arc<str>>) -> Self {
        Self {
            inner,
            authority: authority.into(),
            down: Arc::new(AtomicBool::new(false)),
            backoff: DEFAULT_BACKOFF,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            failures: 0,
            probe: None,
            check: None,
        }
    }

    /// Probes back off by `backoff` (`backoff.wait(n)` after the `n`th failed one in a row).
    pub fn backoff(mut self, backoff: ExponentialBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long a probe's connect may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Probes the backend with `probe` instead of a TCP connect to its authority: the backend
    /// is reachable again once a probe's future gives `Ok`. It is still cut at the
    /// [`connect_timeout`](Self::connect_timeout) and backs off the same way. For a transport
    /// that is not TCP, a check of your own, or a simulated backend in a test.
    ///
    /// ```
    /// use portcullis::endpoint::Reachable;
    /// use std::io;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    ///
    /// let up = Arc::new(AtomicBool::new(true));
    /// let endpoint = tower::service_fn(|()| async { Ok::<_, io::Error>(()) });
    /// let endpoint = Reachable::new(endpoint, "sim:0").probe_with(move || {
    ///     let up = up.load(Ordering::Relaxed);
    ///     async move { if up { Ok(()) } else { Err(io::ErrorKind::ConnectionRefused.into()) } }
    /// });
    /// assert!(!endpoint.is_reconnecting());
    /// ```
    pub fn probe_with<F, Fut>(mut self, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        self.check = Some(Arc::new(move || Box::pin(probe())));
        self
    }

    /// Whether the endpoint is waiting for its backend to be reachable again.
    pub fn is_reconnecting(&self) -> bool {
        self.probe.is_some() || self.down.load(Ordering::Relaxed)
    }

    /// The wrapped endpoint.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn start_probe(&mut self) {
        let wait = self.backoff.wait(self.failures);
        let authority = self.authority.clone();
        let timeout = self.connect_timeout;
        tracing::debug!(%authority, ?wait, failures = self.failures, "backend unreachable; probing");
        let check = self.check.clone();
        self.probe = Some(Box::pin(async move {
            tokio::time::sleep(wait).await;
            let probe = async move {
                match check {
                    Some(check) => check().await,
                    None => tokio::net::TcpStream::connect(&*authority).await.map(drop),
                }
            };
            match tokio::time::timeout(timeout, probe).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "probe timed out")),
            }
        }));
    }
}

/// The default probe backoff: doubling from 100 ms to 1 s (checked when the crate compiles).
const DEFAULT_BACKOFF: ExponentialBackoff =
    match ExponentialBackoff::doubling(Duration::from_millis(100), Duration::from_secs(1)) {
        Ok(backoff) => backoff,
        Err(_) => panic!("the default backoff is valid"),
    };

impl<S, Req> Service<Req> for Reachable<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            if let Some(probe) = self.probe.as_mut() {
                match ready!(probe.as_mut().poll(cx)) {
                    Ok(()) => {
                        tracing::debug!(authority = %self.authority, "backend reachable again");
                        self.probe = None;
                        self.failures = 0;
                    }
                    Err(error) => {
                        tracing::trace!(authority = %self.authority, %error, "probe failed");
                        self.failures = self.failures.saturating_add(1);
                        self.start_probe();
                        continue;
                    }
                }
            } else if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed)
            {
                // Loaded first: a reachable endpoint's poll writes no shared line.
                self.start_probe();
                continue;
            }
            return self.inner.poll_ready(cx).map_err(Into::into);
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
            down: self.down.clone(),
        }
    }
}

pin_project! {
    /// The response future of a [`Reachable`] endpoint: a call that failed to connect marks
    /// the endpoint unreachable.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        down: Arc<AtomicBool>,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        Poll::Ready(result.map_err(|error| {
            let error = error.into();
            if is_connection_error(&*error) {
                this.down.store(true, Ordering::Relaxed);
            }
            error
        }))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S: Clone> Clone for Reachable<S> {
    /// A clone watches the same backend on its own: its own probe, its own backoff.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            authority: self.authority.clone(),
            down: Arc::new(AtomicBool::new(false)),
            backoff: self.backoff,
            connect_timeout: self.connect_timeout,
            failures: 0,
            probe: None,
            check: self.check.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Reachable<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reachable")
            .field("inner", &self.inner)
            .field("authority", &self.authority)
            .field("reconnecting", &self.is_reconnecting())
            .field("failures", &self.failures)
            .finish()
    }
}

/// Whether `error` says the connection could not be made or broke: an I/O error of a
/// connection kind anywhere in its `source()` chain, or hyper's "connection closed".
pub fn is_connection_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::NotConnected
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::AddrNotAvailable
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::BrokenPipe
            ) {
                return true;
            }
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use tokio_test::{assert_ready_ok, task};

    /// An endpoint whose calls fail with a refused connection while `refuse` is set.
    #[derive(Clone)]
    struct Refusing {
        refuse: Arc<AtomicBool>,
        calls: Arc<AtomicU32>,
    }

    impl Service<()> for Refusing {
        type Response = ();
        type Error = io::Error;
        type Future = std::future::Ready<io::Result<()>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: ()) -> Self::Future {
            self.calls.fetch_add(1, Ordering::Relaxed);
            std::future::ready(match self.refuse.load(Ordering::Relaxed) {
                true => Err(io::ErrorKind::ConnectionRefused.into()),
                false => Ok(()),
            })
        }
    }

    #[test]
    fn connection_errors_are_found_down_the_chain() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Wrapper(io::ErrorKind::ConnectionRefused.into());
        assert!(is_connection_error(&refused));
        let other = Wrapper(io::ErrorKind::InvalidData.into());
        assert!(!is_connection_error(&other));
    }

    #[tokio::test]
    async fn a_refused_call_makes_the_endpoint_pending_until_a_probe_connects() {
        // Real sockets, real time: the probe connects to an address of ours, closed at first,
        // then listened on again. Every wait is bounded.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let refuse = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicU32::new(0));
        let backoff =
            ExponentialBackoff::doubling(Duration::from_millis(5), Duration::from_millis(20))
                .unwrap();
        let mut svc = Reachable::new(
            Refusing {
                refuse: refuse.clone(),
                calls: calls.clone(),
            },
            addr.to_string(),
        )
        .backoff(backoff);
        let mut ready = task::spawn(());
        assert_ready_ok!(ready.enter(|cx, _| svc.poll_ready(cx)));
        let error = svc.call(()).await.unwrap_err();
        assert!(is_connection_error(&*error), "{error}");
        assert!(svc.is_reconnecting());

        // Not ready while nothing listens: the probes keep failing.
        let waited = tokio::time::timeout(
            Duration::from_millis(200),
            std::future::poll_fn(|cx| svc.poll_ready(cx)),
        )
        .await;
        assert!(waited.is_err(), "still not ready");
        assert!(svc.failures >= 1, "probes were made and failed");

        // The backend is back: a probe connects and the endpoint is ready, with no call
        // spent on finding out.
        let _listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        refuse.store(false, Ordering::Relaxed);
        let before = calls.load(Ordering::Relaxed);
        let ready_again = tokio::time::timeout(
            Duration::from_secs(20),
            std::future::poll_fn(|cx| svc.poll_ready(cx)),
        )
        .await;
        assert!(matches!(ready_again, Ok(Ok(()))));
        assert!(!svc.is_reconnecting());
        assert_eq!(calls.load(Ordering::Relaxed), before);
        svc.call(()).await.unwrap();
    }
}
