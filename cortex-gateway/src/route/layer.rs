use std::sync::Arc;

use cortex_core::Registry;
use tower_layer::Layer;

use super::{DEFAULT_BODY_LIMIT, Route};

/// Applies [`Route`]. See the [module docs](crate::route).
#[derive(Debug, Clone)]
pub struct RouteLayer {
    pub(super) registry: Arc<dyn Registry>,
    pub(super) body_limit: usize,
    pub(super) inject_usage: bool,
}

// === impl RouteLayer ===

impl RouteLayer {
    /// Routes through `registry`.
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        Self {
            registry,
            body_limit: DEFAULT_BODY_LIMIT,
            inject_usage: true,
        }
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
