//! Small helpers for tests on tokio's paused clock (`#[tokio::test(start_paused = true)]`):
//! [`ms`] to write delays, [`settle`] to let every task run before the test looks.

use std::time::Duration;

/// `n` milliseconds: `ms(250)` reads shorter than `Duration::from_millis(250)` in a test that
/// writes many delays.
///
/// ```
/// use portcullis_test::time::ms;
/// use std::time::Duration;
///
/// assert_eq!(ms(1_500), Duration::from_millis(1_500));
/// ```
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Lets every task run until the runtime is idle, then returns, one millisecond later on
/// tokio's clock.
///
/// On the paused clock time only moves when every task is idle, so a one-millisecond sleep
/// completes exactly then: after `settle().await` every spawned task (a queue's worker, say)
/// has done all it could without time passing, deterministically. On a running clock it is an
/// ordinary one-millisecond sleep and gives no such guarantee.
///
/// ```
/// use portcullis_test::time::{ms, settle};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use tokio::sync::mpsc;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
/// let handled = Arc::new(AtomicUsize::new(0));
/// let count = handled.clone();
/// tokio::spawn(async move {
///     while rx.recv().await.is_some() {
///         tokio::task::yield_now().await;
///         count.fetch_add(1, Ordering::SeqCst);
///     }
/// });
/// for n in 0..3 {
///     tx.send(n).unwrap();
/// }
///
/// let start = tokio::time::Instant::now();
/// settle().await;
/// assert_eq!(handled.load(Ordering::SeqCst), 3, "the worker has handled every message");
/// assert_eq!(start.elapsed(), ms(1));
/// # }
/// ```
pub async fn settle() {
    tokio::time::sleep(ms(1)).await;
}
