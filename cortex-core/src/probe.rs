//! The [`HealthProbe`] trait: one probe of one endpoint.

use std::fmt;
use std::future::Future;

use crate::{BoxFuture, Endpoint, HealthSpec, HealthStatus};

/// Probes one endpoint once and says what it found.
///
/// The engine-specific meaning of an answer lives in the [`HealthSpec`] of the plan (llama-server's
/// `503` means loading, vLLM's refused connection means loading), so one HTTP implementation serves
/// every engine. A probe never fails: what goes wrong is a [`HealthStatus::Down`] with its reason.
/// The supervisor bounds each probe with its own timeout; a probe should still use a connect and
/// read timeout of its own.
///
/// The object-safe twin [`DynHealthProbe`] is implemented for every `HealthProbe`.
pub trait HealthProbe: Send + Sync + 'static {
    /// Probes `endpoint` as `spec` says.
    fn probe(
        &self,
        endpoint: &Endpoint,
        spec: &HealthSpec,
    ) -> impl Future<Output = HealthStatus> + Send;
}

/// The object-safe twin of [`HealthProbe`], implemented for every `HealthProbe`; see there.
#[allow(missing_docs)]
pub trait DynHealthProbe: Send + Sync + 'static {
    fn probe<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        spec: &'a HealthSpec,
    ) -> BoxFuture<'a, HealthStatus>;
}

impl<T: HealthProbe> DynHealthProbe for T {
    fn probe<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        spec: &'a HealthSpec,
    ) -> BoxFuture<'a, HealthStatus> {
        Box::pin(HealthProbe::probe(self, endpoint, spec))
    }
}

impl fmt::Debug for dyn DynHealthProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynHealthProbe").finish_non_exhaustive()
    }
}
