//! Failover: a request whose connection to its replica was refused is sent again to another
//! healthy replica of the same model.
//!
//! [`FailoverLayer`] sits between metering and balancing. It is tower's
//! [`Retry`] with a [`Policy`] that retries only what is
//! safe to retry: the proxy marks a response [`NotSent`] when it could not connect to the replica,
//! so not one byte of the request reached the engine. Nothing else is retried: not an engine's
//! error answer, not a timeout, not a connection that broke after the request was written, and
//! never a stream (its first byte is the end of any choice). The retry goes through the balancer
//! again with the failed replica removed from the request's [`Routed`] endpoints, so each
//! attempt is a different replica, counted by the breaker and queued like any other request.
//!
//! Retries are bounded twice: at most [`FailoverLayer::max_retries`] per request (default 2),
//! and a [`TpsBudget`] shared by every request through the layer (default: retries may add 20%
//! to the requests of the last 10 s, plus 10 per second), so a model whose replicas all refuse
//! does not multiply the load, as tower's and linkerd's retry budgets do. A retry the budget
//! refuses is counted in `cortex_gateway_failover_budget_exhausted_total`; each retry in
//! `cortex_gateway_failovers_total` (both labelled by model).
//!
//! The body downstream of [`Route`](crate::route::Route) is a [`Full`] of the client's bytes, so a
//! retry sends exactly what the first attempt would have.
//!
//! # Example
//!
//! ```
//! use cortex_gateway::failover::FailoverLayer;
//! use tower::ServiceBuilder;
//! # use std::convert::Infallible;
//! # use http::{Request, Response};
//! # use http_body_util::Full;
//!
//! let service = ServiceBuilder::new()
//!     .layer(FailoverLayer::new().max_retries(1))
//!     .service_fn(|_req: Request<Full<bytes::Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::new())))
//!     });
//! # let _ = service;
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cortex_core::Endpoint;
use http::{Request, Response};
use http_body_util::Full;
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::retry::{Policy, Retry, RetryLayer};
use tower_layer::Layer;

use crate::balance::Picked;
use crate::route::Routed;

/// A response's mark: the proxy could not connect to the replica, so the request never reached
/// it and may be sent elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotSent;

/// The failover service: tower's [`Retry`] with the [`Failover`] policy.
pub type FailoverService<S> = Retry<Failover, S>;

/// Retries requests that never reached their replica on another one. See the
/// [module docs](crate::failover).
#[derive(Debug, Clone)]
pub struct FailoverLayer {
    policy: Failover,
}

/// The retry policy (one clone per request).
#[derive(Debug, Clone)]
pub struct Failover {
    budget: Arc<TpsBudget>,
    max_retries: usize,
    retries: usize,
    deposited: bool,
}

// === impl FailoverLayer ===

impl FailoverLayer {
    /// At most 2 retries per request, within a budget of 20% of the last 10 s's requests plus
    /// 10 per second.
    pub fn new() -> Self {
        Self {
            policy: Failover {
                budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
                max_retries: 2,
                retries: 0,
                deposited: false,
            },
        }
    }

    /// At most `n` retries per request (0 turns failover off).
    #[must_use]
    pub fn max_retries(mut self, n: usize) -> Self {
        self.policy.max_retries = n;
        self
    }

    /// The budget shared by the requests through this layer: see [`TpsBudget::new`] (`ttl`
    /// between 1 and 60 s, `retry_percent` between 0 and 1000).
    #[must_use]
    pub fn budget(mut self, ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        self.policy.budget = Arc::new(TpsBudget::new(ttl, min_per_sec, retry_percent));
        self
    }
}

impl Default for FailoverLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for FailoverLayer {
    type Service = FailoverService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryLayer::new(self.policy.clone()).layer(inner)
    }
}

// === impl Failover ===

impl<ResBody, E> Policy<Request<Full<Bytes>>, Response<ResBody>, E> for Failover {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<ResBody>, E>,
    ) -> Option<Self::Future> {
        if !self.deposited {
            // Every request earns the budget its share, once.
            self.budget.deposit();
            self.deposited = true;
        }
        let response = result.as_ref().ok()?;
        response.extensions().get::<NotSent>()?;
        let failed = &response.extensions().get::<Picked>()?.0.instance;
        let routed = req.extensions_mut().get_mut::<Routed>()?;
        let others: Vec<Endpoint> = routed
            .endpoints
            .iter()
            .filter(|e| &e.instance != failed)
            .cloned()
            .collect();
        if others.is_empty() || self.retries >= self.max_retries {
            return None;
        }
        let model = routed.model.to_string();
        if !self.budget.withdraw() {
            metrics::counter!("cortex_gateway_failover_budget_exhausted_total", "model" => model)
                .increment(1);
            return None;
        }
        tracing::info!(model = %model, replica = %failed, "connection refused: sending the request to another replica");
        metrics::counter!("cortex_gateway_failovers_total", "model" => model).increment(1);
        routed.endpoints = others.into();
        self.retries = self.retries.saturating_add(1);
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        // No copy (headers and extensions) where no retry could follow: failover off, or a
        // model with one replica — the common case, on every request.
        let replicas = req
            .extensions()
            .get::<Routed>()
            .map_or(0, |r| r.endpoints.len());
        if self.max_retries == 0 || replicas < 2 {
            return None;
        }
        let mut copy = Request::new(req.body().clone());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}
