//! 100,000 discovery updates applied while idle are all applied, and the worker's memory does
//! not grow with them: the failure mode of seed 002, where an idle balancer buffered every
//! update it had not read.
//!
//! Memory is measured with portcullis-test's counting global allocator, which is why this
//! test has a binary of its own.

mod support;

use portcullis_pool::Update;
use portcullis_test::alloc::CountingAllocator;
use support::*;
use tokio_test::assert_pending;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::new();

fn live_bytes() -> isize {
    ALLOCATOR.live_bytes()
}

const BATCH: usize = 1_000;
const BATCHES: usize = 100;

/// Sends one batch of resets alternating between two endpoint sets, so the pool's own set
/// stays the same size, and runs the worker until it has applied them. It yields between
/// polls as a spawned worker would, so that tokio's cooperative budget (128 channel receives
/// a turn) is renewed.
async fn churn(h: &mut Harness) {
    let target = h.control.updates_received() + BATCH as u64;
    for i in 0..BATCH {
        let set = if i % 2 == 0 {
            vec![("a", 1), ("b", 2)]
        } else {
            vec![("b", 2), ("c", 3)]
        };
        h.discovery.send(Update::Reset(set));
    }
    while h.control.updates_received() < target {
        assert_pending!(h.worker.poll());
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn hundred_thousand_updates_while_idle_are_applied_and_memory_stays_flat() {
    let mut h = harness(16);
    h.control.forget_updates();
    assert_pending!(h.worker.poll());

    // Warm up: let the channel and the pool reach their steady-state allocations.
    churn(&mut h).await;
    let baseline = live_bytes();

    let mut peak_growth = 0;
    for _ in 0..BATCHES {
        churn(&mut h).await;
        peak_growth = peak_growth.max(live_bytes() - baseline);
    }

    eprintln!("baseline live heap {baseline} bytes, peak growth {peak_growth} bytes");
    let applied = (BATCHES + 1) * BATCH;
    assert_eq!(h.queue.metrics().updates().reset, applied as u64);
    assert_eq!(h.control.updates_received(), applied as u64);
    assert_eq!(h.control.calls(), 0, "no request was ever sent");
    // Each update carries a two-entry Vec (≥ 48 bytes on the heap): keeping even a tenth of
    // them would be ≥ 480 KB. The bound leaves room for the channel's block recycling only.
    assert!(
        peak_growth < 64 * 1024,
        "live heap grew by {peak_growth} bytes over {} updates",
        BATCHES * BATCH
    );
}
