//! Tower layers for OpenAI-compatible LLM traffic, to compose into your own hyper or axum server:
//! API-key auth, routing by model through a [`Registry`], load balancing, queueing, circuit breaking,
//! usage metering, SSE passthrough and OpenAI-shaped errors.
//!
//! # Status
//!
//! This crate is part of the workspace layout but holds no code yet: the layers arrive with the
//! cortex-gateway issue (see `docs/architecture.md`). Nothing here is usable today.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85, rolling, at least six months behind stable.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(no_inline)]
pub use cortex_core::Registry;
