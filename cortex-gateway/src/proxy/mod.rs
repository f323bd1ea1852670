//! The proxy to the engines: the innermost service of the stack.
//!
//! [`Proxy`] sends each request to its [`Picked`](crate::balance::Picked) replica (or to a fixed
//! upstream, [`Proxy::to`]) over hyper-util's pooled HTTP/1 client — `TCP_NODELAY`, a connect
//! timeout, idle connections closed after 4 s, below the 5 s keep-alive of llama-server's
//! cpp-httplib and vLLM's uvicorn so the pool never reuses a connection the engine is closing —
//! and streams the answer back frame by frame: the body is never collected, coalesced or
//! compressed.
//!
//! - Headers: hop-by-hop headers (`Connection` and those it names, `Keep-Alive`, `TE`, `Trailer`,
//!   `Transfer-Encoding`, `Upgrade`, `Proxy-*`) are dropped both ways; the client's
//!   `Authorization`/`X-Api-Key` never go upstream, the replica's own key
//!   ([`Proxy::upstream_key`]) does; `Accept-Encoding` is dropped so answers come uncompressed;
//!   `x-request-id` is kept or created and returned. Streams get `Cache-Control: no-cache` and
//!   `X-Accel-Buffering: no`.
//! - Timeouts: connect (5 s), first byte (the response headers; 300 s, since a long prompt is
//!   processed before the first byte), idle between body frames (120 s). There is no total
//!   deadline: a stream may run as long as tokens keep coming.
//! - Failures: a refused connection is 502 `upstream_unavailable`, no headers in time is 504
//!   `upstream_timeout`; an engine's error answer is translated to OpenAI's shape by
//!   [`cortex_engines::errors::translate`] (status, message and `Retry-After` kept); a stream that
//!   breaks or goes idle after its headers ends with one well-formed
//!   `data: {"error": ..}` event and a clean end of the body, so SDKs raise a typed error instead
//!   of hanging or failing to parse.
//! - Connections: llama-server (b11434) closes its connection after a streamed answer despite
//!   its `Keep-Alive` header, so llama.cpp streams are sent with `Connection: close` and their
//!   connections never return to the pool (a pooled one would fail the next request with
//!   "connection closed before message completed"); plain requests and vLLM's streams reuse
//!   connections.
//! - Cancellation: when the client goes away the stack drops this service's future or body,
//!   which drops the upstream request; hyper closes that connection and the engine sees the
//!   disconnect (llama-server then stops generating).
//!
//! The error type is [`Infallible`](std::convert::Infallible): every failure is an answer.
//!
//! # Example
//!
//! ```no_run
//! use cortex_gateway::proxy::Proxy;
//! use http::Request;
//! use http_body_util::Full;
//! use tower::ServiceExt;
//!
//! # async fn run() {
//! let proxy = Proxy::to("http://127.0.0.1:8080".parse().unwrap());
//! let request = Request::post("/v1/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(Full::new(bytes::Bytes::from_static(br#"{"model":"m","messages":[]}"#)))
//!     .unwrap();
//! let response = proxy.oneshot(request).await.unwrap();
//! # }
//! ```

mod body;
mod future;
mod headers;
mod service;

pub use self::body::{IdleTimeout, ResponseBody};
pub use self::future::ResponseFuture;
pub use self::service::Proxy;
