//! Launch plans for llama.cpp's `llama-server` and vLLM, the process and Docker runtimes, health
//! probes and engine error translation, implementing the traits of [`cortex_core`].
//!
//! # Status
//!
//! This crate is part of the workspace layout but holds no code yet: plans, the process runtime and
//! the HTTP health probe arrive with the cortex-engines issue, the Docker runtime with the Docker
//! runtime issue (see `docs/architecture.md`). Nothing here is usable today.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85, rolling, at least six months behind stable.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(no_inline)]
pub use cortex_core::{Engine, HealthProbe, Runtime};
