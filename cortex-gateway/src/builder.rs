//! The whole stack in one service, and `ServiceBuilder` methods for composing parts of it.

use std::sync::Arc;
use std::time::Duration;

use cortex_core::{Endpoint, Registry};
use tower::ServiceBuilder;
use tower::layer::util::Stack;

use crate::auth::{KeyStore, RequireApiKey, RequireApiKeyLayer};
use crate::balance::{Balance, BalanceLayer, Policy};
use crate::breaker::{Breakers, CircuitBreaker, CircuitBreakerLayer};
use crate::failover::{FailoverLayer, FailoverService};
use crate::meter::{MeterUsage, MeterUsageLayer, UsageSink};
use crate::proxy::Proxy;
use crate::queue::{Queue, QueueLayer};
use crate::route::{Route, RouteLayer};

/// The full stack: auth → route → meter → failover → balance → breaker → queue → proxy.
pub type Gateway = RequireApiKey<
    Route<MeterUsage<FailoverService<Balance<CircuitBreaker<Queue<Proxy>>>>>>,
    dyn KeyStore,
>;

/// The response body of [`Gateway`].
pub type GatewayBody = <Gateway as GatewayBodyOf>::Body;

/// Names the response body type of a service (for [`GatewayBody`]).
pub trait GatewayBodyOf: sealed::Sealed {
    /// The body.
    type Body;
}

impl GatewayBodyOf for Gateway {
    type Body = crate::error::RefusalOr<
        crate::error::RefusalOr<
            crate::meter::ResponseBody<
                crate::balance::ResponseBody<
                    crate::breaker::ResponseBody<
                        crate::queue::ResponseBody<crate::proxy::ResponseBody>,
                    >,
                >,
            >,
        >,
    >;
}

/// Builds a [`Gateway`]: every layer, wired to share state (the balancer skips replicas whose
/// circuit is open).
///
/// ```
/// use std::sync::Arc;
/// use cortex_core::InMemoryRegistry;
/// use cortex_gateway::auth::{ApiKey, InMemoryKeyStore};
/// use cortex_gateway::builder::GatewayBuilder;
/// use cortex_gateway::meter::InMemoryUsage;
///
/// let mut keys = InMemoryKeyStore::new();
/// keys.insert_key("sk-test", ApiKey::new("tester"));
/// let usage = Arc::new(InMemoryUsage::new());
/// let gateway = GatewayBuilder::new(Arc::new(InMemoryRegistry::new()))
///     .keys(keys)
///     .usage_sink(Arc::clone(&usage))
///     .slots(4)
///     .build();
/// // Serve it with hyper-util: `TowerToHyperService::new(gateway)`.
/// # let _ = gateway;
/// ```
#[derive(Debug)]
pub struct GatewayBuilder {
    keys: Option<Arc<dyn KeyStore>>,
    sink: Option<MeterUsageLayer>,
    route: RouteLayer,
    policy: Policy,
    breaker: CircuitBreakerLayer,
    failover: FailoverLayer,
    queue: QueueLayer,
    proxy: Proxy,
    replicas: crate::replicas::Replicas,
}

impl std::fmt::Debug for dyn KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyStore")
    }
}

// === impl GatewayBuilder ===

impl GatewayBuilder {
    /// A gateway for the models in `registry`: no auth until [`keys`](Self::keys), usage dropped
    /// until [`usage_sink`](Self::usage_sink), least-in-flight balancing, 4 slots per replica.
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        let replicas = crate::replicas::Replicas::pruned_to(Arc::clone(&registry));
        Self {
            route: RouteLayer::new(registry),
            keys: None,
            sink: None,
            policy: Policy::default(),
            breaker: CircuitBreakerLayer::new().breakers(Breakers::over(replicas.clone())),
            failover: FailoverLayer::new(),
            queue: QueueLayer::new(4).with_queues(crate::queue::Queues::over(replicas.clone())),
            proxy: Proxy::new(),
            replicas,
        }
    }

    /// Requires API keys from `keys`.
    pub fn keys(mut self, keys: impl KeyStore) -> Self {
        self.keys = Some(Arc::new(keys));
        self
    }

    /// Delivers usage records to `sink`.
    pub fn usage_sink(mut self, sink: impl UsageSink) -> Self {
        self.sink = Some(MeterUsageLayer::new(sink));
        self
    }

    /// The largest request body (default 32 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.route = self.route.body_limit(bytes);
        self
    }

    /// The paths clients may reach beyond the engines' OpenAI surface; see
    /// [`Surface`](crate::route::Surface).
    pub fn surface(mut self, surface: crate::route::Surface) -> Self {
        self.route = self.route.surface(surface);
        self
    }

    /// The bytes of request bodies held at once (default 256 MiB); see
    /// [`BodyBudget`](crate::route::BodyBudget).
    pub fn body_budget(mut self, budget: crate::route::BodyBudget) -> Self {
        self.route = self.route.body_budget(budget);
        self
    }

    /// Explains a model with no endpoints (stopped, starting, failed) instead of 404
    /// `model_not_found`; see [`RouteLayer::unrouted`].
    pub fn unrouted(mut self, explain: impl crate::route::Unrouted) -> Self {
        self.route = self.route.unrouted(explain);
        self
    }

    /// The balancing policy (default least in flight).
    pub fn balance(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The circuit breaker's settings (its circuits live in the gateway's one table of
    /// replicas, [`replicas`](Self::replicas)).
    pub fn breaker(mut self, breaker: CircuitBreakerLayer) -> Self {
        self.breaker = breaker.breakers(Breakers::over(self.replicas.clone()));
        self
    }

    /// Uses `replicas` as the per-replica state (circuits, queue slots, in-flight counts) instead
    /// of a new table: a gateway rebuilt with new settings (a configuration reload) shares them with
    /// the one it replaces, so requests still running on the old one keep counting against the
    /// same slots. Call it before [`breaker`](Self::breaker) settings that should apply.
    #[must_use]
    pub fn with_replicas(mut self, replicas: crate::replicas::Replicas) -> Self {
        self.breaker = self.breaker.breakers(Breakers::over(replicas.clone()));
        self.queue = self
            .queue
            .with_queues(crate::queue::Queues::over(replicas.clone()));
        self.replicas = replicas;
        self
    }

    /// The per-replica state of the stack, pruned to the registry's replicas.
    pub fn replicas(&self) -> &crate::replicas::Replicas {
        &self.replicas
    }

    /// Concurrent requests per replica (default 4, llama-server's `-np` auto).
    pub fn slots(mut self, slots: usize) -> Self {
        self.queue = self.queue.slots(slots);
        self
    }

    /// Slots per replica, asked once per replica.
    pub fn slots_per_replica(
        mut self,
        slots: impl Fn(&Endpoint) -> usize + Send + Sync + 'static,
    ) -> Self {
        self.queue = self.queue.per_replica(slots);
        self
    }

    /// Requests that may wait per replica, and for how long.
    pub fn queue_limits(mut self, max_waiting: usize, timeout: Duration) -> Self {
        self.queue = self.queue.max_waiting(max_waiting).timeout(timeout);
        self
    }

    /// The proxy (timeouts, upstream keys).
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = proxy;
        self
    }

    /// The circuits' table, to read states from.
    pub fn breakers(&self) -> &Breakers {
        self.breaker.table()
    }

    /// Aliases and fallbacks (see [`Names`](crate::route::Names)); the route reads the
    /// breakers' table to tell a model whose every circuit is open.
    pub fn names(mut self, names: crate::route::Names) -> Self {
        self.route = self.route.names(names);
        self
    }

    /// Starts models on demand (see [`Loader`](crate::route::Loader)).
    pub fn loader(mut self, loader: impl crate::route::Loader) -> Self {
        self.route = self.route.loader(loader);
        self
    }

    /// Failover to another replica when one refuses the connection (default: on, 2 retries
    /// per request within a shared budget; [`FailoverLayer::max_retries`]`(0)` turns it off).
    pub fn failover(mut self, failover: FailoverLayer) -> Self {
        self.failover = failover;
        self
    }

    /// Builds the stack.
    pub fn build(self) -> Gateway {
        let breakers = self.breaker.table().clone();
        let auth = match self.keys {
            Some(keys) => RequireApiKeyLayer::shared(keys),
            None => RequireApiKeyLayer::shared(Arc::new(|_: &str| None) as Arc<dyn KeyStore>)
                .enabled(false),
        };
        let sink = self
            .sink
            .unwrap_or_else(|| MeterUsageLayer::new(|_record: crate::meter::UsageRecord| {}));
        ServiceBuilder::new()
            .layer(auth)
            .layer(self.route.breakers(breakers.clone()))
            .layer(sink)
            .layer(self.failover)
            .layer(
                BalanceLayer::new(self.policy)
                    .with_replicas(self.replicas)
                    .skip_open(breakers),
            )
            .layer(self.breaker)
            .layer(self.queue)
            .service(self.proxy)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Gateway {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// Cortex's layers as methods on [`tower::ServiceBuilder`].
///
/// ```
/// use std::sync::Arc;
/// use cortex_core::InMemoryRegistry;
/// use cortex_gateway::ServiceBuilderExt;
/// use cortex_gateway::balance::Policy;
/// use cortex_gateway::meter::InMemoryUsage;
/// use cortex_gateway::proxy::Proxy;
/// use tower::ServiceBuilder;
///
/// let service = ServiceBuilder::new()
///     .cortex_route(Arc::new(InMemoryRegistry::new()))
///     .cortex_meter(Arc::new(InMemoryUsage::new()))
///     .cortex_balance(Policy::RoundRobin)
///     .cortex_queue(4)
///     .service(Proxy::new());
/// # let _ = service;
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// [`RequireApiKeyLayer`].
    fn cortex_auth<K: KeyStore>(self, keys: K) -> ServiceBuilder<Stack<RequireApiKeyLayer<K>, L>>;
    /// [`RouteLayer`].
    fn cortex_route(self, registry: Arc<dyn Registry>) -> ServiceBuilder<Stack<RouteLayer, L>>;
    /// [`MeterUsageLayer`].
    fn cortex_meter(self, sink: impl UsageSink) -> ServiceBuilder<Stack<MeterUsageLayer, L>>;
    /// [`BalanceLayer`].
    fn cortex_balance(self, policy: Policy) -> ServiceBuilder<Stack<BalanceLayer, L>>;
    /// [`CircuitBreakerLayer`].
    fn cortex_breaker(
        self,
        breaker: CircuitBreakerLayer,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>>;
    /// [`QueueLayer`] with `slots` per replica.
    fn cortex_queue(self, slots: usize) -> ServiceBuilder<Stack<QueueLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn cortex_auth<K: KeyStore>(self, keys: K) -> ServiceBuilder<Stack<RequireApiKeyLayer<K>, L>> {
        self.layer(RequireApiKeyLayer::new(keys))
    }

    fn cortex_route(self, registry: Arc<dyn Registry>) -> ServiceBuilder<Stack<RouteLayer, L>> {
        self.layer(RouteLayer::new(registry))
    }

    fn cortex_meter(self, sink: impl UsageSink) -> ServiceBuilder<Stack<MeterUsageLayer, L>> {
        self.layer(MeterUsageLayer::new(sink))
    }

    fn cortex_balance(self, policy: Policy) -> ServiceBuilder<Stack<BalanceLayer, L>> {
        self.layer(BalanceLayer::new(policy))
    }

    fn cortex_breaker(
        self,
        breaker: CircuitBreakerLayer,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>> {
        self.layer(breaker)
    }

    fn cortex_queue(self, slots: usize) -> ServiceBuilder<Stack<QueueLayer, L>> {
        self.layer(QueueLayer::new(slots))
    }
}
