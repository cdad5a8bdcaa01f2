//! [`from_discover`]: tower's `Discover` as a stream of [`Update`]s.

use futures_core::Stream;
use pin_project_lite::pin_project;
use portcullis_pool::Update;
use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tower::discover::{Change, Discover};

pin_project! {
    /// The stream [`from_discover`] returns.
    pub struct FromDiscover<D> {
        #[pin]
        discover: D,
    }
}

/// Turns a tower [`Discover`] (any `TryStream` of [`Change`]s) into a discovery stream of
/// [`Update`]s: `Change::Insert(key, service)` becomes `Update::Add(vec![(key, service)])`,
/// `Change::Remove(key)` becomes `Update::Remove(vec![key])`, and errors pass through
/// unchanged. The stream ends when the `Discover` does.
///
/// The update target is the discovered service itself, which is what portcullis' `FanOut`
/// takes; for a `P2cPool`, whose maker builds endpoints from targets, map the changes to
/// targets first.
///
/// ```
/// use portcullis_discovery::from_discover;
/// use portcullis_discovery::Update;
/// use futures_util::{stream, StreamExt};
/// use std::convert::Infallible;
/// use tower::discover::Change;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let changes = stream::iter(vec![
///     Ok::<_, Infallible>(Change::Insert("a", 1)),
///     Ok(Change::Remove("a")),
/// ]);
/// let updates: Vec<_> = from_discover(changes).collect().await;
/// assert_eq!(updates, vec![Ok(Update::Add(vec![("a", 1)])), Ok(Update::Remove(vec!["a"]))]);
/// # }
/// ```
pub fn from_discover<D: Discover>(discover: D) -> FromDiscover<D> {
    FromDiscover { discover }
}

impl<D> FromDiscover<D> {
    /// The wrapped `Discover`.
    pub fn get_ref(&self) -> &D {
        &self.discover
    }

    /// Takes the wrapped `Discover`.
    pub fn into_inner(self) -> D {
        self.discover
    }
}

impl<D: Discover> Stream for FromDiscover<D> {
    type Item = Result<Update<D::Key, D::Service>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let change = ready!(self.project().discover.poll_discover(cx));
        Poll::Ready(change.map(|result| {
            result.map(|change| match change {
                Change::Insert(key, service) => Update::Add(vec![(key, service)]),
                Change::Remove(key) => Update::Remove(vec![key]),
            })
        }))
    }
}

impl<D> fmt::Debug for FromDiscover<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromDiscover").finish_non_exhaustive()
    }
}
