use std::sync::Arc;

use cortex_core::Registry;
use tower_layer::Layer;

use super::{BodyBudget, DEFAULT_BODY_LIMIT, Loader, Names, Route, Surface, Unrouted};
use crate::breaker::Breakers;

/// Applies [`Route`]. See the [module docs](crate::route).
#[derive(Clone)]
pub struct RouteLayer {
    pub(super) registry: Arc<dyn Registry>,
    pub(super) body_limit: usize,
    pub(super) inject_usage: bool,
    pub(super) unrouted: Option<Arc<dyn Unrouted>>,
    pub(super) surface: Arc<Surface>,
    pub(super) budget: BodyBudget,
    pub(super) names: Arc<Names>,
    pub(super) breakers: Option<Breakers>,
    pub(super) loader: Option<Arc<dyn Loader>>,
}

impl std::fmt::Debug for RouteLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLayer")
            .field("registry", &self.registry)
            .field("body_limit", &self.body_limit)
            .field("inject_usage", &self.inject_usage)
            .field("unrouted", &self.unrouted.is_some())
            .field("surface", &self.surface)
            .field("budget", &self.budget)
            .field("names", &self.names)
            .field("breakers", &self.breakers.is_some())
            .field("loader", &self.loader.is_some())
            .finish()
    }
}

// === impl RouteLayer ===

impl RouteLayer {
    /// Routes through `registry`.
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        Self {
            registry,
            body_limit: DEFAULT_BODY_LIMIT,
            inject_usage: true,
            unrouted: None,
            surface: Arc::new(Surface::new()),
            budget: BodyBudget::default(),
            names: Arc::new(Names::new()),
            breakers: None,
            loader: None,
        }
    }

    /// Starts models on demand. See [`Loader`].
    pub fn loader(mut self, loader: impl Loader) -> Self {
        self.loader = Some(Arc::new(loader));
        self
    }

    /// Aliases and fallbacks. See [`Names`].
    pub fn names(mut self, names: Names) -> Self {
        self.names = Arc::new(names);
        self
    }

    /// The circuits to read when deciding whether a model has a usable replica (a model whose
    /// every circuit is open goes to its fallback). Without it, any registered replica is usable.
    pub fn breakers(mut self, breakers: Breakers) -> Self {
        self.breakers = Some(breakers);
        self
    }

    /// The paths clients may reach (default: the engines' OpenAI surface only). See [`Surface`].
    pub fn surface(mut self, surface: Surface) -> Self {
        self.surface = Arc::new(surface);
        self
    }

    /// The bytes of request bodies held at once, over all requests (default 256 MiB); share one
    /// [`BodyBudget`] between routes to bound them together. See [`BodyBudget`].
    pub fn body_budget(mut self, budget: BodyBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Asks `explain` why a model has no endpoints before answering 404 `model_not_found`, so
    /// that a model which exists but does not run now (stopped, starting, failed) is refused with
    /// what is true of it. See [`Unrouted`].
    pub fn unrouted(mut self, explain: impl Unrouted) -> Self {
        self.unrouted = Some(Arc::new(explain));
        self
    }

    /// The largest request body read, in bytes (default 32 MiB); larger ones get 413.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Whether streams that did not ask for usage get `include_usage` spliced in (default on).
    pub fn inject_usage(mut self, on: bool) -> Self {
        self.inject_usage = on;
        self
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Route {
            inner,
            config: self.clone(),
        }
    }
}
