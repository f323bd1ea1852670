//! The [`Engine`] trait: from a [`ModelSpec`] to a validated [`LaunchPlan`].

use std::fmt;

use crate::{
    BoxError, Diagnostics, EngineKind, LaunchPlan, LogLine, ModelId, ModelSpec, TargetKind,
};

/// Turns a [`ModelSpec`] into an exact, validated [`LaunchPlan`] for one engine.
///
/// Planning is synchronous and free of side effects other than reading local files (a GGUF header,
/// a `config.json`): everything that can be checked before a process or container exists is checked
/// here, and reported as [`Diagnostics`] rather than as a failure minutes later inside a container.
///
/// The trait is object safe; a [`Supervisor`](crate::Supervisor) holds engines of different kinds
/// as `Arc<dyn Engine>`.
pub trait Engine: fmt::Debug + Send + Sync + 'static {
    /// The kind this engine serves; [`ModelSpec::engine`] selects it.
    fn kind(&self) -> EngineKind;

    /// The port the engine listens on inside a container.
    fn default_port(&self) -> u16;

    /// Builds the plan for one replica of `spec`.
    ///
    /// # Errors
    ///
    /// [`PlanError::Invalid`] with every error found in the settings and custom arguments (not just
    /// the first), or [`PlanError::Other`] when a needed file cannot be read.
    fn plan(&self, spec: &ModelSpec, cx: &PlanContext) -> Result<Planned, PlanError>;

    /// Whether an instance that exited while starting did so because its port was taken (between
    /// the supervisor's choice of the port and the engine's bind), judged from the end of its log;
    /// the supervisor then starts it again on another port. The default recognises the C
    /// library's message for `EADDRINUSE` ("Address already in use"), which Python, Go and Rust
    /// servers print; an engine with its own wording adds it.
    fn port_taken(&self, log_tail: &[LogLine]) -> bool {
        log_tail.iter().any(|l| {
            l.line
                .to_ascii_lowercase()
                .contains("address already in use")
        })
    }
}

/// Where and how a plan will run, decided by the supervisor before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanContext {
    /// What the runtime starts.
    pub target: TargetKind,
    /// Which replica, from 0.
    pub replica: u32,
    /// The port the engine must listen on.
    pub port: u16,
}

// === impl PlanContext ===

impl PlanContext {
    /// A context for replica `replica` listening on `port`.
    pub fn new(target: TargetKind, replica: u32, port: u16) -> Self {
        Self {
            target,
            replica,
            port,
        }
    }
}

/// A plan, with the warnings found while making it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Planned {
    /// The plan.
    pub plan: LaunchPlan,
    /// Warnings; never errors (those make [`PlanError::Invalid`]).
    pub warnings: Diagnostics,
}

// === impl Planned ===

impl Planned {
    /// A plan with warnings.
    pub fn new(plan: LaunchPlan, warnings: Diagnostics) -> Self {
        Self { plan, warnings }
    }
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The spec has errors; nothing was started.
    #[error("invalid settings for model {model}:\n{diagnostics}")]
    Invalid {
        /// The model.
        model: ModelId,
        /// Every finding, errors and warnings.
        diagnostics: Diagnostics,
    },
    /// Something the plan needs could not be read or resolved.
    #[error("cannot plan model {model}: {context}")]
    Other {
        /// The model.
        model: ModelId,
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}
