//! The [`Runtime`] trait: start, watch and stop instances of [`LaunchPlan`]s.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use http::Uri;
use serde::{Deserialize, Serialize};

use crate::{BoxError, BoxFuture, InstanceId, LaunchPlan, ModelId, TargetKind};

/// A live stream of an instance's log lines.
pub type LogStream = Pin<Box<dyn Stream<Item = LogLine> + Send + 'static>>;

/// Starts plans as processes, containers or pods, and owns what it started.
///
/// Implementations: `cortex-engines`' process runtime (tokio) and Docker runtime (bollard); a
/// Kubernetes runtime fits the same shape. Methods return `impl Future + Send`; the object-safe twin
/// [`DynRuntime`] is implemented for every `Runtime`, and is what the [`Supervisor`](crate::Supervisor)
/// holds.
///
/// # Cancel safety
///
/// The supervisor never drops a [`start`](Self::start) or [`stop`](Self::stop) future before it
/// completes, so implementations need not make those cancel safe. [`wait`](Self::wait) futures are
/// dropped freely and must be cancel safe.
pub trait Runtime: Send + Sync + 'static {
    /// What this runtime starts; decides the [`Target`](crate::Target) engines plan for.
    fn target(&self) -> TargetKind;

    /// Starts `plan` and returns once the instance exists and runs (not once it is ready).
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Start`] when the instance could not be started; nothing is left behind.
    fn start(
        &self,
        plan: &LaunchPlan,
    ) -> impl Future<Output = Result<Instance, RuntimeError>> + Send;

    /// Resolves when the instance exits, with how it exited. May be called more than once, and
    /// concurrently, for the same instance; every call sees the exit.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NotFound`] for an instance this runtime does not know.
    fn wait(&self, id: &InstanceId) -> impl Future<Output = Result<Exit, RuntimeError>> + Send;

    /// The instance's current state.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NotFound`] for an instance this runtime does not know.
    fn inspect(
        &self,
        id: &InstanceId,
    ) -> impl Future<Output = Result<InstanceState, RuntimeError>> + Send;

    /// The last `tail` lines the instance wrote, oldest first; still available after it exited,
    /// until it is stopped.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NotFound`] for an instance this runtime does not know.
    fn logs(
        &self,
        id: &InstanceId,
        tail: usize,
    ) -> impl Future<Output = Result<Vec<LogLine>, RuntimeError>> + Send;

    /// The instance's log lines from now on, ending when it exits.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NotFound`] for an instance this runtime does not know.
    fn follow(
        &self,
        id: &InstanceId,
    ) -> impl Future<Output = Result<LogStream, RuntimeError>> + Send;

    /// Asks the instance to exit, kills it after `grace`, and removes what the runtime kept for it.
    /// Stopping an instance that already exited or was already stopped succeeds.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Operation`] when the instance could not be stopped or removed.
    fn stop(
        &self,
        id: &InstanceId,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Every instance this runtime owns (by its ownership [`labels`](crate::plan::labels)), including
    /// ones left by an earlier manager.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unavailable`] when the runtime cannot be reached.
    fn list(&self) -> impl Future<Output = Result<Vec<InstanceInfo>, RuntimeError>> + Send;
}

/// The object-safe twin of [`Runtime`], implemented for every `Runtime`; see there.
///
/// Methods return boxed futures, so only users of `dyn DynRuntime` pay for the boxing.
#[allow(missing_docs)]
pub trait DynRuntime: Send + Sync + 'static {
    fn target(&self) -> TargetKind;
    fn start<'a>(&'a self, plan: &'a LaunchPlan) -> BoxFuture<'a, Result<Instance, RuntimeError>>;
    fn wait<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<Exit, RuntimeError>>;
    fn inspect<'a>(
        &'a self,
        id: &'a InstanceId,
    ) -> BoxFuture<'a, Result<InstanceState, RuntimeError>>;
    fn logs<'a>(
        &'a self,
        id: &'a InstanceId,
        tail: usize,
    ) -> BoxFuture<'a, Result<Vec<LogLine>, RuntimeError>>;
    fn follow<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<LogStream, RuntimeError>>;
    fn stop<'a>(
        &'a self,
        id: &'a InstanceId,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;
    fn list(&self) -> BoxFuture<'_, Result<Vec<InstanceInfo>, RuntimeError>>;
}

impl<T: Runtime> DynRuntime for T {
    fn target(&self) -> TargetKind {
        Runtime::target(self)
    }

    fn start<'a>(&'a self, plan: &'a LaunchPlan) -> BoxFuture<'a, Result<Instance, RuntimeError>> {
        Box::pin(Runtime::start(self, plan))
    }

    fn wait<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<Exit, RuntimeError>> {
        Box::pin(Runtime::wait(self, id))
    }

    fn inspect<'a>(
        &'a self,
        id: &'a InstanceId,
    ) -> BoxFuture<'a, Result<InstanceState, RuntimeError>> {
        Box::pin(Runtime::inspect(self, id))
    }

    fn logs<'a>(
        &'a self,
        id: &'a InstanceId,
        tail: usize,
    ) -> BoxFuture<'a, Result<Vec<LogLine>, RuntimeError>> {
        Box::pin(Runtime::logs(self, id, tail))
    }

    fn follow<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<LogStream, RuntimeError>> {
        Box::pin(Runtime::follow(self, id))
    }

    fn stop<'a>(
        &'a self,
        id: &'a InstanceId,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(Runtime::stop(self, id, grace))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<InstanceInfo>, RuntimeError>> {
        Box::pin(Runtime::list(self))
    }
}

impl fmt::Debug for dyn DynRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynRuntime")
            .field("target", &self.target())
            .finish_non_exhaustive()
    }
}

/// A started instance of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Instance {
    /// The runtime's id for it.
    pub id: InstanceId,
    /// Where the engine can be reached from the manager, such as `http://127.0.0.1:39211` (for a
    /// container, its published host port).
    #[serde(with = "crate::uri_serde")]
    pub base_url: Uri,
}

// === impl Instance ===

impl Instance {
    /// An instance reachable at `base_url`.
    pub fn new(id: InstanceId, base_url: Uri) -> Self {
        Self { id, base_url }
    }
}

/// What a runtime knows of an instance it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceInfo {
    /// The runtime's id for it.
    pub id: InstanceId,
    /// Its labels, including the supervisor's [`labels`](crate::plan::labels).
    pub labels: BTreeMap<String, String>,
    /// Its state.
    pub state: InstanceState,
    /// Where it can be reached, when the runtime knows (a running container's published port).
    #[serde(
        default,
        with = "crate::uri_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub base_url: Option<Uri>,
}

// === impl InstanceInfo ===

impl InstanceInfo {
    /// Information about one instance, with no known address.
    pub fn new(id: InstanceId, labels: BTreeMap<String, String>, state: InstanceState) -> Self {
        Self {
            id,
            labels,
            state,
            base_url: None,
        }
    }

    /// Sets where the instance can be reached.
    pub fn with_base_url(mut self, base_url: Uri) -> Self {
        self.base_url = Some(base_url);
        self
    }
}

/// The state of an instance as its runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum InstanceState {
    /// Created but not running yet.
    Created,
    /// Running.
    Running,
    /// Exited; its logs are still there until it is stopped.
    Exited(Exit),
}

/// How an instance exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Exit {
    /// The exit code, when it exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
}

// === impl Exit ===

impl Exit {
    /// Exited by itself with `code`.
    pub fn code(code: i32) -> Self {
        Self {
            code: Some(code),
            signal: None,
        }
    }

    /// Ended by `signal`.
    pub fn signal(signal: i32) -> Self {
        Self {
            code: None,
            signal: Some(signal),
        }
    }

    /// Exited, but how is not known (it was removed by someone else before its status was read).
    pub fn unknown() -> Self {
        Self {
            code: None,
            signal: None,
        }
    }

    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "signal {signal}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// Which output stream a [`LogLine`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line an instance wrote, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogLine {
    /// Where it came from.
    pub source: LogSource,
    /// The line, lossily decoded as UTF-8.
    pub line: String,
}

// === impl LogLine ===

impl LogLine {
    /// A line on `source`.
    pub fn new(source: LogSource, line: impl Into<String>) -> Self {
        Self {
            source,
            line: line.into(),
        }
    }
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The runtime does not know this instance.
    #[error("instance {instance} not found")]
    NotFound {
        /// The instance asked for.
        instance: InstanceId,
    },
    /// A plan could not be started.
    #[error("cannot start replica {replica} of model {model}")]
    Start {
        /// The model.
        model: ModelId,
        /// The replica.
        replica: u32,
        /// The cause: a missing program or image, a port or name conflict.
        #[source]
        source: BoxError,
    },
    /// An operation on an existing instance failed.
    #[error("{operation} of instance {instance} failed")]
    Operation {
        /// What was being done: `stop`, `inspect`, `logs`.
        operation: &'static str,
        /// The instance.
        instance: InstanceId,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The runtime itself cannot be reached (the Docker socket is missing, say).
    #[error("runtime unavailable: {context}")]
    Unavailable {
        /// What was tried.
        context: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}
