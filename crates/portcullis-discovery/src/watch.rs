//! [`from_watch`]: a `tokio::sync::watch` of endpoint sets as a stream of [`Update`]s.

use futures_core::Stream;
use portcullis_pool::Update;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

/// The stream [`from_watch`] returns: tokio-stream's [`WatchStream`], each set as a `Reset`.
pub struct FromWatch<C> {
    sets: WatchStream<C>,
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
/// is read by the queue's worker task). Built on tokio-stream's [`WatchStream`].
///
/// ```
/// use portcullis_discovery::from_watch;
/// use portcullis_discovery::Update;
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
pub fn from_watch<C>(endpoints: watch::Receiver<C>) -> FromWatch<C>
where
    C: Clone + Send + Sync + 'static,
{
    FromWatch {
        sets: WatchStream::new(endpoints),
    }
}

impl<C, K, T> Stream for FromWatch<C>
where
    C: Clone + IntoIterator<Item = (K, T)> + Send + Sync + 'static,
{
    type Item = Result<Update<K, T>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let set = ready!(Pin::new(&mut self.sets).poll_next(cx));
        Poll::Ready(set.map(|set| Ok(Update::Reset(set.into_iter().collect()))))
    }
}

impl<C> fmt::Debug for FromWatch<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromWatch").finish_non_exhaustive()
    }
}
