//! A million random get/drop cycles leave memory flat and nothing open. In a file of its own:
//! the counting allocator is this binary's global allocator.

mod support;

use portcullis_share::{Lease, SharedClients};
use portcullis_test::alloc::CountingAllocator;
use portcullis_test::endpoint::SimControl;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use support::SimConn;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::new();

/// `cycles` random steps over 1,000 keys: take a lease on a random key (while fewer than 256
/// are held) or drop a random one.
fn churn(
    clients: &SharedClients<u32, SimConn>,
    held: &mut Vec<Lease<u32, SimConn>>,
    rng: &mut SmallRng,
    cycles: usize,
) -> usize {
    let mut gets = 0;
    for _ in 0..cycles {
        if held.len() < 256 && rng.gen_bool(0.5) {
            held.push(clients.get(rng.gen_range(0..1_000)));
            gets += 1;
        } else if !held.is_empty() {
            let at = rng.gen_range(0..held.len());
            drop(held.swap_remove(at));
        }
    }
    gets
}

/// A maker that keeps no record of what it built (a record would grow with the churn): one
/// replica control counts the connections alive.
fn maker(control: &SimControl) -> impl Fn(&u32) -> SimConn + Send + Sync + 'static {
    let control = control.clone();
    move |_: &u32| SimConn::new(&control, 100)
}

#[test]
fn a_million_get_drop_cycles_leave_memory_flat_and_nothing_open() {
    let control = SimControl::new();
    let clients = SharedClients::builder()
        .max_connections(2)
        .build(maker(&control))
        .unwrap();
    let mut rng = SmallRng::seed_from_u64(3);
    let mut held = Vec::with_capacity(256);

    // Warm up: the table and the held set reach their working size.
    churn(&clients, &mut held, &mut rng, 100_000);
    let warm = ALLOCATOR.live_bytes();
    let mut peak = warm;
    for _ in 0..9 {
        churn(&clients, &mut held, &mut rng, 100_000);
        peak = peak.max(ALLOCATOR.live_bytes());
    }
    // The held leases and their connections come and go; what stays is bounded by the 256
    // held at most (a few hundred bytes each), not by the million cycles.
    assert!(
        peak - warm < 256 * 1024,
        "grew {} bytes over 900,000 cycles",
        peak - warm
    );

    held.clear();
    let snapshot = clients.metrics().snapshot();
    assert_eq!(
        (snapshot.keys, snapshot.connections, snapshot.leases),
        (0, 0, 0)
    );
    assert_eq!(snapshot.builds, snapshot.closes);
    assert!(snapshot.builds > 100_000, "the churn did open and close");
    assert_eq!(control.alive(), 0, "every connection dropped");
    assert!(
        ALLOCATOR.live_bytes() <= warm,
        "{} bytes left after everything was dropped, {warm} at warm-up",
        ALLOCATOR.live_bytes()
    );
}

#[tokio::test(start_paused = true)]
async fn churn_with_an_idle_grace_closes_everything_once_it_ends() {
    const GRACE: Duration = Duration::from_millis(50);
    let control = SimControl::new();
    let clients = SharedClients::builder()
        .max_connections(2)
        .idle_grace(GRACE)
        .build(maker(&control))
        .unwrap();
    let mut rng = SmallRng::seed_from_u64(5);
    let mut held = Vec::new();
    let mut gets = 0;
    for _ in 0..1_000 {
        gets += churn(&clients, &mut held, &mut rng, 100);
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    let builds = clients.metrics().snapshot().builds;
    held.clear();
    tokio::time::advance(GRACE).await;
    portcullis_test::time::settle().await;
    let snapshot = clients.metrics().snapshot();
    assert_eq!((snapshot.keys, snapshot.connections), (0, 0));
    assert_eq!(control.alive(), 0);
    assert!(
        builds * 4 < gets as u64,
        "the grace saves reconnects: {builds} builds for {gets} gets"
    );
}
