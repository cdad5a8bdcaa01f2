//! [`from_watch`]: a `tokio::sync::watch` of endpoint sets as a stream of [`Update`]s.

use crate::pool::Update;
use futures_core::Stream;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::watch;

/// Waits for the next change; yields the receiver back, or `None` once the sender is gone.
type Changed<C> = Pin<Box<dyn Future<Output = Option<watch::Receiver<C>>> + Send>>;

/// The stream [`from_watch`] returns.
pub struct FromWatch<C> {
    state: State<C>,
}

enum State<C> {
    /// The current set has not been yielded yet.
    Current(watch::Receiver<C>),
    /// The current set was yielded; waiting for the sender to publish another.
    Waiting(Changed<C>),
    /// The sender is gone and every set it published was yielded.
    Ended,
}

/// Turns a [`watch::Receiver`] of complete endpoint sets (a `Vec<(K, T)>`, a
/// `HashMap<K, T>`, any `Clone + IntoIterator<Item = (K, T)>`) into a discovery stream.
///
/// The stream yields [`Update::Reset`] with the set current when it is first polled, then
/// another `Reset` every time the sender publishes. Like every `watch` receiver it sees only
/// the latest set: sets published faster than the stream is read are skipped, which is what a
/// `Reset` consumer wants. It ends once the sender is dropped (after yielding a set published
/// just before the drop). It never fails.
///
/// Each call takes its own receiver, so a `PoolQueueLayer`'s discovery function is
/// `move || from_watch(rx.clone())`. The set type must be `Send + Sync + 'static` (the stream
/// is read by the queue's worker task); waiting for a change allocates one small future per
/// set yielded, as sets change rarely.
///
/// ```
/// use portcullis::discovery::from_watch;
/// use portcullis::pool::Update;
/// use futures_util::StreamExt;
/// use tokio::sync::watch;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (publish, endpoints) = watch::channel(vec![("a", 1)]);
/// let mut updates = from_watch(endpoints);
/// assert_eq!(updates.next().await, Some(Ok(Update::Reset(vec![("a", 1)]))));
///
/// publish.send_replace(vec![("a", 1), ("b", 2)]);
/// assert_eq!(updates.next().await, Some(Ok(Update::Reset(vec![("a", 1), ("b", 2)]))));
///
/// drop(publish);
/// assert_eq!(updates.next().await, None);
/// # }
/// ```
pub fn from_watch<C>(endpoints: watch::Receiver<C>) -> FromWatch<C> {
    FromWatch {
        state: State::Current(endpoints),
    }
}

impl<C, K, T> Stream for FromWatch<C>
where
    C: Clone + IntoIterator<Item = (K, T)> + Send + Sync + 'static,
{
    type Item = Result<Update<K, T>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let mut endpoints = match std::mem::replace(&mut this.state, State::Ended) {
            State::Current(endpoints) => endpoints,
            State::Waiting(mut changed) => match changed.as_mut().poll(cx) {
                Poll::Ready(Some(endpoints)) => endpoints,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    this.state = State::Waiting(changed);
                    return Poll::Pending;
                }
            },
            State::Ended => return Poll::Ready(None),
        };
        // Cloned out so that the channel's read lock is held no longer than the clone takes,
        // and never while the consumer applies the update.
        let set = endpoints.borrow_and_update().clone();
        this.state = State::Waiting(Box::pin(async move {
            endpoints.changed().await.ok().map(|()| endpoints)
        }));
        Poll::Ready(Some(Ok(Update::Reset(set.into_iter().collect()))))
    }
}

impl<C> fmt::Debug for FromWatch<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Current(_) => "current",
            State::Waiting(_) => "waiting",
            State::Ended => "ended",
        };
        f.debug_struct("FromWatch").field("state", &state).finish()
    }
}
