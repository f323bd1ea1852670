//! The [`Supervisor`]: drives each model through its lifecycle and keeps the registry true.
//!
//! # Overview
//!
//! For each model the supervisor runs one task (an actor) that owns the model's instances:
//!
//! 1. **Plan.** [`Supervisor::start`] plans every replica with the model's [`Engine`] before anything
//!    starts; a plan with errors fails the start at once ([`SupervisorError::Plan`]).
//! 2. **Start.** Each replica is started by the [`Runtime`](crate::Runtime), then probed with a
//!    doubling interval ([`HealthSpec::poll_interval`] up to [`HealthSpec::max_poll_interval`]) until
//!    it is ready, until the startup timeout passes, or until the instance exits. Timeout or exit make
//!    the model [`Failed`](ModelState::Failed) with the reason and the last lines of the log, and stop
//!    and remove every instance already started: nothing is left running.
//! 3. **Register.** Once every replica is ready, its endpoints enter the [`Registry`] and the model is
//!    [`Running`](ModelState::Running).
//! 4. **Watch.** Every [`SupervisorConfig::probe_interval`] each replica is probed; after
//!    [`SupervisorConfig::failure_threshold`] failures in a row its endpoint leaves the registry and
//!    the model is [`Unhealthy`](ModelState::Unhealthy); a passing probe puts it back. An instance
//!    that exits makes the model failed, or is restarted when the spec's
//!    [`RestartPolicy`](crate::RestartPolicy) says so.
//! 5. **Stop.** [`Supervisor::stop`] deregisters every endpoint first, waits for the requests that
//!    hold them to finish (with a [`Drain`], up to [`SupervisorConfig::drain_timeout`]), then stops
//!    each instance with its plan's grace period. A stop during start cancels the start.
//!
//! Start and stop of one model are serialized by its actor; different models proceed concurrently.
//! Every transition is sent as an [`Event`] to [`subscribe`](Supervisor::subscribe)rs.
//!
//! [`HealthSpec::poll_interval`]: crate::HealthSpec::poll_interval
//! [`HealthSpec::max_poll_interval`]: crate::HealthSpec::max_poll_interval
//!
//! # Example
//!
//! With the scripted fakes of the `test-util` feature standing in for a real engine and runtime:
//!
//! ```
//! # #[cfg(feature = "test-util")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cortex_core::test_util::{FakeEngine, FakeWorld};
//! use cortex_core::{ModelSource, ModelSpec, ModelState, Registry, Supervisor};
//!
//! let world = FakeWorld::new();
//! let supervisor = Supervisor::builder(Arc::new(world.runtime()), Arc::new(world.probe()))
//!     .engine(Arc::new(FakeEngine::new("fake")))
//!     .build();
//!
//! let spec = ModelSpec::new("gemma".parse()?, "fake".into(), ModelSource::Path("/m/gemma.gguf".into()));
//! supervisor.start(spec).await?;
//! assert_eq!(supervisor.status(&"gemma".parse()?).unwrap().state, ModelState::Running);
//! assert!(supervisor.registry().resolve("gemma").is_some());
//!
//! supervisor.stop(&"gemma".parse()?).await?;
//! assert!(supervisor.registry().resolve("gemma").is_none());
//! assert!(world.live().is_empty());
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "test-util"))]
//! # fn main() {}
//! ```

mod actor;
mod builder;
mod config;
mod drain;
mod error;
mod follow;
mod planning;
mod reconcile;

pub use builder::SupervisorBuilder;
pub(crate) use config::RETRY_STOP_GRACE;
pub use config::SupervisorConfig;
pub use drain::{Drain, Drained};
pub use error::SupervisorError;
pub use follow::Following;
pub(crate) use planning::choose_ports;
use planning::plan_all;
pub use reconcile::{Adoption, Reconciliation, Removal};

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    DynHealthProbe, DynRuntime, Engine, EngineKind, Event, EventKind, Instance, InstanceId,
    LaunchPlan, ModelId, ModelSpec, ModelState, ModelStatus, Registry, ReplicaStatus,
};

/// Drives models through their lifecycle and keeps the [`Registry`] true; see the
/// [module docs](self).
///
/// Cheap to clone: clones share the same models. Dropping every clone does not stop running
/// models: call [`shutdown`](Self::shutdown) first (runtimes that kill their instances on drop, like
/// the process runtime, still clean up when they are dropped).
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) runtime: Arc<dyn DynRuntime>,
    pub(crate) probe: Arc<dyn DynHealthProbe>,
    pub(crate) engines: HashMap<EngineKind, Arc<dyn Engine>>,
    pub(crate) config: SupervisorConfig,
    /// What a stop waits for between deregistering and stopping.
    pub(crate) drain: Option<Arc<dyn Drain>>,
    events: broadcast::Sender<Event>,
    models: Mutex<HashMap<ModelId, Arc<Slot>>>,
}

/// One model's place in the supervisor: its status and the means to stop it.
pub(crate) struct Slot {
    pub(crate) id: ModelId,
    pub(crate) status: watch::Sender<ModelStatus>,
    /// Cancelled by [`Supervisor::stop`]; the actor watches it.
    pub(crate) stop: CancellationToken,
    /// Set by the actor when stopping failed.
    pub(crate) stop_error: Mutex<Option<String>>,
}

// === impl Supervisor ===

impl Supervisor {
    /// A builder for a supervisor starting instances on `runtime` and probing them with `probe`.
    pub fn builder(
        runtime: Arc<dyn DynRuntime>,
        probe: Arc<dyn DynHealthProbe>,
    ) -> SupervisorBuilder {
        SupervisorBuilder::new(runtime, probe)
    }

    /// The registry the supervisor keeps; give it to the gateway.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.shared.registry
    }

    /// The configuration.
    pub fn config(&self) -> &SupervisorConfig {
        &self.shared.config
    }

    /// Starts a model and waits until it runs.
    ///
    /// A model that is stopping is first allowed to finish stopping. Different models may be started
    /// concurrently.
    ///
    /// # Errors
    ///
    /// - [`SupervisorError::UnknownEngine`] when no engine of the spec's kind was added;
    /// - [`SupervisorError::AlreadyStarted`] when the model is starting or running;
    /// - [`SupervisorError::Plan`] when the engine refused the spec (nothing was started);
    /// - [`SupervisorError::Failed`] when an instance exited or timed out while starting (every
    ///   instance was stopped and removed);
    /// - [`SupervisorError::StartCancelled`] when [`stop`](Self::stop) was called meanwhile.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future stops the waiting, not the start: the model keeps starting, and
    /// [`status`](Self::status) or [`subscribe`](Self::subscribe) follow it.
    pub async fn start(&self, spec: ModelSpec) -> Result<(), SupervisorError> {
        self.start_adopting(spec, Vec::new()).await
    }

    /// [`start`](Self::start), taking over `adopt[i]` (where given) as replica `i` instead of
    /// starting it.
    async fn start_adopting(
        &self,
        spec: ModelSpec,
        adopt: Vec<Option<Instance>>,
    ) -> Result<(), SupervisorError> {
        let engine = self.engine_for(&spec)?;
        let slot = self.claim(&spec).await?;

        let plans = match self.plan_all(&spec, engine).await {
            Ok(plans) => plans,
            Err(e) => {
                let reason = match &e {
                    SupervisorError::Plan { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                set_state(
                    &self.shared,
                    &slot,
                    ModelState::Failed {
                        reason,
                        log_tail: Vec::new(),
                    },
                );
                return Err(e);
            }
        };
        for (replica, planned) in plans.iter().enumerate() {
            if adopt.get(replica).is_some_and(Option::is_some) {
                continue; // nothing is started from this plan: the instance runs already
            }
            self.emit(
                &spec.id,
                EventKind::Planned {
                    replica: u32::try_from(replica).unwrap_or(u32::MAX),
                    command: planned.0.command_line(),
                    warnings: planned.1.iter().map(ToString::to_string).collect(),
                },
            );
        }

        let mut status = slot.status.subscribe();
        let plans = plans.into_iter().map(|(plan, _)| Arc::new(plan)).collect();
        let run = tokio::spawn(
            actor::Actor::new(self.shared.clone(), slot.clone(), &spec).run(plans, adopt),
        );
        // A panic in the actor (a bug in a runtime or probe implementation, say) must not leave the
        // model `Starting` forever: it fails the model, naming the panic.
        tokio::spawn({
            let (shared, slot) = (self.shared.clone(), slot.clone());
            async move {
                if let Err(e) = run.await {
                    let reason = match e.try_into_panic() {
                        Ok(panic) => {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(ToString::to_string)
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            format!("internal error: the model's task panicked: {what}; its instances may still run")
                        }
                        Err(_) => "internal error: the model's task was cancelled; its instances may still run".to_owned(),
                    };
                    *slot
                        .stop_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
                    set_state(
                        &shared,
                        &slot,
                        ModelState::Failed {
                            reason,
                            log_tail: Vec::new(),
                        },
                    );
                }
            }
        });

        let state = status
            .wait_for(|s| !matches!(s.state, ModelState::Starting))
            .await
            .map_or(ModelState::Stopped, |s| s.state.clone());
        match state {
            ModelState::Running | ModelState::Unhealthy { .. } => Ok(()),
            ModelState::Failed { reason, log_tail } => Err(SupervisorError::Failed {
                model: spec.id,
                reason,
                log_tail,
            }),
            _ => Err(SupervisorError::StartCancelled { model: spec.id }),
        }
    }

    /// Stops a model: deregisters its endpoints, then stops its instances with the plan's grace
    /// period, and waits until they are gone. A model that is starting stops starting. Stopping a
    /// stopped or failed model succeeds (a failed one becomes stopped).
    ///
    /// # Errors
    ///
    /// [`SupervisorError::NotFound`] for a model never started here, and
    /// [`SupervisorError::StopFailed`] when the runtime could not stop an instance.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future does not cancel the stop.
    pub async fn stop(&self, id: &ModelId) -> Result<(), SupervisorError> {
        let slot = self
            .slot(id)
            .ok_or_else(|| SupervisorError::NotFound { model: id.clone() })?;
        slot.stop.cancel();
        let state = slot
            .status
            .subscribe()
            .wait_for(|s| s.state.is_terminal())
            .await
            .map_or(ModelState::Stopped, |s| s.state.clone());
        if let ModelState::Failed { .. } = state {
            let stop_error = slot
                .stop_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if stop_error.is_some() {
                // Try again: the instances the model had, stopped one by one.
                let instances: Vec<InstanceId> = slot
                    .status
                    .borrow()
                    .replicas
                    .iter()
                    .filter_map(|r| r.instance.clone())
                    .collect();
                if instances.is_empty() {
                    // Nothing known to stop (the start itself broke): only a reconcile, which asks
                    // the runtime what runs, can tell.
                    return Err(SupervisorError::StopFailed {
                        model: id.clone(),
                        reason: stop_error.unwrap_or_default(),
                    });
                }
                let mut failures = Vec::new();
                for instance in instances {
                    if let Err(e) = self.shared.runtime.stop(&instance, RETRY_STOP_GRACE).await {
                        failures.push(format!("{instance}: {}", crate::error_chain(&e)));
                    }
                }
                if !failures.is_empty() {
                    let reason = format!("stop failed again: {}", failures.join("; "));
                    *slot
                        .stop_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
                    return Err(SupervisorError::StopFailed {
                        model: id.clone(),
                        reason,
                    });
                }
                *slot
                    .stop_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
            }
            // Failed by itself: nothing runs; the user has seen it and clears it.
            set_state(&self.shared, &slot, ModelState::Stopped);
        }
        Ok(())
    }

    /// Stops every model, concurrently, and returns the errors of those that could not be stopped.
    pub async fn shutdown(&self) -> Vec<SupervisorError> {
        let ids: Vec<ModelId> = self.lock_models().keys().cloned().collect();
        let results = futures_util::future::join_all(ids.iter().map(|id| self.stop(id))).await;
        results.into_iter().filter_map(Result::err).collect()
    }

    /// Whether this supervisor is starting, running or stopping the model.
    fn is_active(&self, id: &ModelId) -> bool {
        self.slot(id)
            .is_some_and(|slot| !slot.status.borrow().state.is_terminal())
    }

    /// The [fingerprints](LaunchPlan::fingerprint) of the plans `spec` would start now, one per
    /// replica, without starting anything: two specs with the same fingerprints run the same
    /// engines (a changed alias for the gateway, say, changes nothing that runs).
    ///
    /// # Errors
    ///
    /// [`SupervisorError::UnknownEngine`] or [`SupervisorError::Plan`], as [`start`](Self::start)
    /// would fail.
    pub async fn fingerprints(&self, spec: &ModelSpec) -> Result<Vec<String>, SupervisorError> {
        let engine = self.engine_for(spec)?;
        let plans = self.plan_all(spec, engine).await?;
        Ok(plans.iter().map(|(plan, _)| plan.fingerprint()).collect())
    }

    /// A model's status now.
    pub fn status(&self, id: &ModelId) -> Option<ModelStatus> {
        self.slot(id).map(|slot| slot.status.borrow().clone())
    }

    /// Every model's status now, ordered by id.
    pub fn list(&self) -> Vec<ModelStatus> {
        let mut all: Vec<ModelStatus> = self
            .lock_models()
            .values()
            .map(|slot| slot.status.borrow().clone())
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Follows one model's status: the receiver holds the latest and is notified on each change.
    pub fn watch(&self, id: &ModelId) -> Option<watch::Receiver<ModelStatus>> {
        self.slot(id).map(|slot| slot.status.subscribe())
    }

    /// Every event of every model from now on. A subscriber that falls more than
    /// [`SupervisorConfig::event_capacity`] events behind receives
    /// [`RecvError::Lagged`](broadcast::error::RecvError::Lagged) and continues from the oldest kept.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    fn engine_for(&self, spec: &ModelSpec) -> Result<Arc<dyn Engine>, SupervisorError> {
        self.shared
            .engines
            .get(&spec.engine)
            .cloned()
            .ok_or_else(|| {
                let mut known: Vec<&str> =
                    self.shared.engines.keys().map(EngineKind::as_str).collect();
                known.sort_unstable();
                SupervisorError::UnknownEngine {
                    model: spec.id.clone(),
                    engine: spec.engine.clone(),
                    known: known.join(", "),
                }
            })
    }

    /// Takes the model's slot for a new run: refuses while it is active, waits while it stops.
    async fn claim(&self, spec: &ModelSpec) -> Result<Arc<Slot>, SupervisorError> {
        loop {
            let mut stopping = {
                let mut models = self.lock_models();
                let previous = models
                    .get(&spec.id)
                    .map(|s| s.status.borrow().state.clone());
                let unstopped = models.get(&spec.id).and_then(|s| {
                    s.stop_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone()
                });
                if let (Some(ModelState::Failed { .. }), Some(reason)) = (&previous, unstopped) {
                    return Err(SupervisorError::NotStopped {
                        model: spec.id.clone(),
                        reason,
                    });
                }
                match previous {
                    Some(ModelState::Stopping) => models[&spec.id].status.subscribe(),
                    Some(state) if !state.is_terminal() => {
                        return Err(SupervisorError::AlreadyStarted {
                            model: spec.id.clone(),
                            state,
                        });
                    }
                    previous => {
                        let slot = Arc::new(Slot {
                            id: spec.id.clone(),
                            status: watch::Sender::new(ModelStatus {
                                id: spec.id.clone(),
                                served_name: spec.served_name().to_owned(),
                                engine: spec.engine.clone(),
                                state: ModelState::Starting,
                                replicas: (0..spec.replicas.get())
                                    .map(ReplicaStatus::new)
                                    .collect(),
                            }),
                            stop: CancellationToken::new(),
                            stop_error: Mutex::new(None),
                        });
                        models.insert(spec.id.clone(), slot.clone());
                        self.emit(
                            &spec.id,
                            EventKind::StateChanged {
                                from: previous.unwrap_or_default(),
                                to: ModelState::Starting,
                            },
                        );
                        return Ok(slot);
                    }
                }
            };
            // Serialize with the stop in progress, then look again.
            let _ = stopping.wait_for(|s| s.state.is_terminal()).await;
        }
    }

    /// Plans every replica; the supervisor's labels are added to each plan.
    /// Plans every replica of `spec` on the blocking pool: engines read files (a GGUF header,
    /// a `config.json`) and choose ports, which must not hold up the async executor that runs
    /// probes and stops.
    async fn plan_all(
        &self,
        spec: &ModelSpec,
        engine: Arc<dyn Engine>,
    ) -> Result<Vec<(LaunchPlan, crate::Diagnostics)>, SupervisorError> {
        let target = self.shared.runtime.target();
        let owner = self.shared.config.owner.clone();
        let spec = spec.clone();
        let id = spec.id.clone();
        tokio::task::spawn_blocking(move || plan_all(target, &owner, &spec, engine.as_ref()))
            .await
            .unwrap_or_else(|e| {
                Err(SupervisorError::Failed {
                    model: id,
                    reason: format!("internal error: planning failed: {e}"),
                    log_tail: Vec::new(),
                })
            })
    }

    fn slot(&self, id: &ModelId) -> Option<Arc<Slot>> {
        self.lock_models().get(id).cloned()
    }

    fn lock_models(&self) -> std::sync::MutexGuard<'_, HashMap<ModelId, Arc<Slot>>> {
        self.shared
            .models
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, model: &ModelId, kind: EventKind) {
        emit(&self.shared, model, kind);
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut engines: Vec<&str> = self.shared.engines.keys().map(EngineKind::as_str).collect();
        engines.sort_unstable();
        f.debug_struct("Supervisor")
            .field("engines", &engines)
            .field("runtime", &self.shared.runtime)
            .field("config", &self.shared.config)
            .field("models", &self.lock_models().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Sends an event; having no subscriber is fine.
pub(crate) fn emit(shared: &Shared, model: &ModelId, kind: EventKind) {
    tracing::debug!(%model, event = ?kind, "model event");
    let _ = shared.events.send(crate::Event {
        model: model.clone(),
        kind,
    });
}

/// Changes a model's state and announces it.
pub(crate) fn set_state(shared: &Shared, slot: &Slot, to: ModelState) {
    let mut from = None;
    slot.status.send_if_modified(|status| {
        if status.state == to {
            return false;
        }
        from = Some(std::mem::replace(&mut status.state, to.clone()));
        true
    });
    if let Some(from) = from {
        match &to {
            ModelState::Failed { reason, .. } => {
                tracing::warn!(model = %slot.id, %reason, "model failed");
            }
            _ => {
                tracing::info!(model = %slot.id, from = from.name(), to = to.name(), "model state");
            }
        }
        emit(shared, &slot.id, EventKind::StateChanged { from, to });
    }
}
