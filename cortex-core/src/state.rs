//! Lifecycle state of a model ([`ModelState`], [`ModelStatus`]) and the [`Event`]s that change it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Endpoint, EngineKind, Exit, HealthStatus, InstanceId, LogLine, ModelId};

/// Where a model is in its lifecycle.
///
/// ```text
///            start                 ready              stop
/// Stopped ─────────▶ Starting ───────────▶ Running ─────────▶ Stopping ──▶ Stopped
///    ▲                  │  │                 │  ▲                ▲
///    │ stop       exit, │  └── stop ─────────┼──┼────────────────┘
///    │          timeout │                    │  │ probes pass again
///    │                  ▼        exit        ▼  │
///  Failed ◀──────────────────────────────  Unhealthy  (N probes failed: out of the registry)
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ModelState {
    /// Nothing is running.
    #[default]
    Stopped,
    /// Instances are being started and probed until ready.
    Starting,
    /// Every replica is ready and registered.
    Running,
    /// Instances run, but some replicas are out of the registry: their probes failed repeatedly,
    /// or they are being restarted.
    Unhealthy {
        /// Replicas still registered.
        healthy: u32,
        /// Replicas in all.
        replicas: u32,
        /// Why, for the most recent replica that left the registry.
        reason: String,
    },
    /// Endpoints are deregistered and instances being stopped.
    Stopping,
    /// The model could not start or stopped by itself; nothing of it is running (unless stopping
    /// itself failed, which the reason then says).
    Failed {
        /// What happened.
        reason: String,
        /// The last lines the failed instance wrote.
        log_tail: Vec<LogLine>,
    },
}

// === impl ModelState ===

impl ModelState {
    /// Whether the state is final for the current run: `Stopped` or `Failed`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Stopped | Self::Failed { .. })
    }

    /// The state's name, as serialized: `stopped`, `starting`, `running`, `unhealthy`, `stopping`,
    /// `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Unhealthy { .. } => "unhealthy",
            Self::Stopping => "stopping",
            Self::Failed { .. } => "failed",
        }
    }
}

impl fmt::Display for ModelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unhealthy {
                healthy,
                replicas,
                reason,
            } => write!(f, "unhealthy ({healthy}/{replicas} ready: {reason})"),
            Self::Failed { reason, .. } => write!(f, "failed: {reason}"),
            other => f.write_str(other.name()),
        }
    }
}

/// A model's state and its replicas, as the supervisor sees them now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelStatus {
    /// The model.
    pub id: ModelId,
    /// The name clients use.
    pub served_name: String,
    /// Its engine.
    pub engine: EngineKind,
    /// Its lifecycle state.
    pub state: ModelState,
    /// Its replicas, by index; empty until planned.
    pub replicas: Vec<ReplicaStatus>,
}

/// One replica of a running model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// Index, from 0.
    pub index: u32,
    /// The current instance, once started.
    pub instance: Option<InstanceId>,
    /// Its endpoint, once started.
    pub endpoint: Option<Endpoint>,
    /// Whether the endpoint is in the registry now.
    pub registered: bool,
    /// The latest probe answer.
    pub health: Option<HealthStatus>,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// Restarts so far.
    pub restarts: u32,
}

// === impl ReplicaStatus ===

impl ReplicaStatus {
    pub(crate) fn new(index: u32) -> Self {
        Self {
            index,
            instance: None,
            endpoint: None,
            registered: false,
            health: None,
            consecutive_failures: 0,
            restarts: 0,
        }
    }
}

/// Something that happened to a model; the supervisor sends one for every transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// The model.
    pub model: ModelId,
    /// What happened.
    pub kind: EventKind,
}

/// What happened, in an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The model's state changed.
    StateChanged {
        /// The state before.
        from: ModelState,
        /// The state now.
        to: ModelState,
    },
    /// A plan was made for a replica, with its warnings rendered.
    Planned {
        /// The replica.
        replica: u32,
        /// The command line, as a person would type it (program or image, then arguments).
        command: String,
        /// Warnings the engine found.
        warnings: Vec<String>,
    },
    /// The runtime started an instance.
    InstanceStarted {
        /// The replica.
        replica: u32,
        /// The instance.
        instance: InstanceId,
    },
    /// A probe answered differently from the probe before it (so a loading engine is reported
    /// once, not every poll).
    Health {
        /// The replica.
        replica: u32,
        /// What the probe found.
        status: HealthStatus,
        /// Failed probes in a row, while running.
        consecutive_failures: u32,
    },
    /// An endpoint entered the registry.
    Registered {
        /// The endpoint.
        endpoint: Endpoint,
    },
    /// An endpoint left the registry.
    Deregistered {
        /// The endpoint.
        endpoint: Endpoint,
        /// Why.
        reason: String,
    },
    /// An instance exited by itself.
    InstanceExited {
        /// The replica.
        replica: u32,
        /// The instance.
        instance: InstanceId,
        /// How, when the runtime knew.
        exit: Option<Exit>,
    },
    /// An instance was stopped and removed.
    InstanceStopped {
        /// The replica.
        replica: u32,
        /// The instance.
        instance: InstanceId,
    },
    /// An instance left running by an earlier manager was taken over for a replica (by
    /// [`Supervisor::reconcile`](crate::Supervisor::reconcile)); it is probed like a new one
    /// before it is registered.
    Adopted {
        /// The replica.
        replica: u32,
        /// The instance.
        instance: InstanceId,
    },
    /// An instance left by an earlier manager was stopped and removed by
    /// [`Supervisor::reconcile`](crate::Supervisor::reconcile) instead of adopted.
    Removed {
        /// The instance.
        instance: InstanceId,
        /// Why it was not adopted: exited, not configured, started from another plan, a duplicate.
        reason: String,
    },
    /// A replica will be restarted after its instance exited.
    Restarting {
        /// The replica.
        replica: u32,
        /// This attempt, from 1.
        attempt: u32,
        /// Attempts allowed.
        max: u32,
    },
}
