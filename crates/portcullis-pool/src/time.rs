//! Instants a timeout or a deadline ends at, the same way in every crate.

use std::time::Duration;
use tokio::time::Instant;

/// Where a timeout too long to represent as an instant ends, as tokio's own `sleep` does
/// (about 30 years from now).
pub const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `start + duration`, or a far-future instant when that does not fit, so that a huge timeout
/// means "practically never", not "none" nor an overflow. `start` itself only when even the
/// far future does not fit (the clock is at its end).
///
/// ```
/// use portcullis_pool::time::{deadline_after, FAR_FUTURE};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let now = Instant::now();
/// assert_eq!(deadline_after(now, Duration::from_secs(1)), now + Duration::from_secs(1));
/// assert_eq!(deadline_after(now, Duration::MAX), now + FAR_FUTURE);
/// ```
pub fn deadline_after(start: Instant, duration: Duration) -> Instant {
    start
        .checked_add(duration)
        .or_else(|| start.checked_add(FAR_FUTURE))
        .unwrap_or(start)
}
