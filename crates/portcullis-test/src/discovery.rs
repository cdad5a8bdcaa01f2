//! Discovery streams for tests: [`channel`], fed by hand, and [`scripted`], which yields
//! updates on tokio's clock.

use crate::{BoxError, MockError};
use futures_core::Stream;
use portcullis_pool::Update;
use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{sync::mpsc, time::Sleep};

/// A discovery stream fed by a [`DiscoverySender`]. It ends when every sender is dropped.
pub fn channel<K, T>() -> (DiscoverySender<K, T>, DiscoveryStream<K, T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (DiscoverySender { tx }, DiscoveryStream { rx })
}

/// Sends updates (or an error) to a [`DiscoveryStream`].
pub struct DiscoverySender<K, T> {
    tx: mpsc::UnboundedSender<Result<Update<K, T>, BoxError>>,
}

/// The receiving end of [`channel`]: a `TryStream` of [`Update`]s.
pub struct DiscoveryStream<K, T> {
    rx: mpsc::UnboundedReceiver<Result<Update<K, T>, BoxError>>,
}

impl<K, T> DiscoverySender<K, T> {
    /// Sends an update. Returns `false` if the stream has been dropped.
    pub fn send(&self, update: Update<K, T>) -> bool {
        self.tx.send(Ok(update)).is_ok()
    }

    /// Sends `Update::Add` of one endpoint.
    pub fn add(&self, key: K, target: T) -> bool {
        self.send(Update::Add(vec![(key, target)]))
    }

    /// Sends `Update::Remove` of one endpoint.
    pub fn remove(&self, key: K) -> bool {
        self.send(Update::Remove(vec![key]))
    }

    /// Sends a discovery error with this message.
    pub fn fail(&self, message: impl Into<String>) -> bool {
        self.tx
            .send(Err(Box::new(MockError(message.into()))))
            .is_ok()
    }

    /// Whether the stream has been dropped (for instance, with the worker that owned it).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl<K, T> Clone for DiscoverySender<K, T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<K, T> Stream for DiscoveryStream<K, T> {
    type Item = Result<Update<K, T>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// One step of a [`scripted`] discovery stream.
#[derive(Debug)]
pub enum Step<K, T> {
    /// Yield this update.
    Update(Update<K, T>),
    /// Yield an error with this message.
    Fail(String),
}

/// A discovery stream that yields each step after its delay (counted from the previous step,
/// on tokio's clock), then ends.
///
/// ```
/// use portcullis_pool::Update;
/// use portcullis_test::discovery::{scripted, Step};
/// use std::time::Duration;
///
/// let stream = scripted(vec![
///     (Duration::ZERO, Step::Update(Update::Add(vec![("a", 1)]))),
///     (Duration::from_secs(60), Step::Update(Update::Remove(vec!["a"]))),
/// ]);
/// # drop(stream);
/// ```
pub fn scripted<K, T>(steps: Vec<(Duration, Step<K, T>)>) -> Scripted<K, T> {
    Scripted {
        steps: steps.into(),
        sleep: None,
    }
}

/// The stream [`scripted`] returns.
pub struct Scripted<K, T> {
    steps: VecDeque<(Duration, Step<K, T>)>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<K, T> Unpin for Scripted<K, T> {}

impl<K, T> Stream for Scripted<K, T> {
    type Item = Result<Update<K, T>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some((delay, _)) = this.steps.front() else {
            return Poll::Ready(None);
        };
        let delay = *delay;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.sleep = None;
        match this.steps.pop_front() {
            Some((_, Step::Update(update))) => Poll::Ready(Some(Ok(update))),
            Some((_, Step::Fail(message))) => Poll::Ready(Some(Err(Box::new(MockError(message))))),
            None => Poll::Ready(None),
        }
    }
}

impl<K, T> fmt::Debug for DiscoverySender<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoverySender")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

impl<K, T> fmt::Debug for DiscoveryStream<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryStream").finish_non_exhaustive()
    }
}

impl<K, T> fmt::Debug for Scripted<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scripted")
            .field("remaining", &self.steps.len())
            .finish()
    }
}
