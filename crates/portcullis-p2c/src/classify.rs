//! What counts as an endpoint's failure: every `Err`, and the `Ok` responses a
//! [`ClassifyResponse`] calls failures (an HTTP 5xx, a gRPC `UNAVAILABLE`).
//!
//! One classifier serves both uses of outcomes in this crate: the pool's outlier ejection and
//! demotion
//! ([`P2cPoolBuilder::build_with_classify`](crate::P2cPoolBuilder::build_with_classify)) and
//! the failure-aware load ([`failure::failure_aware`](crate::failure::failure_aware)). The
//! facade `portcullis` has classifiers for HTTP and gRPC responses.

/// Decides whether a successful (`Ok`) response counts as a failure of the endpoint.
///
/// Implemented for every `Fn(&Rsp) -> bool`; an `Err` is always a failure.
pub trait ClassifyResponse<Rsp> {
    /// Whether `response` is a failure (an `Err` always is).
    fn is_failure(&self, response: &Rsp) -> bool;
}

impl<Rsp, F> ClassifyResponse<Rsp> for F
where
    F: Fn(&Rsp) -> bool,
{
    fn is_failure(&self, response: &Rsp) -> bool {
        self(response)
    }
}

/// A classifier for which only `Err` is a failure: the default.
#[derive(Copy, Clone, Debug, Default)]
pub struct ErrorsOnly;

impl<Rsp> ClassifyResponse<Rsp> for ErrorsOnly {
    fn is_failure(&self, _: &Rsp) -> bool {
        false
    }
}
