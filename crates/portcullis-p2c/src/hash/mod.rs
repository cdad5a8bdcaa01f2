//! [`HashPool`]: consistent hashing with bounded loads. Requests for the same key go to the
//! same endpoint (a cache's, a shard's), as long as that endpoint is ready and not overloaded.
//!
//! - **Where a key goes**: a Maglev table (Eisenbud et al., NSDI 2016) over every endpoint the pool knows (ready or
//!   not, so that an endpoint's slots stay its own while it is down), 65,537 slots by default,
//!   each endpoint owning slots in proportion to its weight. A key's hash picks a slot, and so
//!   an endpoint; a change of endpoints moves about the share of keys the endpoint had.
//! - **Bounded loads** (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with Bounded
//!   Loads", SODA 2018): no endpoint takes a request while it has more than `(1 + ε)` times the
//!   mean of requests in flight (rounded up, counting the new one); the request goes on to the
//!   next endpoint along the key's own sequence of the table, so a hot key overflows to the
//!   same few endpoints each time, and only its excess moves. ε is 0.25 by default.
//! - **Unready, ejected, at its limit**: skipped along the same sequence, as an overloaded one
//!   is. Everything [`P2cPoolBuilder`] sets applies (ejection, panic
//!   mode, slow start's weights do not: the table's weights are the maker's), as does a limit
//!   on requests in flight.
//! - **A request without a key** goes to the least loaded of two random candidates, as a
//!   [`P2cPool`] would send it.
//!
//! Behind a [`PoolQueue`](portcullis_pool::PoolQueue), the pick is made for the request it is
//! for ([`Pool::poll_ready_for`]). As a bare `Service`, `poll_ready` readies the pool and `call`
//! picks by the request's key among the endpoints found ready.
//!
//! A key's hash comes from the request by a closure ([`HashPoolBuilder::build`]): hash what
//! identifies it with [`hash_key`] or [`hash_bytes`] (XXH3, a hash with a specification), so that
//! every process, whatever its version of this crate, places a key on the same endpoint. The
//! facade has helpers for an HTTP header and a gRPC metadata key.
//!
//! ```
//! use futures_util::StreamExt;
//! use portcullis_p2c::hash::{hash_key, HashPool};
//! use portcullis_p2c::make;
//! use portcullis_pool::{PoolQueue, Update};
//! use tower::{service_fn, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), portcullis_p2c::BoxError> {
//! // Three shards, each answering with its name; a request is a user id, its own key.
//! let pool = HashPool::builder().build(
//!     make::pending_requests(|shard: &&'static str, _: &()| {
//!         let shard = *shard;
//!         service_fn(move |user: u64| async move { Ok::<_, std::io::Error>((shard, user)) })
//!     }),
//!     |user: &u64| Some(hash_key(user)),
//! )?;
//! let shards = Update::Reset(vec![("a", ()), ("b", ()), ("c", ())]);
//! let discovery = futures_util::stream::iter([Ok::<_, std::io::Error>(shards)])
//!     .chain(futures_util::stream::pending());
//! let queue = PoolQueue::builder().build(pool, discovery)?;
//! let (shard, _) = queue.clone().oneshot(7).await?;
//! for _ in 0..10 {
//!     assert_eq!(queue.clone().oneshot(7).await?.0, shard, "user 7 stays on its shard");
//! }
//! # Ok(())
//! # }
//! ```

mod maglev;

use self::maglev::Table;
use crate::builder::Settings;
use crate::classify::{ClassifyResponse, ErrorsOnly};
use crate::error::NotReady;
use crate::future::ResponseFuture;
use crate::limit::LimitConfig;
use crate::make::MakeEndpoint;
use crate::metrics::{OwnedGauges, P2cMetrics};
use crate::ready_cache::{ReadyCache, ReadyRef};
#[cfg(doc)]
use crate::P2cPool;
use crate::{BoxError, BuildError, EndpointState, P2cPoolBuilder};
use portcullis_pool::{EndpointCounts, Pool, Update};
use rand::rngs::SmallRng;
use rand::Rng;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::load::Load;
use tower_service::Service;
use tracing::{debug, trace};

/// A key's hash: XXH3 (64 bits) of what `key` feeds a [`Hasher`], the same in every process.
///
/// ```
/// use portcullis_p2c::hash::hash_key;
///
/// assert_eq!(hash_key(&"user-7"), hash_key(&String::from("user-7")));
/// ```
pub fn hash_key<T: Hash + ?Sized>(key: &T) -> u64 {
    let mut hasher = KeyHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

/// Collects what a key writes, and hashes it whole with XXH3: the same hash as streaming the
/// bytes through XXH3, without its state's set-up for the short keys requests carry (up to
/// [`KeyHasher::INLINE`] bytes on the stack).
struct KeyHasher {
    inline: [u8; KeyHasher::INLINE],
    len: usize,
    spilled: Option<Vec<u8>>,
}

impl KeyHasher {
    const INLINE: usize = 64;
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self {
            inline: [0; Self::INLINE],
            len: 0,
            spilled: None,
        }
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        if let Some(spilled) = &mut self.spilled {
            spilled.extend_from_slice(bytes);
            return;
        }
        let end = self.len + bytes.len();
        if end <= Self::INLINE {
            self.inline[self.len..end].copy_from_slice(bytes);
            self.len = end;
        } else {
            let mut spilled = self.inline[..self.len].to_vec();
            spilled.extend_from_slice(bytes);
            self.spilled = Some(spilled);
        }
    }

    fn finish(&self) -> u64 {
        match &self.spilled {
            Some(bytes) => xxhash_rust::xxh3::xxh3_64(bytes),
            None => xxhash_rust::xxh3::xxh3_64(&self.inline[..self.len]),
        }
    }
}

/// XXH3 (64 bits) of `bytes`: a key's hash from its bytes as they are (a header's value).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Finds a request's key hash: `None` for a request without a key.
pub type KeyOf<Req> = Arc<dyn Fn(&Req) -> Option<u64> + Send + Sync>;

/// Builds a [`HashPool`]: the pool's settings ([`pool`](Self::pool): a [`P2cPoolBuilder`]'s),
/// the bound on loads and the table's size. `Clone`; settings only, checked by
/// [`build`](Self::build).
#[derive(Clone, Debug)]
pub struct HashPoolBuilder {
    pool: P2cPoolBuilder,
    epsilon: f64,
    table_size: usize,
}

impl Default for HashPoolBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HashPoolBuilder {
    /// The default ε: no endpoint above 1.25 times the mean load (Google Cloud Pub/Sub's and
    /// HAProxy's `hash-balance-factor 125`).
    pub const DEFAULT_EPSILON: f64 = 0.25;
    /// The default size of the Maglev table: a prime, a hundred slots an endpoint for up to
    /// 655 endpoints (the paper's advice, for a change of endpoints to move few keys).
    pub const DEFAULT_TABLE_SIZE: usize = 65_537;

    /// The default settings.
    pub const fn new() -> Self {
        Self {
            pool: P2cPoolBuilder::new(),
            epsilon: Self::DEFAULT_EPSILON,
            table_size: Self::DEFAULT_TABLE_SIZE,
        }
    }

    /// The settings a [`P2cPool`] has (rebuild backoff, ejection, panic mode,
    /// a limit on requests in flight, the seed of the random source for keyless requests).
    pub fn pool(mut self, pool: P2cPoolBuilder) -> Self {
        self.pool = pool;
        self
    }

    /// The bound on each endpoint's load: at most `(1 + epsilon)` times the mean of requests
    /// in flight. Positive and finite; `f64::INFINITY` is refused: plain consistent hashing is
    /// a bound never reached, say `1e9`.
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// The Maglev table's slots: a prime above the number of endpoints (more slots, fewer keys
    /// moved by a change, more memory: 4 bytes a slot).
    pub fn table_size(mut self, size: usize) -> Self {
        self.table_size = size;
        self
    }

    /// Builds the pool, empty until its first update; `key` gives each request's key hash.
    pub fn build<K, T, M, Req>(
        self,
        maker: M,
        key: impl Fn(&Req) -> Option<u64> + Send + Sync + 'static,
    ) -> Result<HashPool<K, T, M, Req>, BuildError>
    where
        K: Hash + Eq + Clone,
        M: MakeEndpoint<K, T>,
    {
        self.build_with_classify(maker, key, ErrorsOnly)
    }

    /// Builds the pool with `classify` deciding which `Ok` responses count as failures of
    /// their endpoint (see [`P2cPoolBuilder::build_with_classify`]).
    pub fn build_with_classify<K, T, M, Req, C>(
        self,
        maker: M,
        key: impl Fn(&Req) -> Option<u64> + Send + Sync + 'static,
        classify: C,
    ) -> Result<HashPool<K, T, M, Req, C>, BuildError>
    where
        K: Hash + Eq + Clone,
        M: MakeEndpoint<K, T>,
    {
        if !(self.epsilon.is_finite() && self.epsilon > 0.0)
            || self.table_size < 2
            || !is_prime(self.table_size)
        {
            return Err(BuildError::InvalidHash {
                epsilon: self.epsilon,
                table_size: self.table_size,
            });
        }
        let (settings, rng) = self.pool.settings()?;
        if settings.zone.is_some() {
            return Err(BuildError::InvalidZone(crate::zone::ZoneError::HashPool));
        }
        Ok(HashPool::from_parts(
            maker,
            settings,
            classify,
            rng,
            Arc::new(key),
            self.epsilon,
            self.table_size,
        ))
    }
}

fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Consistent hashing with bounded loads over endpoints that discovery keeps current: see the
/// [module](self).
pub struct HashPool<K, T, M, Req, C = ErrorsOnly>
where
    M: MakeEndpoint<K, T>,
{
    endpoints: ReadyCache<K, T, M>,
    classify: C,
    key: KeyOf<Req>,
    epsilon: f64,
    table_size: usize,
    /// The table, over `members` (in its order), rebuilt when an update changed who they are.
    table: Table,
    members: Vec<K>,
    stale: bool,
    chosen: Option<ReadyRef>,
    /// `poll_ready` (without the request) said ready: `call` picks.
    ready_for_any: bool,
    rng: SmallRng,
    metrics: OwnedGauges,
    hash_metrics: HashMetrics,
    _req: PhantomData<fn(Req)>,
}

/// A [`HashPool`]'s own counts, beside its [`P2cMetrics`].
#[derive(Clone, Debug, Default)]
pub struct HashMetrics {
    inner: Arc<HashCounts>,
}

#[derive(Debug, Default)]
struct HashCounts {
    /// Requests sent to their key's own endpoint.
    home: AtomicU64,
    /// Requests sent elsewhere along their key's sequence (their endpoint unready, ejected,
    /// at its limit, or over the load bound).
    diverted: AtomicU64,
    /// Of those, the ones the load bound sent on.
    over_bound: AtomicU64,
    /// Requests without a key.
    keyless: AtomicU64,
    /// Times the table was rebuilt.
    rebuilds: AtomicU64,
}

/// A copy of [`HashMetrics`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HashSnapshot {
    /// Requests sent to their key's own endpoint.
    pub home: u64,
    /// Requests sent on along their key's sequence.
    pub diverted: u64,
    /// Of those, the ones the load bound sent on.
    pub over_bound: u64,
    /// Requests without a key.
    pub keyless: u64,
    /// Times the table was rebuilt (after updates that changed the endpoints).
    pub rebuilds: u64,
}

impl portcullis_pool::families::Describe for HashSnapshot {
    const PIECE: &'static str = "hash";

    fn describe(&self, out: &mut dyn FnMut(portcullis_pool::families::Family<'_>)) {
        use portcullis_pool::families::Family;
        out(Family::counter(
            "home",
            "Requests sent to their key's own endpoint.",
            self.home,
        ));
        out(Family::counter(
            "diverted",
            "Requests sent on along their key's sequence (their endpoint unready, ejected, at its limit or over the load bound).",
            self.diverted,
        ));
        out(Family::counter(
            "over_bound",
            "Requests the bound on loads sent on.",
            self.over_bound,
        ));
        out(Family::counter(
            "keyless",
            "Requests without a key.",
            self.keyless,
        ));
        out(Family::counter(
            "rebuilds",
            "Times the table was rebuilt after the endpoints changed.",
            self.rebuilds,
        ));
    }
}

impl HashMetrics {
    /// Copies the current values.
    pub fn snapshot(&self) -> HashSnapshot {
        let c = &self.inner;
        HashSnapshot {
            home: c.home.load(Ordering::Relaxed),
            diverted: c.diverted.load(Ordering::Relaxed),
            over_bound: c.over_bound.load(Ordering::Relaxed),
            keyless: c.keyless.load(Ordering::Relaxed),
            rebuilds: c.rebuilds.load(Ordering::Relaxed),
        }
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a key's pick ended.
enum Pick {
    /// Its own endpoint, or the one its sequence went on to.
    Found {
        chosen: ReadyRef,
        home: bool,
        over_bound: bool,
    },
    /// No endpoint along it is a candidate with room.
    None,
}

impl HashPool<(), (), fn(&(), &()), ()> {
    /// A [`HashPoolBuilder`] with the default settings.
    pub const fn builder() -> HashPoolBuilder {
        HashPoolBuilder::new()
    }
}

impl<K, T, M, Req, C> HashPool<K, T, M, Req, C>
where
    K: Hash + Eq + Clone,
    M: MakeEndpoint<K, T>,
{
    fn from_parts(
        maker: M,
        settings: Settings,
        classify: C,
        rng: SmallRng,
        key: KeyOf<Req>,
        epsilon: f64,
        table_size: usize,
    ) -> Self {
        let metrics = P2cMetrics::default();
        // Every endpoint counts its requests in flight, for the bound: a limit never reached
        // where none is set.
        let limit = settings.limit.or(Some(LimitConfig::Fixed(u32::MAX)));
        let mut endpoints = ReadyCache::new(
            maker,
            settings.backoff,
            settings.health,
            limit,
            None,
            metrics.clone(),
        );
        endpoints.count_total_in_flight();
        if settings.limit.is_none() {
            endpoints.unpublished_limits();
        }
        Self {
            endpoints,
            classify,
            key,
            epsilon,
            table_size,
            table: Table::default(),
            members: Vec::new(),
            stale: false,
            chosen: None,
            ready_for_any: false,
            rng,
            metrics: OwnedGauges(metrics),
            hash_metrics: HashMetrics::default(),
            _req: PhantomData,
        }
    }

    /// The pool's metrics (endpoints by state, ejections, ...): a [`P2cMetrics`] handle.
    pub fn metrics(&self) -> P2cMetrics {
        self.metrics.0.clone()
    }

    /// The hash pool's own counts: requests home, diverted, over the bound.
    pub fn hash_metrics(&self) -> HashMetrics {
        self.hash_metrics.clone()
    }

    /// The bound's ε ([`HashPoolBuilder::epsilon`]).
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// The table's size ([`HashPoolBuilder::table_size`]).
    pub fn table_size(&self) -> usize {
        self.table_size
    }

    /// The key the table maps `hash` to, whatever its state: where a key lives.
    pub fn home_of(&mut self, hash: u64) -> Option<&K> {
        self.refresh_table();
        self.table.lookup(hash).and_then(|m| self.members.get(m))
    }

    /// The key of the endpoint the last successful pick reserved, which the next `call` goes to.
    pub fn chosen(&self) -> Option<&K> {
        self.endpoints.key_of(self.chosen?)
    }

    /// The state of the endpoint for `key`, or `None` if the pool does not know the key (as
    /// [`P2cPool::endpoint_state`] tells it).
    pub fn endpoint_state(&self, key: &K) -> Option<EndpointState> {
        self.endpoints.state(key)
    }

    /// Rebuilds the table if an update changed the endpoints since.
    fn refresh_table(&mut self) {
        if !std::mem::take(&mut self.stale) {
            return;
        }
        let (members, hashed): (Vec<K>, Vec<(u64, u32)>) = self
            .endpoints
            .members()
            .map(|(key, weight)| (key.clone(), (hash_key(key), weight)))
            .unzip();
        self.table = Table::build(&hashed, self.table_size);
        self.members = members;
        HashMetrics::count(&self.hash_metrics.inner.rebuilds);
        debug!(endpoints = self.members.len(), "hash table rebuilt");
    }

    /// The most requests in flight an endpoint may have to take one more: `(1 + ε)` times the
    /// mean with the new one counted, rounded up.
    fn bound(&self) -> u64 {
        let total = self.endpoints.limit_wake().total().unwrap_or(0) + 1;
        let candidates = self.endpoints.candidates().max(1) as f64;
        ((1.0 + self.epsilon) * total as f64 / candidates).ceil() as u64
    }

    /// Walks `hash`'s sequence: the first candidate with room and under the bound; else the
    /// first candidate with room (the bound is a preference, not a reason to wait).
    fn pick(&self, hash: u64) -> Pick {
        let bound = self.bound();
        // The key's own endpoint first, without building its sequence: the common case.
        if let Some(chosen) = self.table.lookup(hash).and_then(|m| self.usable(m, bound)) {
            return Pick::Found {
                chosen,
                home: true,
                over_bound: false,
            };
        }
        let mut first_with_room = None;
        for member in self.table.sequence(hash) {
            let Some((chosen, load)) = self.with_room(member) else {
                continue;
            };
            if load < bound {
                return Pick::Found {
                    chosen,
                    home: false,
                    over_bound: first_with_room.is_some(),
                };
            }
            first_with_room.get_or_insert(chosen);
        }
        match first_with_room {
            Some(chosen) => Pick::Found {
                chosen,
                home: false,
                over_bound: true,
            },
            None => Pick::None,
        }
    }

    /// The table's `member` if it is a candidate with room, and its requests in flight.
    fn with_room(&self, member: usize) -> Option<(ReadyRef, u64)> {
        let key = self.members.get(member)?;
        let pos = self.endpoints.candidate_position(key)?;
        if !self.endpoints.has_room(pos) {
            return None;
        }
        let (_, chosen, _) = self.endpoints.get_ready(pos)?;
        let load = u64::from(self.endpoints.in_flight_at(pos).unwrap_or(0));
        Some((chosen, load))
    }

    /// The table's `member` if it is a candidate with room under `bound`.
    fn usable(&self, member: usize, bound: u64) -> Option<ReadyRef> {
        let (chosen, load) = self.with_room(member)?;
        (load < bound).then_some(chosen)
    }

    /// A keyless request's pick: the less loaded of two random candidates with room.
    fn pick_any(&mut self) -> Option<ReadyRef>
    where
        M::Endpoint: Load,
    {
        let len = self.endpoints.candidates();
        let with_room = |pool: &Self, pos: usize| pool.endpoints.has_room(pos);
        let a = (len > 0).then(|| self.rng.gen_range(0..len))?;
        let b = if len > 1 {
            let b = self.rng.gen_range(0..len - 1);
            if b >= a {
                b + 1
            } else {
                b
            }
        } else {
            a
        };
        let pos = match (with_room(self, a), with_room(self, b)) {
            (true, true) => {
                let load = |pos| self.endpoints.endpoint_at(pos).map(Load::load);
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
            (true, false) => a,
            (false, true) => b,
            (false, false) => (0..len).find(|&pos| with_room(self, pos))?,
        };
        self.endpoints.get_ready(pos).map(|(_, chosen, _)| chosen)
    }
}

impl<K, T, M, Req, C> HashPool<K, T, M, Req, C>
where
    K: Hash + Eq + Clone + fmt::Debug,
    M: MakeEndpoint<K, T>,
    M::Endpoint: Service<Req> + Load,
    <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
{
    /// Reserves the endpoint for a request of key `hash` (`None`: no key), polled ready in this
    /// same turn; pending when none along its sequence is a ready candidate with room.
    fn poll_pick(&mut self, cx: &mut Context<'_>, hash: Option<u64>) -> Poll<Result<(), BoxError>> {
        self.endpoints.drive::<Req>(cx);
        self.endpoints.publish_limiters();
        self.refresh_table();
        // Bounded: each try that fails moves an endpoint out of the ready set.
        for _ in 0..=self.members.len() {
            let (chosen, route) = match hash {
                Some(hash) => match self.pick(hash) {
                    Pick::Found {
                        chosen,
                        home,
                        over_bound,
                    } => (chosen, (home, over_bound)),
                    Pick::None => break,
                },
                None => match self.pick_any() {
                    Some(chosen) => (chosen, (false, false)),
                    None => break,
                },
            };
            if let Some(chosen) = self.endpoints.check_ready::<Req>(cx, chosen) {
                self.chosen = Some(chosen);
                let counts = &self.hash_metrics.inner;
                match (hash, route) {
                    (None, _) => HashMetrics::count(&counts.keyless),
                    (Some(_), (true, _)) => HashMetrics::count(&counts.home),
                    (Some(_), (false, over_bound)) => {
                        HashMetrics::count(&counts.diverted);
                        if over_bound {
                            HashMetrics::count(&counts.over_bound);
                        }
                    }
                }
                return Poll::Ready(Ok(()));
            }
        }
        self.endpoints.limit_wake().wait(cx.waker());
        trace!("no endpoint ready along the key's sequence");
        Poll::Pending
    }

    /// Dispatches to the reserved endpoint, or fails with a typed error.
    fn dispatch(&mut self, req: Req) -> ResponseFuture<<M::Endpoint as Service<Req>>::Future, C>
    where
        C: Clone,
    {
        let Some(chosen) = self.chosen.take() else {
            return ResponseFuture::failed(NotReady::new());
        };
        self.endpoints.dispatch(chosen, req, &self.classify)
    }
}

impl<K, T, M, Req, C> Service<Req> for HashPool<K, T, M, Req, C>
where
    K: Hash + Eq + Clone + fmt::Debug,
    M: MakeEndpoint<K, T>,
    M::Endpoint: Service<Req> + Load,
    <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
    C: ClassifyResponse<<M::Endpoint as Service<Req>>::Response> + Clone,
{
    type Response = <M::Endpoint as Service<Req>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<<M::Endpoint as Service<Req>>::Future, C>;

    /// Ready when an endpoint is: the pick is made in `call`, by the request's key, among the
    /// endpoints ready then (each polled there once more). Behind a `PoolQueue` the pick is made
    /// here instead, for the request it is for ([`Pool::poll_ready_for`]).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.endpoints.drive::<Req>(cx);
        self.endpoints.publish_limiters();
        self.refresh_table();
        if self.endpoints.candidates() > 0 {
            self.chosen = None;
            self.ready_for_any = true;
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if std::mem::take(&mut self.ready_for_any) && self.chosen.is_none() {
            // Readied without the request: pick for it now, polling with a no-op waker (no
            // task waits on this poll; `poll_ready` registered the caller's).
            let hash = (self.key)(&req);
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if self.poll_pick(&mut cx, hash).is_pending() {
                return ResponseFuture::failed(NotReady::new());
            }
        }
        self.dispatch(req)
    }
}

impl<K, T, M, Req, C> Pool<K, T, Req> for HashPool<K, T, M, Req, C>
where
    K: Hash + Eq + Clone + fmt::Debug,
    T: PartialEq,
    M: MakeEndpoint<K, T>,
    M::Endpoint: Service<Req> + Load,
    <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
    C: ClassifyResponse<<M::Endpoint as Service<Req>>::Response> + Clone,
{
    fn update_pool(&mut self, update: Update<K, T>) {
        let kind = update.kind();
        debug!(kind = kind.as_str(), len = update.len(), "applying update");
        update.apply_to(&mut self.endpoints);
        self.metrics.0.update_applied(kind);
        self.endpoints.sync_gauges();
        self.endpoints.publish_limiters();
        self.stale = true;
    }

    fn poll_pool(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.endpoints.drive::<Req>(cx);
        self.endpoints.publish_limiters();
        if self.endpoints.is_settled() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn poll_ready_for(&mut self, cx: &mut Context<'_>, req: &Req) -> Poll<Result<(), Self::Error>> {
        self.ready_for_any = false;
        let hash = (self.key)(req);
        self.poll_pick(cx, hash)
    }

    fn endpoints(&self) -> EndpointCounts {
        self.endpoints.counts()
    }
}

impl<K, T, M, Req, C> fmt::Debug for HashPool<K, T, M, Req, C>
where
    M: MakeEndpoint<K, T>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = self.endpoints.counts();
        f.debug_struct("HashPool")
            .field("ready", &counts.ready)
            .field("pending", &counts.pending)
            .field("failed", &counts.failed)
            .field("epsilon", &self.epsilon)
            .field("table_size", &self.table_size)
            .field("chosen", &self.chosen.is_some())
            .finish_non_exhaustive()
    }
}
