use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};

use cortex_core::{Endpoint, InstanceId};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{BalanceLayer, Picked, Policy, ResponseBody, random};
use crate::guard::Guarded;
use crate::replicas::Replicas;
use crate::route::Routed;

/// Picks a replica for each routed request. See the [module docs](crate::balance).
#[derive(Debug, Clone)]
pub struct Balance<S> {
    pub(super) inner: S,
    pub(super) config: BalanceLayer,
}

/// Per-model round-robin counters, and the replicas' in-flight counts (in the [`Replicas`]
/// table).
#[derive(Debug, Clone, Default)]
pub(crate) struct Loads {
    turns: Arc<RwLock<HashMap<Arc<str>, Arc<AtomicUsize>>>>,
    pub(crate) replicas: Replicas,
}

/// One request in flight on a replica; the count drops with it.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn entry<K>(map: &RwLock<HashMap<K, Arc<AtomicUsize>>>, key: &K) -> Arc<AtomicUsize>
where
    K: std::hash::Hash + Eq + Clone,
{
    if let Some(c) = map
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(key)
    {
        return Arc::clone(c);
    }
    Arc::clone(
        map.write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.clone())
            .or_default(),
    )
}

// === impl Loads ===

impl Loads {
    fn load(&self, instance: &InstanceId) -> usize {
        self.replicas
            .find(instance)
            .map_or(0, |r| r.in_flight.load(Ordering::Relaxed))
    }
}

// === impl Balance ===

impl<S> Balance<S> {
    /// Wraps `inner`, balancing with `policy`.
    pub fn new(inner: S, policy: Policy) -> Self {
        Self {
            inner,
            config: BalanceLayer::new(policy),
        }
    }

    /// The layer.
    pub fn layer(policy: Policy) -> BalanceLayer {
        BalanceLayer::new(policy)
    }

    /// Requests in flight on `instance` through this balancer.
    pub fn in_flight(&self, instance: &InstanceId) -> usize {
        self.config.loads.load(instance)
    }

    define_inner_service_accessors!();

    fn pick<'a>(&self, model: &Arc<str>, endpoints: &'a [Endpoint]) -> &'a Endpoint {
        if let [only] = endpoints {
            return only;
        }
        let available: Vec<&Endpoint> = match &self.config.breakers {
            Some(b) if endpoints.len() > 1 => {
                let open: Vec<&Endpoint> = endpoints
                    .iter()
                    .filter(|e| b.is_available(&e.instance))
                    .collect();
                if open.is_empty() {
                    endpoints.iter().collect()
                } else {
                    open
                }
            }
            _ => endpoints.iter().collect(),
        };
        let n = available.len();
        if n == 1 {
            return available[0];
        }
        match self.config.policy {
            Policy::RoundRobin => {
                let turn = entry(&self.config.loads.turns, model).fetch_add(1, Ordering::Relaxed);
                available[turn % n]
            }
            Policy::LeastInFlight => {
                let a = random(n);
                let b = (a + 1 + random(n - 1)) % n;
                let (ea, eb) = (available[a], available[b]);
                if self.config.loads.load(&eb.instance) < self.config.loads.load(&ea.instance) {
                    eb
                } else {
                    ea
                }
            }
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Balance<S>
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

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let picked = req
            .extensions()
            .get::<Routed>()
            .map(|routed| self.pick(&routed.model, &routed.endpoints).clone());
        let in_flight = picked.map(|endpoint| {
            let count = Arc::clone(&self.config.loads.replicas.get(Some(&endpoint)).in_flight);
            count.fetch_add(1, Ordering::Relaxed);
            req.extensions_mut().insert(Picked(endpoint));
            InFlight(count)
        });
        ResponseFuture {
            future: self.inner.call(req),
            in_flight,
        }
    }
}

pin_project! {
    /// The future of [`Balance`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        let in_flight = this.in_flight.take();
        Poll::Ready(result.map(|response| response.map(|body| Guarded::new(body, in_flight))))
    }
}
