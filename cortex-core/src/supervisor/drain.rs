//! [`Drain`]: what a stop waits for between taking an endpoint out of the registry and stopping
//! its instance.

use std::future::Future;
use std::pin::Pin;

use crate::Endpoint;

/// Tells when no request holds an endpoint any more, so that a stop does not cut requests that
/// were already sent to it.
///
/// [`Supervisor::stop`](crate::Supervisor::stop) deregisters a model's endpoints first (no new
/// request picks them), then waits for each endpoint's drain — at most
/// [`SupervisorConfig::drain_timeout`](crate::SupervisorConfig::drain_timeout) — and only then
/// stops the instances. A model that failed, or a replica that exited, is not drained: nothing
/// answers there any more. The gateway's table of replicas
/// (`cortex_gateway::replicas::Replicas`) implements it with its in-flight counts.
///
/// ```
/// use cortex_core::Endpoint;
/// use cortex_core::supervisor::Drain;
///
/// /// Nothing to wait for: the default without a drain.
/// struct Nothing;
///
/// impl Drain for Nothing {
///     fn drained(&self, _endpoint: &Endpoint) -> cortex_core::supervisor::Drained {
///         Box::pin(std::future::ready(()))
///     }
/// }
/// ```
pub trait Drain: Send + Sync + 'static {
    /// Resolves once no request holds `endpoint`.
    fn drained(&self, endpoint: &Endpoint) -> Drained;
}

/// The future of [`Drain::drained`].
pub type Drained = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

impl<F> Drain for F
where
    F: Fn(&Endpoint) -> Drained + Send + Sync + 'static,
{
    fn drained(&self, endpoint: &Endpoint) -> Drained {
        self(endpoint)
    }
}
