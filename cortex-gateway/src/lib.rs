//! Tower layers for OpenAI-compatible LLM traffic, to compose into your own hyper or axum server:
//! API-key auth, routing by model through a [`Registry`], load balancing, queueing, circuit breaking,
//! usage metering, SSE passthrough and OpenAI-shaped errors.
//!
//! # Status
//!
//! The layers are being built (the cortex-gateway issue). What is here today are the two parsers
//! every layer stands on, each property-tested and fuzzed:
//!
//! - [`scan`]: finds `model`, `stream` and `stream_options.include_usage` in a request body
//!   without re-serializing it, and splices `include_usage` in when the gateway needs a stream's
//!   usage;
//! - [`sse`]: parses a `text/event-stream` body incrementally, whatever its chunking, and reads the
//!   usage an OpenAI stream carries (reported `usage`, else llama.cpp's `timings`).
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
mod guard;
pub mod meter;
pub mod proxy;
pub mod queue;
pub mod request_id;
pub mod route;
pub mod scan;
pub mod sse;

pub use builder::{Gateway, GatewayBody, GatewayBuilder, ServiceBuilderExt};
pub use guard::Guarded;

#[doc(no_inline)]
pub use cortex_core::Registry;
