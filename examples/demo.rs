//! The README's first command: a `PoolQueue` over a pool, fed discovery updates while idle,
//! serving requests, failing fast when no endpoint is ready and recovering on its own.
//!
//! The pool here is portcullis-test's mock pool, answered by a task that stands in for the
//! endpoints, so the run needs nothing but this program.

use portcullis_pool::{PoolQueue, PoolQueueConfig, Update};
use portcullis_test::{discovery, pool};
use std::time::{Duration, Instant};
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let (mock, control) = pool::pair::<String, u16, u32, String>();
    let (updates, stream) = discovery::channel();
    let config = PoolQueueConfig::new(32, Duration::from_millis(200))?;
    let queue = PoolQueue::new(mock, stream, config)?;
    let metrics = queue.metrics();

    // Stands in for the endpoints: answers every request the pool is called with.
    let endpoints = control.clone();
    tokio::spawn(async move {
        loop {
            let (request, responder) = endpoints.next_request().await;
            responder.respond(format!("response to request {request}"));
        }
    });

    println!("1. discovery adds two endpoints while no request flows");
    updates.send(Update::Add(vec![
        ("10.0.0.1:80".into(), 80),
        ("10.0.0.2:80".into(), 80),
    ]));
    updates.remove("10.0.0.2:80".into());
    tokio::time::sleep(Duration::from_millis(10)).await;
    println!(
        "   applied while idle: {:?} (updates: {:?})",
        control.endpoints(),
        metrics.updates()
    );

    println!("2. the endpoint is ready: requests are dispatched");
    control.set_ready(true);
    for i in 0..3 {
        let response = queue.clone().oneshot(i).await?;
        println!("   request {i}: {response}");
    }

    println!("3. no endpoint is ready: waiting requests fail fast after 200 ms");
    control.set_ready(false);
    let waited = Instant::now();
    let error = queue.clone().oneshot(3).await.unwrap_err();
    println!("   request 3 failed after {:?}: {error}", waited.elapsed());
    let at_once = Instant::now();
    let error = queue.clone().oneshot(4).await.unwrap_err();
    println!(
        "   request 4, during failfast, failed in {:?}: {error}",
        at_once.elapsed()
    );

    println!("4. an endpoint is ready again: the queue leaves failfast on its own");
    control.set_ready(true);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let response = queue.clone().oneshot(5).await?;
    println!("   request 5: {response}");

    let snapshot = metrics.snapshot();
    println!(
        "done in {:?}: failfast entered {} / exited {}, dispatched {} (p99 in queue {} µs)",
        started.elapsed(),
        snapshot.failfast_entered,
        snapshot.failfast_exited,
        snapshot.in_queue.dispatched.len(),
        snapshot.in_queue.dispatched.value_at_quantile(0.99),
    );
    Ok(())
}
