//! The budget shared by layer clones on a multi-thread runtime stays exact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use portcullis_retry::classify::predicate;
use portcullis_retry::{Backoff, Budget, Retry};
use tower::{service_fn, Layer, ServiceExt};

/// The inner error: a unit error, as `Retry` needs `S::Error: Into<BoxError>`.
#[derive(Debug)]
struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Failed {}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_budget_is_exact_across_tasks() {
    let budget = Budget::builder()
        .ratio(0.25)
        .min_per_sec(0)
        .ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let layer = Retry::builder()
        .budget(budget.clone())
        .backoff(
            Backoff::new(Duration::ZERO, 1.0, Duration::ZERO)
                .unwrap()
                .seed(3),
        )
        .max_attempts(2)
        .build_layer(predicate(|res: Result<&u16, &Failed>| res.is_err()))
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let layer = layer.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                for i in 0..2_000u64 {
                    let calls = calls.clone();
                    // Every other first attempt fails and asks for a retry.
                    let svc = layer.layer(service_fn(move |attempt: bool| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        async move {
                            if attempt {
                                Err(Failed)
                            } else {
                                Ok(200u16)
                            }
                        }
                    }));
                    let _ = svc.oneshot((i + t) % 2 == 0).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = layer.metrics().snapshot();
    assert_eq!(s.requests, 16_000);
    // 16 000 deposits at 1/4 pay for exactly 4 000 retries; 8 000 wanted one.
    assert_eq!(s.retries + budget.balance(), 4_000);
    assert_eq!(s.retries + s.budget_refusals, 8_000);
    assert_eq!(calls.load(Ordering::Relaxed), s.attempts);
}
