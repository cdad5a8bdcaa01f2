//! [`RetryLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::backoff::{Backoff, RngSource};
use crate::budget::Budget;
use crate::classify::CloneRequest;
use crate::error::BuildError;
use crate::metrics::RetryMetrics;
use crate::policy::Policy;
use crate::service::Retry;

/// Wraps services in [`Retry`]. Every clone, and every service it builds, shares one budget,
/// one random source and one set of [metrics](RetryMetrics). Made by
/// [`RetryBuilder::build_layer`].
pub struct RetryLayer<C, K = CloneRequest> {
    pub(crate) policy: Arc<Policy<C, K>>,
}

/// Builds a [`Retry`] or its [`RetryLayer`]: attempts, timeouts, backoff, budget and how a
/// request is replayed; see [`Retry::builder`].
///
/// The settings are checked when the layer or service is built, and only then
/// ([`build_layer`](Self::build_layer), [`build`](Self::build)); the classifier, what the
/// retries are decided by, is given there.
#[derive(Clone)]
pub struct RetryBuilder<K = CloneRequest> {
    replay: K,
    budget: Budget,
    backoff: Backoff,
    max_attempts: u32,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
}

// === impl RetryLayer ===

impl<C, K> RetryLayer<C, K> {
    /// The counters shared by this layer and every service it built.
    pub fn metrics(&self) -> RetryMetrics {
        self.policy.metrics.clone()
    }

    /// The budget shared by this layer and every service it built.
    pub fn budget(&self) -> Budget {
        self.policy.budget.clone()
    }

    /// Attempts per request, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.policy.max_attempts
    }

    /// The per-attempt timeout, if any.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.policy.attempt_timeout
    }

    /// The deadline of a whole attempt sequence, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.policy.deadline
    }

    /// The backoff between attempts.
    pub fn backoff(&self) -> Backoff {
        self.policy.backoff
    }
}

impl<S, C, K> Layer<S> for RetryLayer<C, K> {
    type Service = Retry<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_policy(inner, self.policy.clone())
    }
}

impl<C, K> Clone for RetryLayer<C, K> {
    fn clone(&self) -> Self {
        RetryLayer {
            policy: self.policy.clone(),
        }
    }
}

impl<C, K> fmt::Debug for RetryLayer<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .finish()
    }
}

// === impl RetryBuilder ===

impl RetryBuilder {
    /// The default [`max_attempts`](Self::max_attempts).
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

    /// The defaults: [`DEFAULT_MAX_ATTEMPTS`](Self::DEFAULT_MAX_ATTEMPTS) attempts,
    /// [`Budget::default`], [`Backoff::default`], no timeouts, requests replayed by cloning.
    pub fn new() -> Self {
        RetryBuilder {
            replay: CloneRequest,
            budget: Budget::default(),
            backoff: Backoff::default(),
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            attempt_timeout: None,
            deadline: None,
        }
    }
}

impl Default for RetryBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> RetryBuilder<K> {
    /// How a retry gets its copy of the request (default: [`CloneRequest`]).
    pub fn replay<K2>(self, replay: K2) -> RetryBuilder<K2> {
        RetryBuilder {
            replay,
            budget: self.budget,
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            attempt_timeout: self.attempt_timeout,
            deadline: self.deadline,
        }
    }

    /// The budget; pass a clone of one [`Budget`] to share it between layers.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// The backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Attempts per request, the first included. At least 1.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Cuts each attempt short after `timeout`; a timed-out attempt is transient. Not zero.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Caps the whole attempt sequence, backoff included, at `deadline` from the call. Longer
    /// than the backoff's worst case.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Checks the settings and builds a layer whose retries `classify` decides.
    ///
    /// Refuses a deadline that is not strictly longer than the worst-case backoff total
    /// ([`Backoff::worst_case`] over `max_attempts - 1` retries). That total is computed in
    /// constant time, in nanoseconds that do not overflow, so any `max_attempts` (up to
    /// `u32::MAX`) with any backoff builds at once and gets the right answer.
    pub fn build_layer<C>(self, classify: C) -> Result<RetryLayer<C, K>, BuildError> {
        self.check()?;
        Ok(RetryLayer {
            policy: Arc::new(self.into_policy(classify)),
        })
    }

    /// Checks the settings and wraps `inner` in a [`Retry`] whose retries `classify` decides.
    pub fn build<S, C>(self, inner: S, classify: C) -> Result<Retry<S, C, K>, BuildError> {
        Ok(self.build_layer(classify)?.layer(inner))
    }

    fn check(&self) -> Result<(), BuildError> {
        if self.max_attempts == 0 {
            return Err(BuildError::ZeroAttempts);
        }
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(BuildError::ZeroAttemptTimeout);
        }
        if self.deadline == Some(Duration::ZERO) {
            return Err(BuildError::ZeroDeadline);
        }
        if let Some(deadline) = self.deadline {
            let worst_case = self.backoff.worst_case(self.max_attempts - 1);
            if worst_case >= deadline {
                return Err(BuildError::BackoffExceedsDeadline {
                    worst_case,
                    deadline,
                });
            }
        }
        Ok(())
    }

    fn into_policy<C>(self, classify: C) -> Policy<C, K> {
        Policy {
            rng: RngSource::new(self.backoff.seed_value()),
            metrics: RetryMetrics::new(self.budget.clone()),
            classify,
            replay: self.replay,
            budget: self.budget,
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            attempt_timeout: self.attempt_timeout,
            deadline: self.deadline,
        }
    }
}

impl<K> fmt::Debug for RetryBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("budget", &self.budget)
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
