//! Shared set-up for the queue's scenario tests: a queue over the mock pool whose worker the
//! test polls by hand, so that every step is deterministic.
#![allow(dead_code, unreachable_pub)]

use portcullis_pool::{queue::Worker, BoxError, PoolQueue};
use portcullis_test::{
    discovery::{self, DiscoverySender, DiscoveryStream},
    pool::{self, MockPool, MockResponse, PoolControl},
};
use std::{
    task::{Context, Poll},
    time::Duration,
};
use tokio_test::task::{self, Spawn};
use tower::Service;

pub type Req = &'static str;
pub type Rsp = &'static str;
pub type Queue = PoolQueue<Req, MockResponse<Rsp>>;
pub type Control = PoolControl<&'static str, u16, Req, Rsp>;
pub type Discovery = DiscoverySender<&'static str, u16>;
pub type QueueWorker = Worker<
    MockPool<&'static str, u16, Req, Rsp>,
    DiscoveryStream<&'static str, u16>,
    &'static str,
    u16,
    Req,
>;

/// A response future under a mock task.
pub type Spawned = Spawn<<Queue as Service<Req>>::Future>;

pub const FAILFAST: Duration = Duration::from_secs(1);

pub struct Harness {
    pub queue: Queue,
    pub worker: Spawn<QueueWorker>,
    pub control: Control,
    pub discovery: Discovery,
}

impl Harness {
    /// One request waits until the failfast timeout and is failed with `FailFast`; the queue
    /// is then in failfast.
    pub async fn enter_failfast(&mut self) {
        let mut first = Caller::new(&self.queue).send("a");
        tokio_test::assert_pending!(self.worker.poll());
        tokio::time::advance(FAILFAST).await;
        tokio_test::assert_pending!(self.worker.poll());
        downcast::<portcullis_pool::FailFast>(&tokio_test::assert_ready_err!(first.poll()));
    }
}

pub fn harness(capacity: usize) -> Harness {
    harness_with(
        PoolQueue::builder()
            .capacity(capacity)
            .failfast_timeout(FAILFAST),
    )
}

/// A harness whose queue is built with `config`.
pub fn harness_with(config: portcullis_pool::PoolQueueBuilder) -> Harness {
    let (mock, control) = pool::pair();
    let (discovery, stream) = discovery::channel();
    let (queue, worker) = config.build_unspawned(mock, stream).unwrap();
    Harness {
        queue,
        worker: task::spawn(worker),
        control,
        discovery,
    }
}

/// A caller: its own handle and its own mock task, so a test can see whether it was woken.
pub struct Caller {
    pub queue: Queue,
    pub task: Spawn<()>,
}

impl Caller {
    pub fn new(queue: &Queue) -> Self {
        Self {
            queue: queue.clone(),
            task: task::spawn(()),
        }
    }

    pub fn poll_ready(&mut self) -> Poll<Result<(), BoxError>> {
        let queue = &mut self.queue;
        self.task
            .enter(|cx: &mut Context<'_>, _| Service::<Req>::poll_ready(queue, cx))
    }

    /// Polls ready (which must succeed) and sends the request.
    pub fn send(&mut self, request: Req) -> Spawn<<Queue as Service<Req>>::Future> {
        match self.poll_ready() {
            Poll::Ready(Ok(())) => {}
            other => panic!("caller not ready: {other:?}"),
        }
        task::spawn(self.queue.call(request))
    }
}

/// The error's message and its concrete type, checked.
pub fn downcast<E: std::error::Error + 'static>(error: &BoxError) -> &E {
    error
        .downcast_ref::<E>()
        .unwrap_or_else(|| panic!("expected {}, got {error:?}", std::any::type_name::<E>()))
}
