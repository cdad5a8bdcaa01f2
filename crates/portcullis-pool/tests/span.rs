//! The caller's span travels with the request and is entered around the dispatch: the pool's
//! `call` runs inside it, though in the worker's task, so whatever the endpoint logs carries
//! the request's context.

use portcullis_pool::{EndpointCounts, Pool, PoolQueue, Update};
use portcullis_test::{discovery, pool};
use std::{
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::Service;

/// A pool that notes the name of the span current when it is called.
struct Recording<P> {
    inner: P,
    spans: Arc<Mutex<Vec<Option<&'static str>>>>,
}

impl<P: Service<&'static str>> Service<&'static str> for Recording<P> {
    type Response = P::Response;
    type Error = P::Error;
    type Future = P::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), P::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: &'static str) -> Self::Future {
        let name = tracing::Span::current().metadata().map(|m| m.name());
        self.spans.lock().unwrap().push(name);
        self.inner.call(request)
    }
}

impl<P: Pool<&'static str, u16, &'static str>> Pool<&'static str, u16, &'static str>
    for Recording<P>
{
    fn update_pool(&mut self, update: Update<&'static str, u16>) {
        self.inner.update_pool(update);
    }

    fn poll_pool(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), P::Error>> {
        self.inner.poll_pool(cx)
    }

    fn endpoints(&self) -> EndpointCounts {
        self.inner.endpoints()
    }
}

#[tokio::test(start_paused = true)]
async fn the_callers_span_is_entered_around_the_dispatch() {
    // A registry keeps track of the current span, which a span needs to be recorded at all.
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());

    let (mock, control) = pool::pair::<&str, u16, &str, &str>();
    control.set_ready(true);
    let spans = Arc::new(Mutex::new(Vec::new()));
    let recording = Recording {
        inner: mock,
        spans: spans.clone(),
    };
    let (_updates, stream) = discovery::channel();
    let config = PoolQueue::builder()
        .capacity(4)
        .failfast_timeout(Duration::from_secs(1));
    let (queue, worker) = config.build_unspawned(recording, stream).unwrap();
    let mut worker = task::spawn(worker);

    let mut traced = queue.clone();
    let mut untraced = queue.clone();
    let mut caller = task::spawn(());
    let _in_span = {
        let span = tracing::info_span!("checkout_request", order = 42);
        let _entered = span.enter();
        assert_ready_ok!(caller.enter(|cx, _| traced.poll_ready(cx)));
        traced.call("with span")
    };
    assert_ready_ok!(caller.enter(|cx, _| untraced.poll_ready(cx)));
    let _no_span = untraced.call("without");

    // The worker runs outside any span; each request's own is entered for its dispatch.
    assert_pending!(worker.poll());
    assert_eq!(*spans.lock().unwrap(), vec![Some("checkout_request"), None]);
}

#[tokio::test(start_paused = true)]
async fn a_direct_dispatch_runs_in_the_callers_span_too() {
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());

    let (mock, control) = pool::pair::<&str, u16, &str, &str>();
    control.set_ready(true);
    let spans = Arc::new(Mutex::new(Vec::new()));
    let recording = Recording {
        inner: mock,
        spans: spans.clone(),
    };
    let (_updates, stream) = discovery::channel();
    let (queue, worker) = PoolQueue::builder()
        .build_unspawned(recording, stream)
        .unwrap();
    let mut worker = task::spawn(worker);
    // The worker's first turn: from now on a caller may dispatch itself.
    assert_pending!(worker.poll());

    let mut traced = queue.clone();
    let mut untraced = queue.clone();
    let mut caller = task::spawn(());
    let _in_span = {
        let span = tracing::info_span!("checkout_request", order = 42);
        let _entered = span.enter();
        assert_ready_ok!(caller.enter(|cx, _| traced.poll_ready(cx)));
        traced.call("with span")
    };
    assert_ready_ok!(caller.enter(|cx, _| untraced.poll_ready(cx)));
    let _no_span = untraced.call("without");

    assert_eq!(*spans.lock().unwrap(), vec![Some("checkout_request"), None]);
    assert_eq!(queue.metrics().snapshot().direct_dispatches, 2);
}
