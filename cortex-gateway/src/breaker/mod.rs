//! A circuit breaker per replica.
//!
//! [`CircuitBreaker`] keeps one circuit per replica (the [`Picked`](crate::balance::Picked)
//! endpoint's instance; one circuit for the whole service when nothing was picked). A circuit
//! opens after [`CircuitBreakerLayer::failures`] consecutive failures (5 by default) and answers
//! every request at once with 503 `replica_unavailable` and a `Retry-After` — it never parks
//! `poll_ready`, which axum's routers could not honour. After the cooldown (30 s by default, ±20%
//! jitter so circuits opened together do not probe together) one probe request goes through:
//! success closes the circuit, failure opens it again with twice the cooldown (up to
//! [`CircuitBreakerLayer::max_cooldown`]). The probe is judged by its response head, a stream's by
//! its first byte: one long answer does not keep the replica refusing others for minutes.
//!
//! Other requests' outcomes are taken when the response body is done, from the one
//! classification the stack makes ([`outcome`](crate::outcome)), the same the meter records:
//! failures are errors from the inner service, 5xx answers, bodies that fail or go idle, and
//! `error` events inside a stream; 4xx answers are the caller's fault (or the replica pushing back)
//! and count as successes; a body the client dropped before its end counts as nothing, and a
//! refusal by another gateway layer ([`Refused`](crate::error::Refused)) is not counted. Without a
//! tap (a service other than the proxy inside) a body that ends counts as a success and one that
//! fails as a failure.
//! [`Breakers`] is the table of circuits, shared with [`balance`](crate::balance) so that it skips
//! replicas whose circuit is open.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use cortex_gateway::breaker::CircuitBreakerLayer;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let layer = CircuitBreakerLayer::try_new(2, Duration::from_secs(30), Duration::from_secs(300))?;
//! let service = ServiceBuilder::new().layer(layer).service_fn(|_req: Request<()>| async {
//!     let mut response = Response::new(Full::new(bytes::Bytes::from_static(b"{}")));
//!     *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
//!     Ok::<_, std::convert::Infallible>(response)
//! });
//! for _ in 0..2 {
//!     let response = service.clone().oneshot(Request::new(())).await.unwrap();
//!     assert_eq!(response.status(), 500);
//!     response.into_body().collect().await.unwrap(); // the outcome is taken at the body's end
//! }
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.status(), 503);
//! assert!(response.headers().contains_key("retry-after"));
//! # Ok::<(), cortex_gateway::breaker::InvalidBreaker>(())
//! # }).unwrap();
//! ```

mod body;
mod future;
mod layer;
mod service;
mod state;

pub use self::body::ResponseBody;
pub use self::future::ResponseFuture;
pub use self::layer::{CircuitBreakerLayer, InvalidBreaker};
pub use self::service::CircuitBreaker;
pub(crate) use self::state::Circuit;
pub use self::state::{Breakers, CircuitState};
