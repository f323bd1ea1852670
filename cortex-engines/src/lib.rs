//! Launch plans for llama.cpp's `llama-server` and vLLM, the process runtime, the HTTP health
//! probe, and engine error translation, implementing the traits of [`cortex_core`].
//!
//! # Overview
//!
//! - [`LlamaCppEngine`] (pinned build b11434) and [`VllmEngine`] (pinned 0.32.0) turn a
//!   [`ModelSpec`](cortex_core::ModelSpec) into an exact [`LaunchPlan`](cortex_core::LaunchPlan) for
//!   a process or a container, after checking the typed settings ([`LlamaCppSettings`],
//!   [`VllmSettings`]) and the custom arguments against each version's flag table
//!   ([`flags`], generated from the engines' own help). [`preview`] shows a plan as a command line.
//! - [`resolve_gguf`] picks the GGUF file of a directory or split set; [`recommend`] picks an
//!   engine from the files and explains why.
//! - [`ProcessRuntime`] runs plans as child processes; `DockerRuntime` (feature `docker`, bollard)
//!   runs them as containers on the local Docker Engine, and `SwarmRuntime` (same feature) as
//!   services on a Docker Swarm, one per replica; [`HttpProbe`] probes each.
//! - [`translate`] turns the engines' error bodies into `OpenAI`'s shape.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cortex_core::{ModelSource, ModelSpec, Supervisor};
//! use cortex_engines::{HttpProbe, LlamaCppEngine, ProcessRuntime};
//!
//! let supervisor = Supervisor::builder(Arc::new(ProcessRuntime::new()), Arc::new(HttpProbe::default()))
//!     .engine(Arc::new(LlamaCppEngine::new()))
//!     .build();
//! let spec = ModelSpec::new("gemma".parse()?, "llamacpp".into(), ModelSource::Path("/models/gemma.gguf".into()));
//! supervisor.start(spec).await?;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `docker`: the Docker runtime (bollard).
//! - `full`: every feature.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85, rolling, at least six months behind stable.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod common;
pub mod errors;
pub mod flags;
pub mod llamacpp;
mod preview;
mod probe;
mod recommend;
mod resolve;
pub mod runtime;
pub mod vllm;

pub use errors::{OpenAiError, translate};
pub use llamacpp::{LlamaCppEngine, LlamaCppSettings};
pub use preview::preview;
pub use probe::HttpProbe;
pub use recommend::{Recommendation, VLLM_ARCHITECTURES, recommend};
pub use resolve::{ResolvedGguf, resolve_gguf};
#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub use runtime::{
    DockerRuntime, DockerRuntimeBuilder, Placement, SwarmRuntime, SwarmRuntimeBuilder,
};
pub use runtime::{ProcessRuntime, ProcessRuntimeBuilder, StateDirError};
pub use vllm::{VllmEngine, VllmSettings};
