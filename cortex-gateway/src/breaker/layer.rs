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

    /// Consecutive failures that open a circuit (default 5).
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    pub fn failures(mut self, n: u32) -> Self {
        self.policy.failures =
            NonZeroU32::new(n).expect("a circuit opens after at least 1 failure");
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

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            config: self.clone(),
        }
    }
}
