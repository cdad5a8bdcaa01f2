//! Classifiers: which results are transient and worth a retry.

use portcullis_pool::Tried;
use std::fmt;
use std::time::Duration;

#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;

/// What a classifier makes of one attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Done: return this result. For an `Err`, [`Retry`](crate::Retry) returns the error
    /// as a failure it cannot mend: its [`StopReason`](crate::StopReason) is `Permanent`,
    /// never `Succeeded`.
    Success,
    /// Failed for good: return this result without retrying.
    Permanent,
    /// Failed transiently: retry if attempts, budget and deadline allow.
    Retry {
        /// A delay the server asked for (`Retry-After`, `grpc-retry-pushback-ms`); used instead
        /// of the backoff's delay for the next retry.
        after: Option<Duration>,
    },
}

impl Decision {
    /// A retry with the backoff's own delay.
    pub const RETRY: Decision = Decision::Retry { after: None };
}

/// Decides whether one attempt's result is worth a retry.
///
/// The request is passed so that a classifier can look at it (the HTTP classifier does not
/// retry non-idempotent methods).
///
/// `E` is the inner service's own error type, as it returned it: [`Retry`](crate::Retry)
/// converts it into a [`BoxError`](crate::BoxError) only after classification, when it gives
/// up. Over a service whose error already is a `BoxError`, classify `Result<&Rsp, &BoxError>`
/// and downcast.
pub trait Classify<Req, Rsp, E> {
    /// Classifies the result of sending `req`.
    fn classify(&self, req: &Req, result: Result<&Rsp, &E>) -> Decision;

    /// Classifies an attempt of `req` that the per-attempt timeout cut short, so there is no
    /// result to look at. By default a timeout is transient; a classifier that refuses to
    /// retry some requests whatever happened (the HTTP one, for non-idempotent methods) says
    /// so here too, since a timed-out request may still have taken effect.
    fn classify_timeout(&self, req: &Req) -> Decision {
        let _ = req;
        Decision::RETRY
    }

    /// Whether `req` may be hedged: a copy sent to another endpoint while the first is still
    /// in flight ([`Hedge`](crate::hedge::Hedge)), which is safe only for a request that may
    /// take effect twice. `false` by default; the HTTP classifier says yes to idempotent
    /// methods, and every built-in classifier to a request marked
    /// [`Hedgeable`](crate::hedge::Hedgeable) where it can see one (an `http::Request`'s
    /// extensions). [`hedge_when`] sets it for any classifier.
    fn hedgeable(&self, req: &Req) -> bool {
        let _ = req;
        false
    }

    /// Whether [`Retry`](crate::Retry) should show this classifier, through
    /// [`classify_error_chain`](Self::classify_error_chain), an error it wanted to retry as a
    /// `dyn Error`. `false` by default.
    ///
    /// A classifier generic over any error type (`E: 'static`, as the HTTP one is) cannot call
    /// `source()` on an `E` of a concrete type it does not know; `Retry` can, as it needs
    /// `E: Into<BoxError>`. Saying `true` costs the boxing of each error the classifier wanted
    /// to retry (the box is kept and given to the caller if the sequence ends with it).
    fn reads_error_chains(&self) -> bool {
        false
    }

    /// Looks again at an error that [`classify`](Self::classify) answered `decision`, a
    /// [`Decision::Retry`], for, now as a `dyn Error` whose whole `source()` chain can be
    /// read. Called by [`Retry`](crate::Retry) only if
    /// [`reads_error_chains`](Self::reads_error_chains) says so. By default, `decision`.
    fn classify_error_chain(
        &self,
        req: &Req,
        error: &(dyn std::error::Error + 'static),
        decision: Decision,
    ) -> Decision {
        let _ = (req, error);
        decision
    }
}

/// Retries the results a predicate returns `true` for; other errors are permanent and other
/// responses succeed. See [`predicate`].
#[derive(Clone)]
pub struct Predicate<F> {
    f: F,
}

/// Retries the results `f` returns `true` for.
///
/// ```
/// use portcullis_retry::classify::{predicate, Classify, Decision};
///
/// let transient = predicate(|res: Result<&u16, &std::io::Error>| matches!(res, Ok(503) | Err(_)));
/// let io = std::io::Error::other("reset");
/// assert_eq!(transient.classify(&(), Ok(&503)), Decision::RETRY);
/// assert_eq!(transient.classify(&(), Ok(&200)), Decision::Success);
/// assert_eq!(transient.classify(&(), Err(&io)), Decision::RETRY);
/// ```
pub fn predicate<F>(f: F) -> Predicate<F> {
    Predicate { f }
}

impl<F, Req, Rsp, E> Classify<Req, Rsp, E> for Predicate<F>
where
    F: Fn(Result<&Rsp, &E>) -> bool,
{
    fn classify(&self, _req: &Req, result: Result<&Rsp, &E>) -> Decision {
        match ((self.f)(result), result.is_ok()) {
            (true, _) => Decision::RETRY,
            (false, true) => Decision::Success,
            (false, false) => Decision::Permanent,
        }
    }
}

impl<F> fmt::Debug for Predicate<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Predicate").finish_non_exhaustive()
    }
}

/// A classifier from a closure that sees the request and returns a [`Decision`]. See
/// [`classify_fn`].
#[derive(Clone)]
pub struct ClassifyFn<F> {
    f: F,
}

/// A classifier from `f(request, result) -> Decision`.
pub fn classify_fn<F>(f: F) -> ClassifyFn<F> {
    ClassifyFn { f }
}

impl<F, Req, Rsp, E> Classify<Req, Rsp, E> for ClassifyFn<F>
where
    F: Fn(&Req, Result<&Rsp, &E>) -> Decision,
{
    fn classify(&self, req: &Req, result: Result<&Rsp, &E>) -> Decision {
        (self.f)(req, result)
    }
}

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFn").finish_non_exhaustive()
    }
}

/// Makes the copy of a request that a retry sends.
pub trait Replay<Req> {
    /// A copy of `req` to send again, or `None` if it cannot be replayed (then the request is
    /// not retried, and a failure that wanted a retry ends as
    /// [`NotReplayable`](crate::StopReason::NotReplayable)).
    fn replay(&self, req: &Req) -> Option<Req>;

    /// Puts `tried` into `req`, so that the pool below sends each copy of a hedged request to
    /// an endpoint the others did not go to (`P2cPool::avoid_tried` finds it there). Called
    /// by [`Hedge`](crate::hedge::Hedge) for every copy it sends. By default nothing: the
    /// copies are picked as any request is. `replay::ReplayRequest` (feature `http`) puts it
    /// into the request's extensions.
    fn tag(&self, req: &mut Req, tried: &Tried) {
        let _ = (req, tried);
    }

    /// Whether all of `req` is there to copy, so that a copy can run beside the one in
    /// flight: [`Hedge`](crate::hedge::Hedge) sends no hedge of a request that is not.
    /// `true` by default; a `replay::ReplayRequest` (feature `http`) is whole once its
    /// body has been read to the end (a copy made before that would take the body over from
    /// the copy in flight, which a retry may do and a hedge must not).
    fn is_whole(&self, req: &Req) -> bool {
        let _ = req;
        true
    }
}

/// The default [`Replay`]: `Req: Clone`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneRequest;

impl<Req: Clone> Replay<Req> for CloneRequest {
    fn replay(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// A [`Replay`] from a closure; see [`replay_fn`].
#[derive(Clone)]
pub struct ReplayFn<F> {
    f: F,
}

/// A [`Replay`] hook from `f(&request) -> Option<request>`.
pub fn replay_fn<F>(f: F) -> ReplayFn<F> {
    ReplayFn { f }
}

impl<F, Req> Replay<Req> for ReplayFn<F>
where
    F: Fn(&Req) -> Option<Req>,
{
    fn replay(&self, req: &Req) -> Option<Req> {
        (self.f)(req)
    }
}

impl<F> fmt::Debug for ReplayFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayFn").finish_non_exhaustive()
    }
}

/// A classifier that answers [`hedgeable`](Classify::hedgeable) with `f` and everything else
/// as `classify` does. See [`hedge_when`].
#[derive(Clone)]
pub struct HedgeWhen<C, F> {
    classify: C,
    f: F,
}

/// `classify`, with requests hedged when `f(request)` says so.
///
/// ```
/// use portcullis_retry::classify::{hedge_when, predicate, Classify};
///
/// let c = hedge_when(predicate(|res: Result<&u16, &std::io::Error>| res.is_err()), |req: &&str| {
///     req.starts_with("GET ")
/// });
/// assert!(Classify::<_, u16, std::io::Error>::hedgeable(&c, &"GET /a"));
/// assert!(!Classify::<_, u16, std::io::Error>::hedgeable(&c, &"POST /a"));
/// ```
pub fn hedge_when<C, F>(classify: C, f: F) -> HedgeWhen<C, F> {
    HedgeWhen { classify, f }
}

impl<C, F, Req, Rsp, E> Classify<Req, Rsp, E> for HedgeWhen<C, F>
where
    C: Classify<Req, Rsp, E>,
    F: Fn(&Req) -> bool,
{
    fn classify(&self, req: &Req, result: Result<&Rsp, &E>) -> Decision {
        self.classify.classify(req, result)
    }

    fn classify_timeout(&self, req: &Req) -> Decision {
        self.classify.classify_timeout(req)
    }

    fn hedgeable(&self, req: &Req) -> bool {
        (self.f)(req)
    }

    fn reads_error_chains(&self) -> bool {
        self.classify.reads_error_chains()
    }

    fn classify_error_chain(
        &self,
        req: &Req,
        error: &(dyn std::error::Error + 'static),
        decision: Decision,
    ) -> Decision {
        self.classify.classify_error_chain(req, error, decision)
    }
}

impl<C: fmt::Debug, F> fmt::Debug for HedgeWhen<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeWhen")
            .field("classify", &self.classify)
            .finish_non_exhaustive()
    }
}

/// Whether `error` says that a [`PoolQueue`](portcullis_pool::PoolQueue) refused the request
/// rather than that an endpoint failed it: a [`FailFast`](portcullis_pool::FailFast) (no
/// endpoint has been ready for the failfast timeout) or a [`NoSlot`](portcullis_pool::NoSlot)
/// (the queue stayed full), found anywhere in the `source()` chain of `error` where `error` is
/// one of the queue's errors, a [`BoxError`](crate::BoxError) (or another boxed error), or a
/// tonic `Status` (made from one, say). `E` needs no `Error` bound, so an error of any other
/// type cannot be looked into here: for one of your own types, call
/// [`is_queue_refusal_in`] (as [`Classify::classify_error_chain`] lets a classifier do).
///
/// Retrying such a request sends it straight back into the queue that refused it: it spends
/// budget and cannot succeed sooner than the queue recovers. The HTTP and gRPC classifiers
/// therefore treat it as permanent unless told otherwise.
///
/// A request a full queue shed ([`Overloaded`](portcullis_pool::Overloaded)) is not a
/// refusal here: it is never retried, whatever a classifier is told (see
/// [`is_overloaded_in`]).
///
/// ```
/// use portcullis_retry::{classify::is_queue_refusal, BoxError};
///
/// let refused: BoxError = "connection refused".into();
/// assert!(!is_queue_refusal(&refused));
/// ```
pub fn is_queue_refusal<E: 'static>(error: &E) -> bool {
    as_error(error).is_some_and(is_queue_refusal_in)
}

/// Whether `error` or any error in its `source()` chain is a queue refusal
/// ([`FailFast`](portcullis_pool::FailFast) or [`NoSlot`](portcullis_pool::NoSlot)), whatever
/// the type of `error`: a classifier over a concrete error type of its own calls this.
/// [`Overloaded`](portcullis_pool::Overloaded) is not one ([`is_overloaded_in`] finds it).
///
/// ```
/// use portcullis_retry::classify::is_queue_refusal_in;
///
/// let reset = std::io::Error::other("connection reset");
/// assert!(!is_queue_refusal_in(&reset));
/// ```
pub fn is_queue_refusal_in(error: &(dyn std::error::Error + 'static)) -> bool {
    chain_holds(error, |e| {
        e.is::<portcullis_pool::FailFast>() || e.is::<portcullis_pool::NoSlot>()
    })
}

/// Whether `error` or any error in its `source()` chain is a
/// [`Overloaded`](portcullis_pool::Overloaded): a [`PoolQueue`](portcullis_pool::PoolQueue)
/// built to shed when full (`PoolQueueBuilder::shed_when_full`) was full, and failed the
/// request at once without sending it anywhere.
///
/// The HTTP and gRPC classifiers never retry it, even told to retry queue refusals
/// (`retry_queue_refusals(true)`): the queue shed the
/// request because it already holds all it can, and a retry now would go back into the same
/// full queue, adding to the load it is shedding (a retry storm at the worst time). The
/// caller is better answered at once (an HTTP 503, a gRPC `RESOURCE_EXHAUSTED`). A hedge that
/// a full queue shed is no success either, so it never answers for its request.
///
/// ```
/// use portcullis_retry::classify::is_overloaded_in;
///
/// let reset = std::io::Error::other("connection reset");
/// assert!(!is_overloaded_in(&reset));
/// ```
pub fn is_overloaded_in(error: &(dyn std::error::Error + 'static)) -> bool {
    chain_holds(error, |e| e.is::<portcullis_pool::Overloaded>())
}

/// Whether `error` or any error in its `source()` chain says that a queue has stopped for
/// good: [`PoolFailed`](portcullis_pool::PoolFailed) (its discovery or its pool failed) or
/// [`WorkerGone`](portcullis_pool::WorkerGone). Every later request through that queue gets
/// the same error at once, so the HTTP and gRPC classifiers never retry it.
pub fn is_queue_stopped_in(error: &(dyn std::error::Error + 'static)) -> bool {
    chain_holds(error, |e| {
        e.is::<portcullis_pool::PoolFailed>() || e.is::<portcullis_pool::WorkerGone>()
    })
}

fn chain_holds(
    error: &(dyn std::error::Error + 'static),
    found: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if found(error) {
            return true;
        }
        next = error.source();
    }
    false
}

/// `error` as a `dyn Error`, where its type is one that can be seen as such without an
/// `Error` bound: a boxed error, a `tonic::Status`, or one of the queue's own errors.
pub(crate) fn as_error<E: 'static>(error: &E) -> Option<&(dyn std::error::Error + 'static)> {
    let any: &dyn std::any::Any = error;
    if let Some(boxed) = any.downcast_ref::<crate::BoxError>() {
        return Some(&**boxed);
    }
    if let Some(boxed) = any.downcast_ref::<Box<dyn std::error::Error + Send>>() {
        return Some(&**boxed);
    }
    if let Some(boxed) = any.downcast_ref::<Box<dyn std::error::Error>>() {
        return Some(&**boxed);
    }
    #[cfg(feature = "grpc")]
    if let Some(status) = any.downcast_ref::<tonic::Status>() {
        return Some(status);
    }
    if let Some(e) = any.downcast_ref::<portcullis_pool::FailFast>() {
        return Some(e);
    }
    if let Some(e) = any.downcast_ref::<portcullis_pool::NoSlot>() {
        return Some(e);
    }
    if let Some(e) = any.downcast_ref::<portcullis_pool::Overloaded>() {
        return Some(e);
    }
    if let Some(e) = any.downcast_ref::<portcullis_pool::PoolFailed>() {
        return Some(e);
    }
    if let Some(e) = any.downcast_ref::<portcullis_pool::WorkerGone>() {
        return Some(e);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicate_maps_false_to_success_or_permanent() {
        let p = predicate(|r: Result<&u16, &&str>| matches!(r, Ok(503)));
        assert_eq!(p.classify(&(), Ok(&503)), Decision::RETRY);
        assert_eq!(p.classify(&(), Ok(&404)), Decision::Success);
        assert_eq!(p.classify(&(), Err(&"boom")), Decision::Permanent);
    }

    #[test]
    fn classify_fn_sees_the_request() {
        let c = classify_fn(|req: &&str, _res: Result<&(), &()>| {
            if *req == "GET" {
                Decision::RETRY
            } else {
                Decision::Permanent
            }
        });
        assert_eq!(c.classify(&"GET", Err(&())), Decision::RETRY);
        assert_eq!(c.classify(&"POST", Err(&())), Decision::Permanent);
    }

    #[test]
    fn replay_hooks() {
        assert_eq!(CloneRequest.replay(&7u8), Some(7));
        let never = replay_fn(|_: &u8| None);
        assert_eq!(never.replay(&7), None);
    }
}
