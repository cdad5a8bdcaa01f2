//! The conditions every portcullis service can meet, one type each, shared by every crate.

use std::fmt;

/// `call` was invoked without a successful `poll_ready` before it. The request was not sent.
///
/// Every portcullis service answers this way rather than panicking, as tower's contract
/// allows.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NotReady(());

impl NotReady {
    /// The error, for a service of another crate that keeps the same contract.
    pub const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("service called before poll_ready returned ready")
    }
}

impl std::error::Error for NotReady {}

/// A response future was polled again after it had returned its output.
///
/// Every portcullis response future answers this way rather than panicking or staying pending.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PolledAfterCompletion(());

impl PolledAfterCompletion {
    /// The error, for a future of another crate that keeps the same contract.
    pub const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for PolledAfterCompletion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response future polled after completion")
    }
}

impl std::error::Error for PolledAfterCompletion {}
