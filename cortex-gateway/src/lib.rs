//! Tower layers for OpenAI-compatible LLM traffic, to compose into your own hyper or axum server:
//! API-key auth, routing by model through a [`Registry`], load balancing, queueing, circuit breaking,
//! usage metering, SSE passthrough and OpenAI-shaped errors.
//!
//! # Overview
//!
//! Each layer is a module with its `Layer`, its `Service` and its named future and body, usable
//! alone with any inner service (STYLE.md §3); refusals are responses in OpenAI's error shape, so
//! `Error = S::Error` and the layers drop into axum:
//!
//! | module | does |
//! |---|---|
//! | [`auth`] | API keys (Bearer or `X-Api-Key`), hashed, constant-time; per-key models and rate |
//! | [`route`] | reads the body (bounded), finds `model`/`stream`, resolves the registry; `/v1/models` |
//! | [`meter`] | one usage record per request, exactly once; stream usage; Prometheus metrics |
//! | [`failover`] | a refused connection retried on another replica, within a retry budget |
//! | [`balance`] | round robin or least in flight (power of two choices), skipping open circuits |
//! | [`breaker`] | a circuit per replica: consecutive failures, cooldown, one probe |
//! | [`queue`] | a concurrency limit per replica, bounded FIFO wait with a timeout |
//! | [`proxy`] | pooled HTTP/1 client, timeouts, header hygiene, SSE frame by frame |
//! | [`error`] | OpenAI-shaped refusals |
//!
//! [`GatewayBuilder`] composes the whole stack (`auth → route → meter → failover → balance →
//! breaker → queue → proxy`) into one [`Gateway`] service; [`ServiceBuilderExt`] adds the layers to
//! `tower::ServiceBuilder` for stacks of your own. Under them sit two parsers, each
//! property-tested and fuzzed: [`scan`] (the request body, never re-serialized) and [`sse`] (an
//! event stream in any chunking, and the usage it carries).
//!
//! Serving the whole stack with hyper:
//!
//! ```no_run
//! use std::sync::Arc;
//! use cortex_core::InMemoryRegistry;
//! use cortex_gateway::GatewayBuilder;
//! use cortex_gateway::meter::InMemoryUsage;
//! use hyper_util::rt::TokioIo;
//! use hyper_util::service::TowerToHyperService;
//!
//! # async fn run() -> std::io::Result<()> {
//! let registry = Arc::new(InMemoryRegistry::new()); // kept true by the supervisor
//! let usage = Arc::new(InMemoryUsage::new());
//! let gateway = GatewayBuilder::new(registry).usage_sink(Arc::clone(&usage)).build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let service = TowerToHyperService::new(gateway.clone());
//!     let connection = hyper::server::conn::http1::Builder::new()
//!         .serve_connection(TokioIo::new(stream), service);
//!     tokio::spawn(connection);
//! }
//! # }
//! ```
//!
//! The parsers alone:
//!
//! ```
//! use cortex_gateway::scan::scan;
//! use cortex_gateway::sse::{SseParser, UsageSource, UsageTracker};
//!
//! let body = bytes::Bytes::from_static(br#"{"model": "gemma", "stream": true}"#);
//! let found = scan(&body)?;
//! assert_eq!(found.model.as_deref(), Some("gemma"));
//! assert_eq!(
//!     &found.with_usage_requested(&body)[..],
//!     br#"{"model": "gemma", "stream": true,"stream_options":{"include_usage":true}}"#
//! );
//!
//! let mut parser = SseParser::new();
//! let mut usage = UsageTracker::new();
//! let chunks: [&[u8]; 2] = [
//!     b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,",
//!     b"\"completion_tokens\":5}}\n\ndata: [DONE]\n\n",
//! ];
//! for chunk in chunks {
//!     parser.feed(chunk, |event| {
//!         usage.observe(event);
//!     });
//! }
//! assert_eq!(usage.usage().total_tokens, 8);
//! assert_eq!(usage.usage().source, UsageSource::Reported);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85, rolling, at least six months behind stable.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

pub mod auth;
pub mod balance;
pub mod breaker;
pub mod builder;
pub mod error;
pub mod failover;
mod guard;
pub mod meter;
pub mod outcome;
pub mod proxy;
pub mod queue;
pub mod replicas;
pub mod request_id;
pub mod route;
pub mod scan;
pub mod sse;

pub use builder::{Gateway, GatewayBody, GatewayBuilder, ServiceBuilderExt};
pub use guard::Guarded;

#[doc(no_inline)]
pub use cortex_core::Registry;
