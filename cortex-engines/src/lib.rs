//! Launch plans for llama.cpp's `llama-server` and vLLM, the process runtime, the HTTP health
//! probe, and engine error translation, implementing the traits of [`cortex_core`].
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85, rolling, at least six months behind stable.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod errors;
pub mod flags;
pub mod llamacpp;
mod probe;
mod recommend;
mod resolve;
pub mod runtime;
pub mod vllm;

pub use errors::{OpenAiError, translate};
pub use llamacpp::{LlamaCppEngine, LlamaCppSettings};
pub use probe::HttpProbe;
pub use recommend::{Recommendation, VLLM_ARCHITECTURES, recommend};
pub use resolve::{ResolvedGguf, resolve_gguf};
pub use runtime::{ProcessRuntime, ProcessRuntimeBuilder};
pub use vllm::{VllmEngine, VllmSettings};
