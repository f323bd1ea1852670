//! [`SupervisorError`]: why a supervisor operation failed.

use crate::{EngineKind, InstanceId, LogLine, ModelId, ModelState, PlanError};

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
    /// [`Supervisor::reconcile`](crate::Supervisor::reconcile) could not remove an instance; it may still be running.
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
    /// until [`stop`](crate::Supervisor::stop) (which tries again) or
    /// [`reconcile`](crate::Supervisor::reconcile) succeeds.
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
