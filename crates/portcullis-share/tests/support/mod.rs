//! A simulated multiplexed connection for the scenario tests: a `SimEndpoint` (latency,
//! faults) behind a limit of concurrent streams shared by every clone, as an HTTP/2
//! connection's `SETTINGS_MAX_CONCURRENT_STREAMS` is. A stream is held from `poll_ready` until
//! its response future completes or is dropped, so a caller that never polls its responses
//! keeps its streams: the resource a slow consumer can take from the others.

#![allow(dead_code, unreachable_pub)]

use pin_project_lite::pin_project;
use portcullis_test::endpoint::{SimControl, SimEndpoint, SimError, SimFuture};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;
use tower::Service;

/// One simulated connection; clones share its streams and its replica.
#[derive(Clone, Debug)]
pub struct SimConn {
    endpoint: SimEndpoint<u32, u32>,
    streams: PollSemaphore,
    stream: Option<Arc<OwnedSemaphorePermit>>,
}

impl SimConn {
    pub fn new(control: &SimControl, max_streams: usize) -> Self {
        Self {
            endpoint: control.endpoint(|req: u32| req),
            streams: PollSemaphore::new(Arc::new(Semaphore::new(max_streams))),
            stream: None,
        }
    }
}

pin_project! {
    #[derive(Debug)]
    pub struct SimConnFuture {
        #[pin]
        inner: SimFuture<u32>,
        stream: Option<Arc<OwnedSemaphorePermit>>,
    }
}

impl Service<u32> for SimConn {
    type Response = u32;
    type Error = SimError;
    type Future = SimConnFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SimError>> {
        ready!(self.endpoint.poll_ready(cx))?;
        if self.stream.is_none() {
            // Never closed.
            self.stream = ready!(self.streams.poll_acquire(cx)).map(Arc::new);
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> SimConnFuture {
        SimConnFuture {
            inner: self.endpoint.call(req),
            stream: self.stream.take(),
        }
    }
}

impl Future for SimConnFuture {
    type Output = Result<u32, SimError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        this.stream.take();
        Poll::Ready(out)
    }
}

/// The controls of every connection a maker built, in order.
#[derive(Clone, Debug, Default)]
pub struct Built(Arc<Mutex<Vec<SimControl>>>);

impl Built {
    /// A maker of fresh connections (a new replica control each), with `latency` and
    /// `max_streams`, recording each control.
    pub fn maker<K>(
        &self,
        latency: std::time::Duration,
        max_streams: usize,
    ) -> impl Fn(&K) -> SimConn + Send + Sync + 'static {
        let built = self.clone();
        move |_: &K| {
            let control = SimControl::new();
            control.set_latency(latency);
            built.0.lock().unwrap().push(control.clone());
            SimConn::new(&control, max_streams)
        }
    }

    pub fn control(&self, i: usize) -> SimControl {
        self.0.lock().unwrap()[i].clone()
    }

    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Connections (and clones) built and not yet dropped.
    pub fn alive(&self) -> usize {
        self.0.lock().unwrap().iter().map(SimControl::alive).sum()
    }
}
