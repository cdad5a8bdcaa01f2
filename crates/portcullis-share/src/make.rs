//! How a connection is made from a key.

/// Makes the connection service for a key: a hyper-util `Client`, a tonic `Channel`, anything
/// that is a `Service` and `Clone`.
///
/// Implemented for every `Fn(&K) -> S + Send + Sync`.
///
/// # Why a function, not a `MakeService`
///
/// The connections this cache is for connect lazily and are made synchronously: tonic's
/// `Endpoint::connect_lazy`, hyper-util's `Client::builder(..).build(..)`. Their
/// `poll_ready` and their calls do the connecting, inside the task of the consumer that asked.
/// An asynchronous `MakeService` would need someone to drive its future: a background task
/// (one more moving part per key), or the first consumer of the key, in which case every
/// other consumer of that key would wait on that consumer's task, and a consumer that stops
/// polling would stall them all: the head-of-line blocking of seed 003 again. A synchronous
/// maker keeps [`SharedClients::get`](crate::SharedClients::get) synchronous and keeps every
/// wait inside the task of the consumer that waits.
///
/// `make_connection` is called with the cache's lock held: it must not block (connect
/// lazily) and must not call back into the cache.
pub trait MakeConnection<K> {
    /// The connection service.
    type Connection;

    /// Makes a connection to `key`.
    fn make_connection(&self, key: &K) -> Self::Connection;
}

impl<K, S, F> MakeConnection<K> for F
where
    F: Fn(&K) -> S,
{
    type Connection = S;

    fn make_connection(&self, key: &K) -> S {
        self(key)
    }
}
