//! The handles users share across tasks and frameworks are `Clone + Send + Sync` (axum's
//! `route_service`, for one, requires `Send + Sync` services), and their metrics handles are
//! too. Checked at compile time: this file fails to build if one stops being so.
#![cfg(feature = "http")]

use portcullis::fanout::FanOut;
use portcullis::p2c::P2cPool;
use portcullis::pool::{PoolQueue, PoolQueueMetrics};
use portcullis::retry::{classify::http::HttpClassify, Budget, Retry};
use portcullis_test::endpoint::SimEndpoint;
use portcullis_test::pool::MockResponse;

fn shared<T: Clone + Send + Sync + 'static>() {}
fn sendable<T: Send + 'static>() {}

#[test]
fn handles_are_clone_send_and_sync() {
    shared::<PoolQueue<u32, MockResponse<u32>>>();
    shared::<PoolQueueMetrics>();
    shared::<Retry<PoolQueue<http::Request<()>, MockResponse<http::Response<()>>>, HttpClassify>>();
    shared::<Budget>();
    shared::<FanOut<u32, SimEndpoint<u32, u32>>>();
    shared::<portcullis::fanout::FanOutMetrics>();
    shared::<portcullis::p2c::P2cMetrics>();
    shared::<portcullis::retry::RetryMetrics>();
}

#[test]
fn the_pool_moves_into_the_worker_task() {
    type Maker = fn(&u32, &()) -> SimEndpoint<u32, u32>;
    sendable::<P2cPool<u32, (), portcullis::p2c::make::PeakEwmaMaker<Maker>, u32>>();
}
