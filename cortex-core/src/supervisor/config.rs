//! [`SupervisorConfig`]: the supervisor's tunables.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plan::labels;

/// Tunables of a [`Supervisor`](crate::Supervisor); every field has a default.
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
    /// Log lines kept in a [`Failed`](crate::ModelState::Failed) state. Default 50.
    pub log_tail_lines: usize,
    /// The longest a stop waits for requests still holding a model's endpoints (with a
    /// [`Drain`](crate::supervisor::Drain)) before it stops the instances anyway. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Events buffered for each subscriber before a slow one starts missing them. Default 1024.
    pub event_capacity: usize,
    /// The value of the [`MANAGED_BY`](labels::MANAGED_BY) label on everything this supervisor
    /// starts; [`Supervisor::reconcile`](crate::Supervisor::reconcile) considers only instances with the same owner. Default
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
            drain_timeout: Duration::from_secs(30),
            event_capacity: 1024,
            owner: labels::MANAGED_BY_VALUE.to_owned(),
        }
    }
}

/// The grace period of a stop retried after a failed one (the plan is not kept that long).
pub(crate) const RETRY_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
