//! Usage metering: one [`UsageRecord`] per request, delivered to a [`UsageSink`] exactly once,
//! when the response body ends, fails or is dropped.
//!
//! [`MeterUsage`] notes the request's id (`x-request-id`, created when absent), the caller's key id
//! ([`ApiKey`](crate::auth::ApiKey)) and model ([`Routed`](crate::route::Routed)), and records
//! from the response's [`Tap`](crate::outcome::Tap) — the one reading of the body the stack makes
//! ([`outcome`](crate::outcome)), shared with the breaker: the proxy's, or, over any other inner
//! service, a [`TapBody`](crate::outcome::TapBody) of its own. So:
//!
//! - a stream (`text/event-stream`): the `usage` object when the engine sends one (chat and
//!   completion chunks, `/v1/responses`' `response.completed`), else llama.cpp's `timings`, else
//!   the usage is recorded as missing. When routing spliced `include_usage` in
//!   ([`Routed::usage_injected`](crate::route::Routed::usage_injected)), the usage-only chunk the
//!   engine adds is cut out before the client sees it;
//! - a JSON answer of any size: its `usage` object, found as the bytes pass.
//!
//! The record says where the tokens came from ([`UsageSource`](crate::sse::UsageSource)), the
//! latency, the time to the first byte of the body, whether the answer streamed, whether the client
//! went away before the end (then the tokens seen so far are recorded) and whether it failed (an
//! error from the inner service, a 5xx answer, a failing body, an `error` event): the
//! [`Outcome`](crate::outcome::Outcome) the breaker counts too. [`InMemoryUsage`] aggregates
//! records by key and model.
//!
//! Metrics, through the `metrics` facade (mount any recorder, e.g. a Prometheus exporter):
//! `cortex_gateway_requests_total{model,status}`, `cortex_gateway_request_duration_seconds{model}`,
//! `cortex_gateway_time_to_first_token_seconds{model}`, `cortex_gateway_tokens_total{model,kind}`,
//! `cortex_gateway_client_disconnects_total{model}`, `cortex_gateway_in_flight_requests{model}` and
//! `cortex_gateway_overhead_seconds` (time to the response headers, less the upstream's own time
//! and the queue wait). The breaker and the queue add `cortex_gateway_breaker_state{replica}`,
//! `cortex_gateway_queue_depth{replica}` and `cortex_gateway_queue_wait_seconds{replica}`.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use cortex_gateway::meter::{InMemoryUsage, MeterUsageLayer};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let usage = Arc::new(InMemoryUsage::new());
//! let service = ServiceBuilder::new()
//!     .layer(MeterUsageLayer::new(Arc::clone(&usage)))
//!     .service_fn(|_req: Request<()>| async {
//!         let body = r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
//!         let mut response = Response::new(Full::new(bytes::Bytes::from_static(body.as_bytes())));
//!         response.headers_mut().insert("content-type", "application/json".parse().unwrap());
//!         Ok::<_, std::convert::Infallible>(response)
//!     });
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! response.into_body().collect().await.unwrap();
//! let totals = usage.totals();
//! assert_eq!(totals[0].totals.total_tokens, 10);
//! # });
//! ```

mod body;
mod future;
mod layer;
#[cfg(feature = "postgres")]
pub mod postgres;
mod record;
mod service;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod store;

pub use self::body::ResponseBody;
pub use self::future::ResponseFuture;
pub use self::layer::MeterUsageLayer;
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresUsage;
pub use self::record::{InMemoryUsage, UsageEntry, UsageRecord, UsageSink, UsageTotals};
pub use self::service::MeterUsage;
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteUsage;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use self::store::{DEFAULT_USAGE_BUFFER, UsageQuery, UsageStoreError};

/// When the proxy sent a request and when the upstream's headers came back, in the response's
/// extensions, so metering can tell the gateway's own time from the upstream's.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTiming {
    /// The request left for the upstream.
    pub sent: tokio::time::Instant,
    /// The upstream's response headers arrived.
    pub headers: tokio::time::Instant,
}

/// A response status as a metric label: the common ones without allocating.
pub(crate) fn status_label(status: Option<u16>) -> metrics::SharedString {
    let text = match status {
        None => "none",
        Some(200) => "200",
        Some(400) => "400",
        Some(401) => "401",
        Some(403) => "403",
        Some(404) => "404",
        Some(413) => "413",
        Some(429) => "429",
        Some(500) => "500",
        Some(502) => "502",
        Some(503) => "503",
        Some(504) => "504",
        Some(other) => return metrics::SharedString::from(other.to_string()),
    };
    metrics::SharedString::const_str(text)
}
