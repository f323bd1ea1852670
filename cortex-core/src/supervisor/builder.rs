//! [`SupervisorBuilder`]: engines, registry and configuration of a [`Supervisor`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::{Drain, Shared, Supervisor, SupervisorConfig};
use crate::{DynHealthProbe, DynRuntime, Engine, EngineKind, InMemoryRegistry, Registry};

/// Builds a [`Supervisor`].
#[must_use]
pub struct SupervisorBuilder {
    runtime: Arc<dyn DynRuntime>,
    probe: Arc<dyn DynHealthProbe>,
    registry: Option<Arc<dyn Registry>>,
    engines: HashMap<EngineKind, Arc<dyn Engine>>,
    config: SupervisorConfig,
    drain: Option<Arc<dyn Drain>>,
}

// === impl SupervisorBuilder ===

impl SupervisorBuilder {
    pub(super) fn new(runtime: Arc<dyn DynRuntime>, probe: Arc<dyn DynHealthProbe>) -> Self {
        Self {
            runtime,
            probe,
            registry: None,
            engines: HashMap::new(),
            config: SupervisorConfig::default(),
            drain: None,
        }
    }

    /// Adds an engine; a later engine of the same [`kind`](Engine::kind) replaces an earlier one.
    pub fn engine(mut self, engine: Arc<dyn Engine>) -> Self {
        self.engines.insert(engine.kind(), engine);
        self
    }

    /// Uses `registry` instead of a new [`InMemoryRegistry`].
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Sets the configuration.
    pub fn config(mut self, config: SupervisorConfig) -> Self {
        self.config = config;
        self
    }

    /// What a stop waits for between deregistering an endpoint and stopping its instance
    /// (default: nothing). See [`Drain`].
    pub fn drain(mut self, drain: Arc<dyn Drain>) -> Self {
        self.drain = Some(drain);
        self
    }

    /// Builds the supervisor.
    pub fn build(self) -> Supervisor {
        let (events, _) = broadcast::channel(self.config.event_capacity.max(1));
        Supervisor {
            shared: Arc::new(Shared {
                registry: self
                    .registry
                    .unwrap_or_else(|| Arc::new(InMemoryRegistry::new())),
                runtime: self.runtime,
                probe: self.probe,
                engines: self.engines,
                config: self.config,
                drain: self.drain,
                events,
                models: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("engines", &self.engines.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
