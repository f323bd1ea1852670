//! Cortex's stable seam: the traits every part speaks, the value types, and the [`Supervisor`].
//!
//! # Overview
//!
//! Cortex serves open LLMs on your own GPUs by managing inference engines (llama.cpp's
//! `llama-server`, vLLM) and routing OpenAI-compatible traffic to them. This crate holds what the
//! other Cortex crates share:
//!
//! - **Value types** a user writes in a config file ([`ModelSpec`], [`ModelSource`], [`Task`],
//!   [`EngineSettings`], [`RestartPolicy`], [`SupervisorConfig`]) and those the parts exchange
//!   ([`LaunchPlan`], [`HealthSpec`], [`HealthStatus`], [`Endpoint`], [`Diagnostic`], [`ModelState`],
//!   [`Event`]). Everything a user writes is `serde`, in TOML or JSON.
//! - **Traits**: [`Engine`] (spec → plan), [`Runtime`] (plan → running instance), [`HealthProbe`]
//!   (instance → ready or not) and [`Registry`] (served name → endpoints). Async traits return
//!   `impl Future + Send`; each has an object-safe twin ([`DynRuntime`], [`DynHealthProbe`]) so that
//!   one supervisor can hold different implementations.
//! - **[`InMemoryRegistry`]**, whose `resolve` is a lock-free snapshot read, as the gateway calls it on
//!   every request.
//! - **[`Supervisor`]**, which drives each model `Stopped → Starting → Running → Stopping → Stopped`
//!   (or `Failed`), keeps the registry true, and reports every transition as an [`Event`].
//!
//! ```text
//! ModelSpec ──Engine::plan──▶ LaunchPlan ──Runtime::start──▶ Instance ──HealthProbe──▶ Ready
//!                                                              │                         │
//!                                                      Runtime::logs/stop          Registry::register
//! ```
//!
//! # Example
//!
//! A config file declares models; the supervisor starts them. See the [`supervisor`] module for a
//! complete, runnable lifecycle.
//!
//! ```
//! use cortex_core::{ModelSpec, RestartPolicy, SupervisorConfig};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     #[serde(default)]
//!     supervisor: SupervisorConfig,
//!     models: Vec<ModelSpec>,
//! }
//!
//! let config: Config = toml::from_str(r#"
//!     [supervisor]
//!     probe_interval = "10s"
//!
//!     [[models]]
//!     id = "qwen"
//!     engine = "vllm"
//!     source = { hub = "Qwen/Qwen3-8B" }
//!     replicas = 2
//!     restart = { on_failure = { max_restarts = 3, backoff = "10s" } }
//! "#).unwrap();
//!
//! assert_eq!(config.supervisor.probe_interval.as_secs(), 10);
//! assert_eq!(config.supervisor.failure_threshold, 3);
//! assert_eq!(config.models[0].replicas.get(), 2);
//! assert!(matches!(config.models[0].restart, RestartPolicy::OnFailure { max_restarts: 3, .. }));
//! ```
//!
//! # Feature flags
//!
//! | feature     | default | what it adds |
//! |-------------|---------|--------------|
//! | `test-util` | no      | [`test_util`]: a scripted fake engine, runtime and probe for testing code built on the supervisor |
//! | `full`      | no      | every feature above |
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85 (edition 2024). The policy is rolling: the MSRV may rise, but stays at least six months
//! behind the latest stable release, and a rise is noted in the changelog.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod diagnostic;
mod endpoint;
mod engine;
mod health;
mod id;
pub mod plan;
mod probe;
mod registry;
mod runtime;
mod settings;
mod spec;
mod state;
pub mod supervisor;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use endpoint::Endpoint;
pub use engine::{Engine, PlanContext, PlanError, Planned};
pub use health::{HealthSpec, HealthStatus, Refused, Warmup};
pub use id::{EngineKind, InstanceId, InvalidModelId, MODEL_ID_MAX_LEN, ModelId};
pub use plan::{GpuRequest, LaunchPlan, Mount, Target, TargetKind};
pub use probe::{DynHealthProbe, HealthProbe};
pub use registry::{Endpoints, InMemoryRegistry, Registry, RegistrySnapshot};
pub use runtime::{
    DynRuntime, Exit, Instance, InstanceInfo, InstanceState, LogLine, LogSource, LogStream,
    Runtime, RuntimeError,
};
pub use settings::{EngineSettings, SettingsError};
pub use spec::{HubRepo, InvalidSource, Load, ModelSource, ModelSpec, RestartPolicy, Task};
pub use state::{Event, EventKind, ModelState, ModelStatus, ReplicaStatus};
pub use supervisor::{
    Adoption, Following, Reconciliation, Removal, Supervisor, SupervisorBuilder, SupervisorConfig,
    SupervisorError,
};

/// A boxed error that can cross threads, for causes from any implementation.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A boxed future that can cross threads, returned by the object-safe `Dyn*` traits.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// An error and its causes, joined by `: ` — how Cortex shows an error in a state or a message.
///
/// ```
/// let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
/// let err = cortex_core::RuntimeError::Start {
///     model: "m".parse().unwrap(),
///     replica: 0,
///     source: Box::new(io),
/// };
/// assert_eq!(cortex_core::error_chain(&err), "cannot start replica 0 of model m: no such file");
/// ```
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// `serde` for [`http::Uri`] as its string form.
pub(crate) mod uri_serde {
    use http::Uri;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(crate) fn serialize<S: Serializer>(uri: &Uri, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(uri)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uri, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| D::Error::custom(format_args!("invalid URL {s:?}: {e}")))
    }

    /// The same for `Option<Uri>`.
    pub(crate) mod option {
        use http::Uri;
        use serde::{Deserialize, Deserializer, Serializer};

        #[allow(clippy::ref_option, reason = "serde's `with` passes `&Option<T>`")]
        pub(crate) fn serialize<S: Serializer>(uri: &Option<Uri>, s: S) -> Result<S::Ok, S::Error> {
            match uri {
                Some(uri) => super::serialize(uri, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Uri>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(deserialize_with = "super::deserialize")] Uri);
            Ok(Option::<Wrap>::deserialize(d)?.map(|Wrap(uri)| uri))
        }
    }
}
