//! Deterministic subsetting: each client of a large fleet uses only a small subset of the
//! servers, chosen from its client id so that every server gets about the same number of
//! clients, and so that a small change of the fleet moves few clients.
//!
//! [`Subset`] is the choice, a pure function of the client id, the subset size and the set of
//! server keys; [`Subset::discover`] turns a discovery stream of the *whole* fleet into a
//! discovery stream of this client's subset, [`SubsetDiscovery`], to feed a pool (through a
//! [`PoolQueue`](portcullis_pool::PoolQueue)) that should hold the subset only. Subsetting has
//! to happen before the pool: it must see the whole fleet, in one order, and the pool holds only
//! what it is given.
//!
//! # The algorithm
//!
//! Every client must make the same choice from the same fleet, on every version, so nothing in
//! it depends on the order discovery lists the servers in, on a hash map's order, or on a
//! random number generator:
//!
//! 1. The `n` servers are ordered by their key (`K: Ord`); a server is known by its *rank*
//!    `0..n` in that order, and the ranks are placed around a ring.
//! 2. The client is placed on the ring at `frac(client_id / φ)` (φ the golden ratio), computed
//!    exactly in 64-bit fixed point (Fibonacci hashing: `client_id * 0x9E37_79B9_7F4A_7C15`,
//!    wrapping). Consecutive client ids land as evenly around the ring as any sequence can (the
//!    three-gap theorem), however many clients there are.
//! 3. The client takes `size` consecutive ranks from the rank its position falls on
//!    (`floor(position * n)`), wrapping around the ring. If `n <= size`, it takes every server.
//!
//! **Balance.** A server is used by the clients whose position falls in an arc of `size / n`
//! of the ring, so with `c` clients of consecutive ids each server gets `c * size / n` clients,
//! give or take one or two: with 1,000 servers, 1,000 clients and subsets of 20, every server
//! gets 19 to 21 clients (max/mean 1.05; subsets drawn at random give 6 to 36, max/mean 1.8). There
//! are no leftover servers: the ring has no end.
//!
//! **Stability.** When a server leaves or joins, the ranks after it shift by one and the ring
//! is rescaled from `n` to `n ± 1` servers, which moves each client's start by at most one
//! rank. A client whose run of ranks does not wrap around the end of the key order changes by
//! at most one server, swapped for another (the server that left, or the one at an end of its
//! run). A run that wraps (it holds both the first and the last key) can change by **two**: its
//! start moves back one rank while the server that joined lands in the wrapped part (servers
//! {1, 3, 5, 7}, size 3, client 11: {1, 3, 7} becomes {0, 5, 7} when server 0 joins), or,
//! symmetrically, its start moves on one rank while the server that left was in the wrapped
//! part. Never more than two: measured over 20,000 random fleets of 2 to 63 servers, sizes and
//! clients (seeded, `tests/subset.rs`), a join or a leave swapped two servers for 2.6 % of the
//! clients, all with wrapping runs, and more for none. Measured over 1,000 clients and 1,000
//! servers, one removal or addition changes the subset of a quarter to a half of the clients,
//! depending on where the server is in the key order (about a third on average; the ends of
//! the order move the most).
//!
//! This is a variant of the deterministic subsetting of Google's SRE book ("Load Balancing in
//! the Datacenter"), which shuffles the ordered servers per round of clients with a seeded
//! generator and gives each client of a round a disjoint slice. Its balance is as good (exact
//! for full rounds), but any change of the fleet reshuffles every round: removing one server of
//! 1,000 changes the subset of every client, by almost all of its servers. The ring keeps
//! neighbours in key order together instead (it is Finagle's deterministic aperture, over
//! ranks): a client's subset is a run of servers adjacent in key order, so if adjacent keys fail
//! together (one rack, one address range, one step of a rolling restart in key order), all of a
//! client's subset can fail together. Choose keys whose order does not follow the failure
//! domains, or subsets large enough to span several of them.
//!
//! # Example
//!
//! ```
//! use portcullis_p2c::subset::Subset;
//! use portcullis_pool::Update;
//! use futures_util::{stream, StreamExt};
//! use std::convert::Infallible;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), portcullis_p2c::BoxError> {
//! // Client 7 of the fleet uses 3 of its servers.
//! let subset = Subset::new(7, 3)?;
//! let servers: Vec<u16> = (0..10).collect();
//! let mine = subset.select(&servers);
//! assert_eq!(mine.len(), 3);
//!
//! // As a discovery adapter: the whole fleet in, this client's subset out (to a PoolQueue's
//! // builder, say).
//! let fleet = stream::iter([Ok::<_, Infallible>(Update::Reset(
//!     servers.iter().map(|&port| (port, format!("10.0.0.1:{port}"))).collect(),
//! ))]);
//! let mut discovery = subset.discover(fleet);
//! let Some(Ok(Update::Reset(endpoints))) = discovery.next().await else {
//!     panic!("the subset comes first")
//! };
//! let keys: Vec<&u16> = endpoints.iter().map(|(port, _)| port).collect();
//! assert_eq!(keys, mine);
//! assert!(discovery.next().await.is_none());
//! # Ok(())
//! # }
//! ```

use crate::error::BuildError;
use futures_core::{ready, Stream, TryStream};
use pin_project_lite::pin_project;
use portcullis_pool::{EndpointSet, Update};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The most inner updates one `poll_next` reads; then it wakes its task and yields, so a
/// flood of updates that leave the subset as it is cannot hold the task (the
/// [`PoolQueue`](portcullis_pool::PoolQueue) worker's own bound per turn).
const UPDATES_PER_POLL: usize = 1_024;

/// 2^64 / φ, rounded to odd: the step that spreads consecutive client ids around the ring.
const GOLDEN_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// This client's share of the fleet: its client id and how many servers it uses.
///
/// See the [module](self) for the algorithm and its properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subset {
    client_id: u64,
    size: usize,
}

impl Subset {
    /// The subset of `size` servers for the client `client_id`.
    ///
    /// Client ids should be consecutive across the fleet's clients (`0..clients`, or any run of
    /// consecutive ids): that is what spreads them evenly. Fails with
    /// [`BuildError::InvalidSubset`] for a size of 0.
    pub const fn new(client_id: u64, size: usize) -> Result<Self, BuildError> {
        if size == 0 {
            return Err(BuildError::InvalidSubset { size });
        }
        Ok(Self { client_id, size })
    }

    /// The client id.
    pub const fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The number of servers in the subset (fewer when the fleet is smaller).
    pub const fn size(&self) -> usize {
        self.size
    }

    /// This client's subset of `keys`, in key order: `size` keys, or every key if there are
    /// not more than `size`.
    ///
    /// The order of `keys` does not matter, and a key given twice counts once.
    ///
    /// ```
    /// use portcullis_p2c::subset::Subset;
    ///
    /// let subset = Subset::new(1, 2)?;
    /// let picked = subset.select(["c", "a", "d", "b"].iter());
    /// assert_eq!(picked.len(), 2);
    /// assert_eq!(picked, subset.select(["a", "b", "c", "d"].iter()));
    /// assert_eq!(subset.select(["a", "b"].iter()), [&"a", &"b"]);
    /// # Ok::<(), portcullis_p2c::BuildError>(())
    /// ```
    pub fn select<'a, K>(&self, keys: impl IntoIterator<Item = &'a K>) -> Vec<&'a K>
    where
        K: Ord + ?Sized + 'a,
    {
        let mut keys: Vec<&'a K> = keys.into_iter().collect();
        keys.sort_unstable();
        keys.dedup();
        self.ranks(keys.len())
            .into_iter()
            .map(|rank| keys[rank])
            .collect()
    }

    /// The ranks (positions in key order) of this client's subset of `n` servers, ascending.
    fn ranks(&self, n: usize) -> Vec<usize> {
        if n <= self.size {
            return (0..n).collect();
        }
        let position = self.client_id.wrapping_mul(GOLDEN_STEP);
        // floor(position / 2^64 * n): below n, as position < 2^64.
        let start = ((u128::from(position) * n as u128) >> 64) as usize;
        let mut ranks: Vec<usize> = (start..start + self.size).map(|rank| rank % n).collect();
        ranks.sort_unstable();
        ranks
    }

    /// Adapts `discovery`, a stream of updates of the whole fleet, into a stream of updates of
    /// this client's subset.
    ///
    /// See [`SubsetDiscovery`] for what it yields.
    pub fn discover<S, K, T>(self, discovery: S) -> SubsetDiscovery<S, K, T>
    where
        S: TryStream<Ok = Update<K, T>>,
        K: Ord + Clone,
        T: Clone + PartialEq,
    {
        SubsetDiscovery {
            discovery,
            subset: self,
            fleet: Fleet(BTreeMap::new()),
            members: BTreeMap::new(),
            reset_sent: false,
            pending: VecDeque::new(),
        }
    }
}

/// The whole fleet's membership, in key order.
struct Fleet<K, T>(BTreeMap<K, T>);

impl<K: Ord, T> EndpointSet<K, T> for Fleet<K, T> {
    fn reset(&mut self, endpoints: Vec<(K, T)>) {
        self.0 = endpoints.into_iter().collect();
    }

    fn add(&mut self, endpoints: Vec<(K, T)>) {
        self.0.extend(endpoints);
    }

    fn remove(&mut self, keys: Vec<K>) {
        for key in keys {
            self.0.remove(&key);
        }
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

pin_project! {
    /// A discovery stream of one client's subset of the fleet, made by [`Subset::discover`]
    /// from a discovery stream of the whole fleet.
    ///
    /// It keeps the fleet's membership and yields:
    ///
    /// - first, an [`Update::Reset`] of the subset, once the fleet's first update arrived;
    /// - then, for each update of the fleet that changes the subset (a server enters or leaves
    ///   it, or the target of a member changes), an [`Update::Remove`] of the servers that left
    ///   and an [`Update::Add`] of those that entered or whose target changed, the `Remove`
    ///   first when there are both; an update that leaves the subset as it was yields nothing;
    /// - [`Update::DoesNotExist`] as it comes (the membership is cleared, and the next change
    ///   is yielded as a `Reset` again);
    /// - the inner stream's errors as they come; the stream goes on after an error if the inner
    ///   one does.
    ///
    /// One `poll_next` reads at most 1,024 inner updates: after as many that change nothing,
    /// it wakes its task and returns `Pending`, so that the task can do other work.
    ///
    /// It ends when the inner stream ends. Each change of the subset is logged at info level
    /// (`subset changed`, with `client_id`, `size`, `entered`, `left`, `replaced`).
    #[must_use = "streams do nothing unless polled"]
    pub struct SubsetDiscovery<S, K, T> {
        #[pin]
        discovery: S,
        subset: Subset,
        fleet: Fleet<K, T>,
        // The subset as last yielded.
        members: BTreeMap<K, T>,
        // Whether the subset was yielded as a `Reset` since the start or the last `DoesNotExist`.
        reset_sent: bool,
        pending: VecDeque<Update<K, T>>,
    }
}

impl<S, K, T> SubsetDiscovery<S, K, T> {
    /// The subset this stream selects.
    pub fn subset(&self) -> Subset {
        self.subset
    }

    /// The keys of the subset as last yielded, in key order.
    pub fn members(&self) -> impl Iterator<Item = &K> + '_ {
        self.members.keys()
    }

    /// How many servers the whole fleet has, as last reported by the inner stream.
    pub fn fleet_len(&self) -> usize {
        self.fleet.0.len()
    }

    /// The inner discovery stream.
    pub fn get_ref(&self) -> &S {
        &self.discovery
    }

    /// The inner discovery stream, without the membership kept so far.
    pub fn into_inner(self) -> S {
        self.discovery
    }
}

impl<S, K, T> fmt::Debug for SubsetDiscovery<S, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubsetDiscovery")
            .field("subset", &self.subset)
            .field("fleet", &self.fleet.0.len())
            .field("members", &self.members.len())
            .field("reset_sent", &self.reset_sent)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<S, K, T> Stream for SubsetDiscovery<S, K, T>
where
    S: TryStream<Ok = Update<K, T>>,
    K: Ord + Clone,
    T: Clone + PartialEq,
{
    type Item = Result<Update<K, T>, S::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let mut read = 0;
        loop {
            if let Some(update) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(update)));
            }
            if read == UPDATES_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            read += 1;
            let update = match ready!(this.discovery.as_mut().try_poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                Some(Ok(update)) => update,
            };
            if let Update::DoesNotExist = update {
                this.fleet.clear();
                this.members.clear();
                *this.reset_sent = false;
                return Poll::Ready(Some(Ok(Update::DoesNotExist)));
            }
            update.apply_to(this.fleet);
            let subset = this.subset.select(this.fleet.0.keys());
            let chosen: BTreeMap<K, T> = subset
                .into_iter()
                .filter_map(|key| {
                    let target = this.fleet.0.get(key)?;
                    Some((key.clone(), target.clone()))
                })
                .collect();

            if !*this.reset_sent {
                *this.reset_sent = true;
                tracing::info!(
                    client_id = this.subset.client_id,
                    size = this.subset.size,
                    entered = chosen.len(),
                    left = 0_usize,
                    replaced = 0_usize,
                    "subset changed"
                );
                let endpoints = chosen
                    .iter()
                    .map(|(key, target)| (key.clone(), target.clone()))
                    .collect();
                *this.members = chosen;
                return Poll::Ready(Some(Ok(Update::Reset(endpoints))));
            }

            let left: Vec<K> = this
                .members
                .keys()
                .filter(|key| !chosen.contains_key(*key))
                .cloned()
                .collect();
            let mut entered = 0_usize;
            let mut replaced = 0_usize;
            let mut added = Vec::new();
            for (key, target) in &chosen {
                match this.members.get(key) {
                    Some(old) if old == target => {}
                    Some(_) => {
                        replaced += 1;
                        added.push((key.clone(), target.clone()));
                    }
                    None => {
                        entered += 1;
                        added.push((key.clone(), target.clone()));
                    }
                }
            }
            if left.is_empty() && added.is_empty() {
                continue;
            }
            tracing::info!(
                client_id = this.subset.client_id,
                size = this.subset.size,
                entered,
                left = left.len(),
                replaced,
                "subset changed"
            );
            if !left.is_empty() {
                this.pending.push_back(Update::Remove(left));
            }
            if !added.is_empty() {
                this.pending.push_back(Update::Add(added));
            }
            *this.members = chosen;
        }
    }
}
