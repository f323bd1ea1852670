use tower_layer::Layer;

use super::service::Loads;
use super::{Balance, Policy};
use crate::breaker::Breakers;

/// Applies [`Balance`]. See the [module docs](crate::balance).
#[derive(Debug, Clone, Default)]
pub struct BalanceLayer {
    pub(super) policy: Policy,
    pub(super) breakers: Option<Breakers>,
    pub(super) loads: Loads,
}

// === impl BalanceLayer ===

impl BalanceLayer {
    /// Balances with `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// Keeps in-flight counts in a shared table, such as the gateway's.
    pub fn with_replicas(mut self, replicas: crate::replicas::Replicas) -> Self {
        self.loads.replicas = replicas;
        self
    }

    /// Skips replicas whose circuit in `breakers` is open.
    pub fn skip_open(mut self, breakers: Breakers) -> Self {
        self.breakers = Some(breakers);
        self
    }
}

impl<S> Layer<S> for BalanceLayer {
    type Service = Balance<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Balance {
            inner,
            config: self.clone(),
        }
    }
}
