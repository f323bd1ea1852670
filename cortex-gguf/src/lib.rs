//! A zero-copy GGUF reader that never panics on bad input, and a memory estimator that predicts what
//! llama.cpp allocates on each GPU and on the host.
//!
//! # Status
//!
//! This crate is part of the workspace layout but holds no code yet: the reader arrives with the
//! cortex-gguf issue and the estimator with the memory-estimator issue (see `docs/architecture.md`).
//! Nothing here is usable today.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85, rolling, at least six months behind stable.

#![cfg_attr(docsrs, feature(doc_cfg))]
