//! [`RetryLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::backoff::{Backoff, RngSource};
use crate::budget::Budget;
use crate::classify::CloneRequest;
use crate::error::ConfigError;
use crate::metrics::Metrics;
use crate::service::Retry;

/// Wraps services in [`Retry`]. Every clone, and every service it builds, shares one budget,
/// one random source and one set of [metrics](Metrics).
pub struct RetryLayer<C, K = CloneRequest> {
    pub(crate) policy: Arc<Policy<C, K>>,
}

/// Builds a [`RetryLayer`]; see [`RetryLayer::builder`].
pub struct RetryBuilder<C, K = CloneRequest> {
    classify: C,
    replay: K,
    budget: Budget,
    backoff: Backoff,
    max_attempts: u32,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
}

/// A [`Retry`]'s own reference to its layer's shared policy (see [`Retry`]'s docs).
pub(crate) type Handle<C, K> = Arc<Arc<Policy<C, K>>>;

pub(crate) struct Policy<C, K> {
    pub(crate) classify: C,
    pub(crate) replay: K,
    pub(crate) budget: Budget,
    pub(crate) backoff: Backoff,
    pub(crate) rng: RngSource,
    pub(crate) max_attempts: u32,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) metrics: Metrics,
}

// === impl RetryLayer ===

impl<C> RetryLayer<C> {
    /// A layer with the defaults: 3 attempts, [`Budget::default`], [`Backoff::default`], no
    /// timeouts.
    pub fn new(classify: C) -> Self {
        RetryLayer {
            policy: Arc::new(RetryBuilder::new(classify).into_policy()),
        }
    }

    /// A builder starting from the defaults of [`new`](Self::new).
    pub fn builder(classify: C) -> RetryBuilder<C> {
        RetryBuilder::new(classify)
    }
}

impl<C, K> RetryLayer<C, K> {
    /// The counters shared by this layer and every service it built.
    pub fn metrics(&self) -> &Metrics {
        &self.policy.metrics
    }

    /// The budget shared by this layer and every service it built.
    pub fn budget(&self) -> &Budget {
        &self.policy.budget
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

impl<C> RetryBuilder<C> {
    fn new(classify: C) -> Self {
        RetryBuilder {
            classify,
            replay: CloneRequest,
            budget: Budget::default(),
            backoff: Backoff::default(),
            max_attempts: 3,
            attempt_timeout: None,
            deadline: None,
        }
    }
}

impl<C, K> RetryBuilder<C, K> {
    /// How a retry gets its copy of the request (default: [`CloneRequest`]).
    pub fn replay<K2>(self, replay: K2) -> RetryBuilder<C, K2> {
        RetryBuilder {
            classify: self.classify,
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

    /// Attempts per request, the first included (default 3).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Cuts each attempt short after `timeout`; a timed-out attempt is transient.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Caps the whole attempt sequence, backoff included, at `deadline` from the call.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Checks the configuration and builds the layer.
    ///
    /// Refuses a deadline that is not strictly longer than the worst-case backoff total
    /// ([`Backoff::worst_case`] over `max_attempts - 1` retries). That total is computed in
    /// constant time, in nanoseconds that do not overflow, so any `max_attempts` (up to
    /// `u32::MAX`) with any backoff builds at once and gets the right answer.
    pub fn build(self) -> Result<RetryLayer<C, K>, ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::ZeroAttempts);
        }
        self.backoff.validate()?;
        if self.attempt_timeout == Some(Duration::ZERO) || self.deadline == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroTimeout);
        }
        if let Some(deadline) = self.deadline {
            let worst_case = self.backoff.worst_case(self.max_attempts - 1);
            if worst_case >= deadline {
                return Err(ConfigError::BackoffExceedsDeadline {
                    worst_case,
                    deadline,
                });
            }
        }
        Ok(RetryLayer {
            policy: Arc::new(self.into_policy()),
        })
    }

    fn into_policy(self) -> Policy<C, K> {
        Policy {
            rng: RngSource::new(self.backoff.seed_value()),
            metrics: Metrics::new(self.budget.clone()),
            classify: self.classify,
            replay: self.replay,
            budget: self.budget,
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            attempt_timeout: self.attempt_timeout,
            deadline: self.deadline,
        }
    }
}

impl<C, K> fmt::Debug for RetryBuilder<C, K> {
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

// === impl Policy ===

impl<C, K> fmt::Debug for Policy<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("budget", &self.budget)
            .field("backoff", &self.backoff)
            .field("rng", &self.rng)
            .field("max_attempts", &self.max_attempts)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
