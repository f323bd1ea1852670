//! Health: what a probe looks for ([`HealthSpec`]) and what it finds ([`HealthStatus`]).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How to tell whether an engine is ready, loading or down, and how long to wait for it.
///
/// Engines differ: llama-server answers `503` with `Loading model` on `/health` while it loads and
/// `200` once ready, while vLLM refuses connections until it is ready. The engine's plan carries
/// these semantics, and one [`HealthProbe`](crate::HealthProbe) implementation applies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HealthSpec {
    /// The HTTP path probed, such as `/health`. Any 2xx answer means ready.
    pub path: String,
    /// Statuses that mean "still loading", such as `[503]` for llama-server.
    #[serde(default)]
    pub loading_statuses: Vec<u16>,
    /// What a refused connection means.
    #[serde(default)]
    pub refused: Refused,
    /// How long the engine may take from start to ready.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// The first wait between probes while starting; doubled after each probe up to
    /// [`max_poll_interval`](Self::max_poll_interval).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The longest wait between probes while starting.
    #[serde(with = "humantime_serde")]
    pub max_poll_interval: Duration,
    /// A command run inside the instance that exits 0 when the engine is healthy, for runtimes
    /// with health checks of their own (a Docker `HEALTHCHECK`, a Kubernetes exec probe), such as
    /// `["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/health"]`. Engines set it when
    /// their image has the tool; `None` tells such a runtime to disable any check the image
    /// declares, which may probe the wrong port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A request that must succeed once, after the health path first answers ready, before the
    /// instance counts as ready: for engines whose health answer does not prove that generation
    /// works (vLLM answers `/health` 200 before its first forward pass has run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
}

/// A request an instance must answer with 2xx once before it is ready; see
/// [`HealthSpec::warmup`]. A probe sends it as `POST path` with `body` as JSON, its `model` field
/// set to the endpoint's served name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Warmup {
    /// The path, such as `/v1/completions`.
    pub path: String,
    /// The JSON body, without `model`: `{"prompt": "Hello", "max_tokens": 1}`.
    pub body: serde_json::Value,
}

impl Warmup {
    /// A warm-up request: `POST path` with `body`.
    pub fn new(path: impl Into<String>, body: serde_json::Value) -> Self {
        Self {
            path: path.into(),
            body,
        }
    }
}

/// What a refused connection means while an engine starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refused {
    /// The engine does not listen until it is ready (vLLM): refused means loading.
    #[default]
    Loading,
    /// The engine listens from the start (llama-server): refused means down.
    Down,
}

// === impl HealthSpec ===

impl HealthSpec {
    /// A spec probing `path`, with a 300 s startup timeout and polls from 250 ms up to 2 s apart.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            loading_statuses: Vec::new(),
            refused: Refused::default(),
            startup_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_millis(250),
            max_poll_interval: Duration::from_secs(2),
            command: None,
            warmup: None,
        }
    }

    /// Sets the warm-up request (see [`warmup`](Self::warmup)).
    pub fn with_warmup(mut self, warmup: Warmup) -> Self {
        self.warmup = Some(warmup);
        self
    }

    /// Sets the in-instance health check command (see [`command`](Self::command)).
    pub fn with_command<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = Some(command.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the statuses that mean loading.
    pub fn with_loading_statuses(mut self, statuses: impl Into<Vec<u16>>) -> Self {
        self.loading_statuses = statuses.into();
        self
    }

    /// Sets what a refused connection means.
    pub fn with_refused(mut self, refused: Refused) -> Self {
        self.refused = refused;
        self
    }

    /// Sets the startup timeout.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Sets the first and the longest wait between probes while starting.
    pub fn with_poll_interval(mut self, first: Duration, max: Duration) -> Self {
        self.poll_interval = first;
        self.max_poll_interval = max.max(first);
        self
    }

    /// Classifies an HTTP status by this spec.
    pub fn classify_status(&self, status: u16, body_hint: Option<&str>) -> HealthStatus {
        if (200..300).contains(&status) {
            HealthStatus::Ready
        } else if self.loading_statuses.contains(&status) {
            HealthStatus::Loading {
                detail: body_hint.map(str::to_owned),
            }
        } else {
            HealthStatus::Down {
                reason: match body_hint {
                    Some(body) => format!("{} answered {status}: {body}", self.path),
                    None => format!("{} answered {status}", self.path),
                },
            }
        }
    }
}

/// The answer of one probe of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthStatus {
    /// Serving requests.
    Ready,
    /// Up but still loading the model.
    Loading {
        /// What the engine said, if anything.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Not answering as a healthy engine would.
    Down {
        /// Why, in words: `connection refused`, `/health answered 500`, `probe timed out after 5s`.
        reason: String,
    },
}

// === impl HealthStatus ===

impl HealthStatus {
    /// Down, for `reason`.
    pub fn down(reason: impl Into<String>) -> Self {
        Self::Down {
            reason: reason.into(),
        }
    }

    /// Loading, with no detail.
    pub fn loading() -> Self {
        Self::Loading { detail: None }
    }

    /// Whether this is [`Ready`](Self::Ready).
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready => f.write_str("ready"),
            Self::Loading { detail: None } => f.write_str("loading"),
            Self::Loading {
                detail: Some(detail),
            } => write!(f, "loading ({detail})"),
            Self::Down { reason } => write!(f, "down: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify() {
        let spec = HealthSpec::new("/health").with_loading_statuses([503]);
        assert_eq!(spec.classify_status(200, None), HealthStatus::Ready);
        assert_eq!(
            spec.classify_status(503, Some("Loading model")),
            HealthStatus::Loading {
                detail: Some("Loading model".into())
            }
        );
        assert_eq!(
            spec.classify_status(500, None).to_string(),
            "down: /health answered 500"
        );
    }

    #[test]
    fn poll_interval_max_is_never_below_first() {
        let spec = HealthSpec::new("/h")
            .with_poll_interval(Duration::from_secs(3), Duration::from_secs(1));
        assert_eq!(spec.max_poll_interval, Duration::from_secs(3));
    }
}
