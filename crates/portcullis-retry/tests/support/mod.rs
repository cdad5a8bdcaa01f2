//! Settings the retry scenario tests share.
#![allow(dead_code, unreachable_pub)]

use portcullis_retry::{Backoff, Jitter, Retry, RetryBuilder};
use portcullis_test::time::ms;
use std::time::Duration;

/// Three attempts, 10 ms apart with no jitter, inside a 1 s deadline: a retry whose every
/// step a paused-time test can predict.
pub fn three_attempts_10ms_apart() -> RetryBuilder {
    Retry::builder()
        .max_attempts(3)
        .backoff(
            Backoff::new(ms(10), 1.0, ms(10))
                .unwrap_or_else(|error| panic!("a valid backoff: {error}"))
                .jitter(Jitter::None),
        )
        .deadline(Duration::from_secs(1))
}
