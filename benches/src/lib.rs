//! What the benchmarks in `benches/` share: the trivial endpoint every comparison runs over.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};
use tower_service::Service;

/// An endpoint that is always ready and answers each request with itself at once, so that a
/// benchmark measures the middleware in front of it and nothing else.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request))
    }
}
