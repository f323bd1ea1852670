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
//! 5. **Stop.** [`Supervisor::stop`] deregisters every endpoint first, then stops each instance with
//!    its plan's grace period. A stop during start cancels the start.
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

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::plan::labels;
use crate::{
    DynHealthProbe, DynRuntime, Engine, EngineKind, Event, EventKind, InMemoryRegistry, Instance,
    InstanceId, InstanceInfo, InstanceState, LaunchPlan, LogLine, ModelId, ModelSpec, ModelState,
    ModelStatus, PlanContext, PlanError, Registry, ReplicaStatus, TargetKind,
};

/// Tunables of a [`Supervisor`]; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SupervisorConfig {
    /// How often a running replica is probed. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Failed probes in a row that take a replica out of the registry. Default 3.
    pub failure_threshold: u32,
    /// The longest one probe may take before it counts as failed. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Log lines kept in a [`Failed`](ModelState::Failed) state. Default 50.
    pub log_tail_lines: usize,
    /// Events buffered for each subscriber before a slow one starts missing them. Default 1024.
    pub event_capacity: usize,
    /// The value of the [`MANAGED_BY`](labels::MANAGED_BY) label on everything this supervisor
    /// starts; [`Supervisor::reconcile`] considers only instances with the same owner. Default
    /// `cortex`; give each manager sharing a Docker Engine its own.
    pub owner: String,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(15),
            failure_threshold: 3,
            probe_timeout: Duration::from_secs(5),
            log_tail_lines: 50,
            event_capacity: 1024,
            owner: labels::MANAGED_BY_VALUE.to_owned(),
        }
    }
}

/// The grace period of a stop retried after a failed one (the plan is not kept that long).
const RETRY_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a supervisor operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// No engine of the spec's kind was given to the supervisor.
    #[error(
        "model {model} asks for engine {engine:?}, which this supervisor does not have (known: {known})"
    )]
    UnknownEngine {
        /// The model.
        model: ModelId,
        /// The kind asked for.
        engine: EngineKind,
        /// The kinds the supervisor has, comma-separated.
        known: String,
    },
    /// The model is already starting or running.
    #[error("model {model} is already {}", state.name())]
    AlreadyStarted {
        /// The model.
        model: ModelId,
        /// Its state.
        state: ModelState,
    },
    /// The supervisor does not manage this model.
    #[error("model {model} is not managed by this supervisor")]
    NotFound {
        /// The model.
        model: ModelId,
    },
    /// The engine refused the spec; nothing was started.
    #[error("model {model} was refused before starting")]
    Plan {
        /// The model.
        model: ModelId,
        /// What the engine found.
        #[source]
        source: PlanError,
    },
    /// No free port could be found for a replica.
    #[error("cannot choose a port for model {model}")]
    Port {
        /// The model.
        model: ModelId,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The model failed to start; nothing of it is left running.
    #[error("model {model} failed to start: {reason}")]
    Failed {
        /// The model.
        model: ModelId,
        /// What happened.
        reason: String,
        /// The last lines the failed instance wrote.
        log_tail: Vec<LogLine>,
    },
    /// A stop arrived while the model was starting; the start was abandoned.
    #[error("start of model {model} was cancelled by a stop")]
    StartCancelled {
        /// The model.
        model: ModelId,
    },
    /// The runtime could not be asked what it runs.
    #[error("the runtime cannot list its instances")]
    Runtime {
        /// The cause.
        #[source]
        source: crate::RuntimeError,
    },
    /// [`Supervisor::reconcile`] could not remove an instance; it may still be running.
    #[error("instance {instance} could not be removed (it was to go because {reason})")]
    RemoveFailed {
        /// The instance.
        instance: InstanceId,
        /// Why it was to be removed.
        reason: String,
        /// The cause.
        #[source]
        source: crate::RuntimeError,
    },
    /// The model's last stop failed and instances may still run: it is not started over them
    /// until [`stop`](Supervisor::stop) (which tries again) or
    /// [`reconcile`](Supervisor::reconcile) succeeds.
    #[error(
        "model {model} is not started: its last stop failed ({reason}) and its instances may still run; stop it again (or reconcile) first"
    )]
    NotStopped {
        /// The model.
        model: ModelId,
        /// Why the stop failed.
        reason: String,
    },
    /// Stopping failed; an instance may still be running.
    #[error("model {model} could not be stopped cleanly: {reason}")]
    StopFailed {
        /// The model.
        model: ModelId,
        /// What failed.
        reason: String,
    },
}

/// What [`Supervisor::reconcile`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Reconciliation {
    /// Instances taken over, ordered by model and replica; their models run.
    pub adopted: Vec<Adoption>,
    /// Instances stopped and removed, with why.
    pub removed: Vec<Removal>,
    /// What went wrong: a model whose adopted instances did not become ready (they were stopped),
    /// a model refused by its engine, an instance that could not be removed.
    pub failed: Vec<SupervisorError>,
}

/// An instance [`Supervisor::reconcile`] adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Adoption {
    /// The model.
    pub model: ModelId,
    /// The replica it serves.
    pub replica: u32,
    /// The instance.
    pub instance: InstanceId,
}

/// An instance [`Supervisor::reconcile`] stopped and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Removal {
    /// The instance.
    pub instance: InstanceId,
    /// The model its labels name, when they name a valid one.
    pub model: Option<ModelId>,
    /// Why it was not adopted.
    pub reason: String,
}

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

/// Builds a [`Supervisor`].
#[must_use]
pub struct SupervisorBuilder {
    runtime: Arc<dyn DynRuntime>,
    probe: Arc<dyn DynHealthProbe>,
    registry: Option<Arc<dyn Registry>>,
    pub(crate) engines: HashMap<EngineKind, Arc<dyn Engine>>,
    config: SupervisorConfig,
}

// === impl SupervisorBuilder ===

impl SupervisorBuilder {
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

// === impl Supervisor ===

impl Supervisor {
    /// A builder for a supervisor starting instances on `runtime` and probing them with `probe`.
    pub fn builder(
        runtime: Arc<dyn DynRuntime>,
        probe: Arc<dyn DynHealthProbe>,
    ) -> SupervisorBuilder {
        SupervisorBuilder {
            runtime,
            probe,
            registry: None,
            engines: HashMap::new(),
            config: SupervisorConfig::default(),
        }
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

    /// Takes stock of the instances an earlier manager left (the runtime's
    /// [`list`](crate::Runtime::list) of what carries the ownership label with this supervisor's
    /// [`owner`](SupervisorConfig::owner)) against the models configured now, `specs`:
    ///
    /// - a **running** instance of a configured model, for a replica the spec still has, started
    ///   from the same plan (its [`PLAN`](labels::PLAN) label equals the fingerprint of the plan
    ///   made now) is **adopted**: the model is started with that instance as the replica, probed
    ///   until ready, then registered. Replicas with nothing to adopt are started as usual;
    /// - every other instance (exited or created, of a model not configured, of a replica beyond
    ///   the spec, from a changed plan, a duplicate, of a model refused by its engine) is stopped
    ///   and **removed**.
    ///
    /// Configured models with nothing to adopt are left for the caller to [`start`](Self::start).
    /// Models this supervisor already runs, and their instances, are left alone. Each adoption and
    /// removal is also sent as an [`Event`] ([`EventKind::Adopted`], [`EventKind::Removed`]).
    /// Call it once when a manager starts, before starting models.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::Runtime`] when the runtime cannot list its instances; nothing was done.
    /// Failures of single adoptions and removals are reported in [`Reconciliation::failed`].
    pub async fn reconcile(&self, specs: &[ModelSpec]) -> Result<Reconciliation, SupervisorError> {
        let instances = self
            .shared
            .runtime
            .list()
            .await
            .map_err(|source| SupervisorError::Runtime { source })?;
        let mut report = Reconciliation::default();

        // What each configured model would run now; a model that cannot be planned adopts nothing.
        let mut wanted: HashMap<&ModelId, (&ModelSpec, Vec<LaunchPlan>)> = HashMap::new();
        for spec in specs {
            if self.is_active(&spec.id) {
                continue;
            }
            let planned = match self.engine_for(spec) {
                Ok(engine) => self.plan_all(spec, engine).await,
                Err(e) => Err(e),
            };
            match planned {
                Ok(plans) => {
                    let plans = plans.into_iter().map(|(plan, _)| plan).collect();
                    wanted.insert(&spec.id, (spec, plans));
                }
                Err(e) => report.failed.push(e),
            }
        }

        let mut adopt: HashMap<ModelId, Vec<Option<Instance>>> = HashMap::new();
        let mut removals = Vec::new();
        let owner = &self.shared.config.owner;
        for info in instances {
            if info.labels.get(labels::MANAGED_BY) != Some(owner) {
                continue; // another manager's
            }
            let model = info
                .labels
                .get(labels::MODEL_ID)
                .and_then(|m| m.parse::<ModelId>().ok());
            if model.as_ref().is_some_and(|m| self.is_active(m)) {
                continue;
            }
            let verdict = Self::judge(&info, model.as_ref(), &wanted, &adopt);
            match verdict {
                Ok((model, replica, base_url)) => {
                    let slots = adopt
                        .entry(model.clone())
                        .or_insert_with(|| vec![None; wanted[&model].1.len()]);
                    slots[replica] = Some(Instance::new(info.id.clone(), base_url));
                }
                Err(reason) => {
                    let grace = model
                        .as_ref()
                        .and_then(|m| wanted.get(m))
                        .and_then(|(_, plans)| plans.first())
                        .map_or(Duration::from_secs(10), |p| p.stop_grace);
                    removals.push((info.id, model, reason, grace));
                }
            }
        }

        self.remove_all(removals, &mut report).await;

        let starts = adopt.into_iter().map(|(model, slots)| {
            let spec = wanted[&model].0.clone();
            let adopted: Vec<(u32, InstanceId)> = (0..)
                .zip(&slots)
                .filter_map(|(replica, slot)| slot.as_ref().map(|i| (replica, i.id.clone())))
                .collect();
            async move {
                let result = self.start_adopting(spec, slots).await;
                (model, adopted, result)
            }
        });
        for (model, adopted, result) in futures_util::future::join_all(starts).await {
            match result {
                Ok(()) => report
                    .adopted
                    .extend(adopted.into_iter().map(|(replica, instance)| Adoption {
                        model: model.clone(),
                        replica,
                        instance,
                    })),
                Err(e) => report.failed.push(e),
            }
        }
        report
            .adopted
            .sort_by(|a, b| (&a.model, a.replica).cmp(&(&b.model, b.replica)));
        Ok(report)
    }

    /// Stops and removes what [`reconcile`](Self::reconcile) does not adopt, concurrently.
    async fn remove_all(
        &self,
        removals: Vec<(InstanceId, Option<ModelId>, String, Duration)>,
        report: &mut Reconciliation,
    ) {
        let removed = futures_util::future::join_all(removals.into_iter().map(
            |(instance, model, reason, grace)| async move {
                let result = self.shared.runtime.stop(&instance, grace).await;
                (instance, model, reason, result)
            },
        ))
        .await;
        for (instance, model, reason, result) in removed {
            match result {
                Ok(()) => {
                    tracing::info!(%instance, %reason, "removed an instance left by an earlier manager");
                    if let Some(model) = &model {
                        self.emit(
                            model,
                            EventKind::Removed {
                                instance: instance.clone(),
                                reason: reason.clone(),
                            },
                        );
                    }
                    report.removed.push(Removal {
                        instance,
                        model,
                        reason,
                    });
                }
                Err(source) => report.failed.push(SupervisorError::RemoveFailed {
                    instance,
                    reason,
                    source,
                }),
            }
        }
    }

    /// Whether `info` can be adopted, and as what; else why not.
    fn judge(
        info: &InstanceInfo,
        model: Option<&ModelId>,
        wanted: &HashMap<&ModelId, (&ModelSpec, Vec<LaunchPlan>)>,
        adopt: &HashMap<ModelId, Vec<Option<Instance>>>,
    ) -> Result<(ModelId, usize, http::Uri), String> {
        let Some(model) = model else {
            return Err(format!(
                "its {} label is missing or invalid",
                labels::MODEL_ID
            ));
        };
        let Some((_, plans)) = wanted.get(model) else {
            return Err(format!("model {model} is not configured"));
        };
        if info.state != InstanceState::Running {
            return Err(match info.state {
                InstanceState::Exited(exit) => format!("it is not running (exited with {exit})"),
                _ => "it is not running".to_owned(),
            });
        }
        let replica = info
            .labels
            .get(labels::REPLICA)
            .and_then(|r| r.parse::<usize>().ok())
            .ok_or_else(|| format!("its {} label is missing or invalid", labels::REPLICA))?;
        let Some(plan) = plans.get(replica) else {
            return Err(format!(
                "replica {replica} is beyond the {} configured",
                plans.len()
            ));
        };
        if info.labels.get(labels::PLAN) != plan.labels.get(labels::PLAN) {
            return Err("it was started from a different plan (the configuration changed)".into());
        }
        if adopt
            .get(model)
            .is_some_and(|slots| slots[replica].is_some())
        {
            return Err(format!(
                "replica {replica} is already adopted from another instance"
            ));
        }
        let base_url = info
            .base_url
            .clone()
            .ok_or_else(|| "the runtime does not know its address".to_owned())?;
        Ok((model.clone(), replica, base_url))
    }

    /// Whether this supervisor is starting, running or stopping the model.
    fn is_active(&self, id: &ModelId) -> bool {
        self.slot(id)
            .is_some_and(|slot| !slot.status.borrow().state.is_terminal())
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

/// The ports for a model's replicas: the engine's own port inside containers (each has its own
/// network namespace), distinct free loopback ports for local processes.
fn choose_ports(target: TargetKind, default_port: u16, replicas: u32) -> std::io::Result<Vec<u16>> {
    if target != TargetKind::Process {
        return Ok(vec![default_port; replicas as usize]);
    }
    // Hold every listener until all are bound, so the replicas get distinct ports.
    let listeners = (0..replicas)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Plans every replica of `spec` with `engine`, labelled for `owner`.
fn plan_all(
    target: TargetKind,
    owner: &str,
    spec: &ModelSpec,
    engine: &dyn Engine,
) -> Result<Vec<(LaunchPlan, crate::Diagnostics)>, SupervisorError> {
    let ports =
        choose_ports(target, engine.default_port(), spec.replicas.get()).map_err(|source| {
            SupervisorError::Port {
                model: spec.id.clone(),
                source,
            }
        })?;
    let mut plans = Vec::with_capacity(ports.len());
    for (replica, port) in (0..).zip(ports) {
        let cx = PlanContext::new(target, replica, port);
        let planned = engine
            .plan(spec, &cx)
            .map_err(|source| SupervisorError::Plan {
                model: spec.id.clone(),
                source,
            })?;
        let mut plan = planned.plan;
        plan.replica = replica;
        if let Some(timeout) = spec.startup_timeout {
            plan.health.startup_timeout = timeout;
        }
        let fingerprint = plan.fingerprint();
        for (key, value) in [
            (labels::MANAGED_BY, owner.to_owned()),
            (labels::MODEL_ID, spec.id.to_string()),
            (labels::REPLICA, replica.to_string()),
            (labels::ENGINE, spec.engine.to_string()),
            (labels::PLAN, fingerprint),
        ] {
            plan.labels.insert(key.to_owned(), value);
        }
        plans.push((plan, planned.warnings));
    }
    Ok(plans)
}
