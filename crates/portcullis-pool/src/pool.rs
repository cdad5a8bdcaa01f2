//! The [`Pool`] trait and the discovery [`Update`] it consumes.

use std::task::{Context, Poll};
use tower_service::Service;

/// A change to the set of endpoints a [`Pool`] serves, as produced by service discovery.
///
/// Keys are generic (`K: Hash + Eq + Clone` in every pool of this project), so a pool can be
/// keyed by socket address, by a replica name or by anything else that identifies a target.
/// `T` is the *target*: what the pool needs to build the endpoint for that key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update<K, T> {
    /// The complete endpoint set: every key not listed here is removed, every listed key is
    /// kept (or replaced, if its target changed) or added.
    Reset(Vec<(K, T)>),
    /// Endpoints to add; a key already present with a different target is replaced.
    Add(Vec<(K, T)>),
    /// Keys to remove.
    Remove(Vec<K>),
    /// Discovery says the service does not exist: every endpoint is removed.
    DoesNotExist,
}

impl<K, T> Update<K, T> {
    /// The kind of this update, for logs and metrics.
    pub fn kind(&self) -> UpdateKind {
        match self {
            Update::Reset(_) => UpdateKind::Reset,
            Update::Add(_) => UpdateKind::Add,
            Update::Remove(_) => UpdateKind::Remove,
            Update::DoesNotExist => UpdateKind::DoesNotExist,
        }
    }

    /// How many endpoints this update names (0 for [`Update::DoesNotExist`]).
    pub fn len(&self) -> usize {
        match self {
            Update::Reset(eps) | Update::Add(eps) => eps.len(),
            Update::Remove(keys) => keys.len(),
            Update::DoesNotExist => 0,
        }
    }

    /// Whether this update names no endpoint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies the update to an endpoint set: the one place where each kind of update is
    /// mapped to what a set does (`Reset` replaces, `Add` adds or replaces, `Remove` removes,
    /// `DoesNotExist` clears).
    ///
    /// ```
    /// use portcullis_pool::{EndpointSet, Update};
    ///
    /// #[derive(Default)]
    /// struct Names(Vec<(&'static str, u16)>);
    ///
    /// impl EndpointSet<&'static str, u16> for Names {
    ///     fn reset(&mut self, endpoints: Vec<(&'static str, u16)>) {
    ///         self.0 = endpoints;
    ///     }
    ///     fn add(&mut self, endpoints: Vec<(&'static str, u16)>) {
    ///         for (key, target) in endpoints {
    ///             self.0.retain(|(k, _)| *k != key);
    ///             self.0.push((key, target));
    ///         }
    ///     }
    ///     fn remove(&mut self, keys: Vec<&'static str>) {
    ///         self.0.retain(|(k, _)| !keys.contains(k));
    ///     }
    ///     fn clear(&mut self) {
    ///         self.0.clear();
    ///     }
    /// }
    ///
    /// let mut names = Names::default();
    /// Update::Add(vec![("a", 1), ("b", 2)]).apply_to(&mut names);
    /// Update::Remove(vec!["a"]).apply_to(&mut names);
    /// assert_eq!(names.0, vec![("b", 2)]);
    /// ```
    pub fn apply_to<S: EndpointSet<K, T> + ?Sized>(self, set: &mut S) {
        match self {
            Update::Reset(endpoints) => set.reset(endpoints),
            Update::Add(endpoints) => set.add(endpoints),
            Update::Remove(keys) => set.remove(keys),
            Update::DoesNotExist => set.clear(),
        }
    }

    /// The same update with each target mapped by `f` (keys and kind unchanged), so that one
    /// discovery stream can feed pools that want different targets: a `P2cPool` that builds
    /// endpoints from addresses and a `FanOut` whose targets are the peer services, say.
    ///
    /// ```
    /// use portcullis_pool::Update;
    ///
    /// let update = Update::Add(vec![("a", 8080_u16), ("b", 8081)]);
    /// let mapped = update.map(|key, port| format!("{key}.local:{port}"));
    /// assert_eq!(mapped, Update::Add(vec![("a", "a.local:8080".to_string()), ("b", "b.local:8081".to_string())]));
    /// ```
    pub fn map<U>(self, mut f: impl FnMut(&K, T) -> U) -> Update<K, U> {
        let mut map_all = |endpoints: Vec<(K, T)>| {
            endpoints
                .into_iter()
                .map(|(key, target)| {
                    let mapped = f(&key, target);
                    (key, mapped)
                })
                .collect()
        };
        match self {
            Update::Reset(endpoints) => Update::Reset(map_all(endpoints)),
            Update::Add(endpoints) => Update::Add(map_all(endpoints)),
            Update::Remove(keys) => Update::Remove(keys),
            Update::DoesNotExist => Update::DoesNotExist,
        }
    }
}

/// An endpoint set that discovery [`Update`]s are applied to with [`Update::apply_to`]:
/// `P2cPool`'s, `FanOut`'s peer set, the test pool's. Each method is one kind of update; what
/// "replace" means (rebuild an endpoint whose target changed, keep the position of a key given
/// again) is the set's to decide and document.
pub trait EndpointSet<K, T> {
    /// [`Update::Reset`]: the set becomes exactly `endpoints`.
    fn reset(&mut self, endpoints: Vec<(K, T)>);
    /// [`Update::Add`]: each endpoint is added, or replaces the one with its key.
    fn add(&mut self, endpoints: Vec<(K, T)>);
    /// [`Update::Remove`]: each key is removed (an unknown key is ignored).
    fn remove(&mut self, keys: Vec<K>);
    /// [`Update::DoesNotExist`]: every endpoint is removed.
    fn clear(&mut self);
}

/// The kind of an [`Update`], without its payload.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum UpdateKind {
    /// [`Update::Reset`].
    Reset,
    /// [`Update::Add`].
    Add,
    /// [`Update::Remove`].
    Remove,
    /// [`Update::DoesNotExist`].
    DoesNotExist,
}

impl UpdateKind {
    /// Every kind, in a fixed order (the order metrics are reported in).
    pub const ALL: [UpdateKind; 4] = [
        UpdateKind::Reset,
        UpdateKind::Add,
        UpdateKind::Remove,
        UpdateKind::DoesNotExist,
    ];

    /// A stable lowercase name, used as a metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpdateKind::Reset => "reset",
            UpdateKind::Add => "add",
            UpdateKind::Remove => "remove",
            UpdateKind::DoesNotExist => "does_not_exist",
        }
    }

    /// The kind's position in [`UpdateKind::ALL`], for counters kept in an array.
    pub const fn index(self) -> usize {
        match self {
            UpdateKind::Reset => 0,
            UpdateKind::Add => 1,
            UpdateKind::Remove => 2,
            UpdateKind::DoesNotExist => 3,
        }
    }
}

/// How many endpoints a pool holds, by state. Reported by [`Pool::endpoints`] and exported by
/// the queue's metrics.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounts {
    /// Endpoints ready to take a request now.
    pub ready: usize,
    /// Endpoints being driven to readiness (connecting, or at capacity).
    pub pending: usize,
    /// Endpoints that failed and wait to be rebuilt (backing off).
    pub failed: usize,
}

impl EndpointCounts {
    /// Every endpoint the pool knows of, in any state.
    pub const fn total(&self) -> usize {
        self.ready + self.pending + self.failed
    }
}

/// A [`Service`] over a set of endpoints that discovery keeps current, and whose pending
/// endpoints can be driven to readiness without a request.
///
/// tower's `Balance` only reads discovery and drives endpoints from inside `poll_ready`, so a
/// balancer that sees no traffic never learns that an endpoint went away and never connects a
/// new one. A `Pool` splits those jobs out so that an owner (such as
/// [`PoolQueue`](crate::PoolQueue)'s worker) can do them whenever it likes, idle or not:
///
/// - [`Pool::update_pool`] applies one discovery update now;
/// - [`Pool::poll_pool`] drives every pending endpoint, with or without a request waiting.
///
/// The [`Service`] half keeps its usual meaning: `poll_ready` is ready once *one* endpoint is
/// ready to take a request, and `call` dispatches to the endpoint that `poll_ready` chose.
///
/// An `Err` from `poll_pool` or `poll_ready` is terminal for the pool. A pool that can lose
/// an endpoint without failing as a whole (as every pool in this project does) should deal with
/// the endpoint's failure itself and keep serving with the others.
///
/// # Example
///
/// A pool that holds one fixed endpoint, to show the shape of the trait:
///
/// ```
/// use portcullis_pool::{EndpointCounts, Pool, Update};
/// use std::convert::Infallible;
/// use std::future::{ready, Ready};
/// use std::task::{Context, Poll};
/// use tower_service::Service;
///
/// /// Answers every request with the key of its one endpoint, if it has one.
/// struct Single(Option<&'static str>);
///
/// impl Service<()> for Single {
///     type Response = &'static str;
///     type Error = Infallible;
///     type Future = Ready<Result<&'static str, Infallible>>;
///
///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
///         if self.0.is_some() { Poll::Ready(Ok(())) } else { Poll::Pending }
///     }
///
///     fn call(&mut self, _: ()) -> Self::Future {
///         ready(Ok(self.0.unwrap_or("none")))
///     }
/// }
///
/// impl Pool<&'static str, (), ()> for Single {
///     fn update_pool(&mut self, update: Update<&'static str, ()>) {
///         match update {
///             Update::Reset(eps) | Update::Add(eps) => {
///                 if let Some((key, ())) = eps.into_iter().last() {
///                     self.0 = Some(key);
///                 }
///             }
///             Update::Remove(keys) => {
///                 if keys.iter().any(|k| Some(*k) == self.0) {
///                     self.0 = None;
///                 }
///             }
///             Update::DoesNotExist => self.0 = None,
///         }
///     }
///
///     fn poll_pool(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
///         Poll::Ready(Ok(()))
///     }
///
///     fn endpoints(&self) -> EndpointCounts {
///         EndpointCounts { ready: usize::from(self.0.is_some()), ..Default::default() }
///     }
/// }
///
/// let mut pool = Single(None);
/// pool.update_pool(Update::Add(vec![("10.0.0.1:80", ())]));
/// assert_eq!(pool.endpoints().ready, 1);
/// ```
pub trait Pool<K, T, Req>: Service<Req> {
    /// Applies one discovery update now.
    fn update_pool(&mut self, update: Update<K, T>);

    /// Drives every pending endpoint towards readiness.
    ///
    /// Returns `Ready(Ok(()))` once nothing is left to drive (every endpoint is ready or the
    /// pool is empty), and `Pending` with the waker registered while some endpoint is still
    /// being driven. An `Err` is terminal for the pool.
    fn poll_pool(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;

    /// How many endpoints the pool holds, by state.
    fn endpoints(&self) -> EndpointCounts;

    /// [`poll_ready`](Service::poll_ready) for `request`, the request the next `call` sends:
    /// a pool may choose its endpoint for that request. [`PoolQueue`](crate::PoolQueue) calls
    /// this, not `poll_ready`, whenever it knows the request (its worker and its direct
    /// dispatch both do). By default, `poll_ready`; `portcullis-p2c`'s pool avoids the
    /// endpoints that a [`Tried`](crate::Tried) carried by the request names.
    fn poll_ready_for(
        &mut self,
        cx: &mut Context<'_>,
        request: &Req,
    ) -> Poll<Result<(), Self::Error>> {
        let _ = request;
        self.poll_ready(cx)
    }
}
