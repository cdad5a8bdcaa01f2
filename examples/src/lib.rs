//! Shared pieces of the runnable examples: real HTTP backends on 127.0.0.1, an HTTP endpoint
//! service over a shared hyper client, and a small SVG latency plot. The examples' integration
//! tests use them too.
#![forbid(unsafe_code)]

pub mod backend;
pub mod echo;
pub mod endpoint;
pub mod grpc;
pub mod plot;
pub mod proxy;
pub mod shared;

/// Whether `error` or any error in its `source()` chain is an `E` (a queue's `FailFast` inside a
/// status or a retry's error, say).
pub fn chain_holds<E: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    std::iter::successors(Some(error), |error| error.source()).any(|error| error.is::<E>())
}
