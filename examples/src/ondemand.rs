//! Models loaded on demand (`load = "on-demand"`): the gateway's [`Loader`] for `cortex serve`.
//!
//! The first request for such a model starts it through the supervisor and waits; requests that
//! arrive meanwhile wait for the same start (one start, however many wait). A start that fails
//! answers every waiting request with an OpenAI-shaped 503 `model_start_failed` naming why. A
//! client that hangs up drops only its own wait: the start runs in a task of its own. A model
//! without requests for its `idle_unload` (and none in flight) is stopped by [`OnDemand::unload_idle`],
//! which `cortex serve` runs every second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cortex_core::{Load, ModelId, ModelSpec, ModelState, Supervisor, SupervisorError};
use cortex_gateway::error::Refusal;
use cortex_gateway::replicas::Replicas;
use cortex_gateway::route::{Loader, Loading};
use http::StatusCode;
use tokio::sync::watch;

/// A start in progress, or its outcome (`None` while starting).
type Outcome = watch::Receiver<Option<Result<(), String>>>;

/// The on-demand models of a configuration. Cheap to clone.
#[derive(Clone)]
pub struct OnDemand {
    inner: Arc<Inner>,
}

struct Inner {
    supervisor: Supervisor,
    replicas: Replicas,
    /// Served name → spec, for the on-demand models.
    specs: HashMap<String, ModelSpec>,
    starts: Mutex<HashMap<ModelId, Outcome>>,
    last_used: Mutex<HashMap<ModelId, Instant>>,
}

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemand")
            .field("models", &self.inner.specs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Waits until `id` runs (`Ok`) or stops or fails (`Err`, with why).
async fn running(supervisor: &Supervisor, id: &ModelId) -> Result<(), String> {
    let Some(mut status) = supervisor.watch(id) else {
        return Err("it is not known to the supervisor".to_owned());
    };
    let state = status
        .wait_for(|s| !matches!(s.state, ModelState::Starting | ModelState::Stopping))
        .await
        .map_err(|_| "the supervisor went away".to_owned())?
        .state
        .clone();
    match state {
        ModelState::Running | ModelState::Unhealthy { .. } => Ok(()),
        ModelState::Failed { reason, .. } => Err(reason),
        other => Err(format!("it is {other:?}")),
    }
}

impl OnDemand {
    /// The on-demand models among `specs`, started through `supervisor`; `replicas` (the
    /// gateway's table) says what is in flight.
    pub fn new<'a>(
        specs: impl Iterator<Item = &'a ModelSpec>,
        supervisor: Supervisor,
        replicas: Replicas,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                supervisor,
                replicas,
                specs: specs
                    .filter(|s| s.load == Load::OnDemand)
                    .map(|s| (s.served_name().to_owned(), s.clone()))
                    .collect(),
                starts: Mutex::new(HashMap::new()),
                last_used: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether any model is loaded on demand.
    pub fn is_empty(&self) -> bool {
        self.inner.specs.is_empty()
    }

    fn start(&self, spec: &ModelSpec) -> Outcome {
        let mut starts = self
            .inner
            .starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(outcome) = starts.get(&spec.id) {
            if outcome.borrow().is_none() {
                return outcome.clone();
            }
        }
        let (tx, rx) = watch::channel(None);
        starts.insert(spec.id.clone(), rx.clone());
        self.touch_id(&spec.id);
        let supervisor = self.inner.supervisor.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            let id = spec.id.clone();
            let begun = Instant::now();
            let result = match supervisor.start(spec).await {
                Ok(()) => Ok(()),
                // Started by someone else (an operator, an earlier request): wait for it.
                Err(SupervisorError::AlreadyStarted { .. }) => running(&supervisor, &id).await,
                Err(e) => Err(cortex_core::error_chain(&e)),
            };
            match &result {
                Ok(()) => eprintln!(
                    "cortex: {id}: loaded on demand in {:.1} s",
                    begun.elapsed().as_secs_f64()
                ),
                Err(e) => eprintln!("cortex: {id}: could not be loaded on demand: {e}"),
            }
            let _ = tx.send(Some(result));
        });
        rx
    }

    fn touch_id(&self, id: &ModelId) {
        self.inner
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), Instant::now());
    }

    /// Stops the on-demand models that ran without requests for their `idle_unload` and have
    /// none in flight; returns those stopped.
    pub async fn unload_idle(&self) -> Vec<ModelId> {
        let mut stopped = Vec::new();
        for spec in self.inner.specs.values() {
            let Some(idle) = spec.idle_unload else {
                continue;
            };
            let running = self.inner.supervisor.status(&spec.id).is_some_and(|s| {
                matches!(s.state, ModelState::Running | ModelState::Unhealthy { .. })
            });
            if !running {
                continue;
            }
            let quiet = self
                .inner
                .last_used
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&spec.id)
                .is_none_or(|t| t.elapsed() >= idle);
            let busy = self
                .inner
                .supervisor
                .registry()
                .resolve(spec.served_name())
                .is_some_and(|eps| {
                    eps.iter()
                        .any(|e| self.inner.replicas.in_flight(&e.instance) > 0)
                });
            if quiet && !busy {
                eprintln!(
                    "cortex: {}: unloading after {} without requests",
                    spec.id,
                    humantime::format_duration(idle)
                );
                if self.inner.supervisor.stop(&spec.id).await.is_ok() {
                    stopped.push(spec.id.clone());
                }
            }
        }
        stopped
    }

    /// Runs [`unload_idle`](Self::unload_idle) every `period` until the task is dropped.
    pub async fn run_unloader(self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            self.unload_idle().await;
        }
    }
}

impl Loader for OnDemand {
    fn load(&self, model: &str) -> Option<Loading> {
        let spec = self.inner.specs.get(model)?;
        let mut outcome = self.start(spec);
        let model = model.to_owned();
        Some(Box::pin(async move {
            let result = match outcome.wait_for(Option::is_some).await {
                Ok(done) => done.clone().unwrap_or(Ok(())),
                Err(_) => Err("the start was abandoned".to_owned()),
            };
            result.map_err(|why| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("The model `{model}` could not be started: {why}"),
                )
                .code("model_start_failed")
            })
        }))
    }

    fn catalog(&self) -> Vec<(String, &'static str)> {
        let starting = |id: &ModelId| {
            self.inner
                .starts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(id)
                .is_some_and(|o| o.borrow().is_none())
        };
        self.inner
            .specs
            .iter()
            .map(|(name, spec)| {
                let state = match self.inner.supervisor.status(&spec.id).map(|s| s.state) {
                    Some(ModelState::Running | ModelState::Unhealthy { .. }) => "loaded",
                    Some(ModelState::Starting) => "loading",
                    _ if starting(&spec.id) => "loading",
                    Some(ModelState::Failed { .. }) => "failed",
                    _ => "unloaded",
                };
                (name.clone(), state)
            })
            .collect()
    }

    fn touch(&self, model: &str) {
        if let Some(spec) = self.inner.specs.get(model) {
            self.touch_id(&spec.id);
        }
    }
}
