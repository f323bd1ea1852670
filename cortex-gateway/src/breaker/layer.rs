use std::num::NonZeroU32;
use std::time::Duration;

use tower_layer::Layer;

use super::{Breakers, CircuitBreaker};
use crate::breaker::state::Policy;

/// Applies [`CircuitBreaker`]. See the [module docs](crate::breaker).
#[derive(Debug, Clone, Default)]
pub struct CircuitBreakerLayer {
    pub(super) breakers: Breakers,
    pub(super) policy: Policy,
}

// === impl CircuitBreakerLayer ===

impl CircuitBreakerLayer {
    /// Five consecutive failures open a circuit for 30 s, doubling up to 5 minutes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses (and fills) a shared table of circuits, such as the one the balancer reads.
    pub fn breakers(mut self, breakers: Breakers) -> Self {
        self.breakers = breakers;
        self
    }

    /// Settings checked: `failures` consecutive failures open a circuit for `cooldown` (± 20%
    /// jitter), doubling after failed probes up to `max_cooldown`.
    ///
    /// # Errors
    ///
    /// [`InvalidBreaker`] naming the setting: no failures, a zero cooldown, or a maximum below
    /// the cooldown.
    pub fn try_new(
        failures: u32,
        cooldown: Duration,
        max_cooldown: Duration,
    ) -> Result<Self, InvalidBreaker> {
        let failures = NonZeroU32::new(failures).ok_or(InvalidBreaker::NoFailures)?;
        if cooldown.is_zero() {
            return Err(InvalidBreaker::ZeroCooldown);
        }
        if max_cooldown < cooldown {
            return Err(InvalidBreaker::MaxBelowCooldown {
                cooldown,
                max_cooldown,
            });
        }
        let mut layer = Self::new();
        layer.policy.failures = failures;
        layer.policy.cooldown = cooldown;
        layer.policy.max_cooldown = max_cooldown;
        Ok(layer)
    }

    /// Consecutive failures that open a circuit (default 5).
    pub fn failures(mut self, n: NonZeroU32) -> Self {
        self.policy.failures = n;
        self
    }

    /// How long a circuit stays open before the probe (default 30 s).
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.policy.cooldown = cooldown;
        self.policy.max_cooldown = self.policy.max_cooldown.max(cooldown);
        self
    }

    /// The longest cooldown after failed probes (default 5 minutes).
    pub fn max_cooldown(mut self, max: Duration) -> Self {
        self.policy.max_cooldown = max.max(self.policy.cooldown);
        self
    }

    /// The table of circuits.
    pub fn table(&self) -> &Breakers {
        &self.breakers
    }
}

/// Breaker settings that cannot work, from [`CircuitBreakerLayer::try_new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidBreaker {
    /// `failures` is 0: a circuit would open before any request.
    NoFailures,
    /// `cooldown` is 0: an open circuit would never refuse anything.
    ZeroCooldown,
    /// `max_cooldown` is below `cooldown`.
    MaxBelowCooldown {
        /// The cooldown.
        cooldown: Duration,
        /// The maximum given.
        max_cooldown: Duration,
    },
}

impl std::fmt::Display for InvalidBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoFailures => f.write_str("breaker failures must be at least 1"),
            Self::ZeroCooldown => f.write_str("breaker cooldown must be more than 0 s"),
            Self::MaxBelowCooldown {
                cooldown,
                max_cooldown,
            } => write!(
                f,
                "breaker max_cooldown ({max_cooldown:?}) is below its cooldown ({cooldown:?})"
            ),
        }
    }
}

impl std::error::Error for InvalidBreaker {}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            config: self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_work_are_errors() {
        let s = Duration::from_secs;
        assert_eq!(
            CircuitBreakerLayer::try_new(0, s(30), s(300)).unwrap_err(),
            InvalidBreaker::NoFailures
        );
        assert_eq!(
            CircuitBreakerLayer::try_new(5, Duration::ZERO, s(300)).unwrap_err(),
            InvalidBreaker::ZeroCooldown
        );
        assert!(
            CircuitBreakerLayer::try_new(5, s(30), s(10))
                .unwrap_err()
                .to_string()
                .contains("below its cooldown")
        );
        assert!(CircuitBreakerLayer::try_new(1, s(1), s(1)).is_ok());
    }
}
