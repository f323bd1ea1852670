use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower_service::Service;

use super::future::Report;
use super::{CircuitBreakerLayer, ResponseBody, ResponseFuture};
use crate::balance::Picked;
use crate::error::Refusal;

/// A circuit breaker per replica. See the [module docs](crate::breaker).
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S> {
    pub(super) inner: S,
    pub(super) config: CircuitBreakerLayer,
}

// === impl CircuitBreaker ===

impl<S> CircuitBreaker<S> {
    /// Wraps `inner` with the default policy.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            config: CircuitBreakerLayer::new(),
        }
    }

    /// The layer.
    pub fn layer() -> CircuitBreakerLayer {
        CircuitBreakerLayer::new()
    }

    define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreaker<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let picked = req.extensions().get::<Picked>();
        let circuit = self.config.breakers.circuit(picked.map(|p| &p.0));
        match circuit.admit(Instant::now()) {
            Ok(probe) => ResponseFuture::inner(
                self.inner.call(req),
                Report::new(circuit, probe, self.config.policy),
            ),
            Err(wait) => {
                let name = picked.map_or_else(
                    || String::from("the upstream"),
                    |p| format!("replica {} of `{}`", p.0.replica, p.0.served_name),
                );
                ResponseFuture::refused(Refusal::unavailable(
                    format!("{name} is failing and is being given time to recover; retry later"),
                    "replica_unavailable",
                    wait,
                ))
            }
        }
    }
}
