//! Routing by the request's `model`: the body is read (up to a limit), scanned without being
//! re-serialized, and resolved through the [`Registry`](cortex_core::Registry).
//!
//! [`Route`] reads the request body up to [`RouteLayer::body_limit`] (32 MiB by default; a larger
//! body is refused with 413 as soon as its `Content-Length` or its bytes say so), finds `model`,
//! `stream` and `stream_options.include_usage` with [`crate::scan`], checks that the caller's
//! [`ApiKey`](crate::auth::ApiKey) (when auth runs outside) may use the model (403), resolves the
//! served name to its healthy endpoints (404 `model_not_found` when there are none, unless an
//! [`Unrouted`] hook knows better: a model that is stopped, say) and calls the
//! inner service with the original bytes in a [`Full`](http_body_util::Full) body and a [`Routed`]
//! extension. When a stream did not ask for usage and injection is on, the bytes get
//! `"stream_options":{"include_usage":true}` spliced in and [`Routed::usage_injected`] is set,
//! so metering can strip the extra chunk again.
//!
//! Only the OpenAI-compatible surface reaches an engine ([`Surface`]): `POST` to
//! `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses` and the engine's
//! rerank / score paths, plus what the operator allows per model. Any other method or path gets an
//! OpenAI-shaped 404 and is never sent upstream — checked before the body is read, and again once the
//! model (and so its engine) is known. `include_usage` is spliced only into chat and completion
//! streams ([`Operation::streams_chunks`]). Bodies waiting here and in the queues are bounded as a
//! whole by a [`BodyBudget`] (503 `server_overloaded` with `Retry-After` beyond it).
//!
//! `GET /v1/models` is answered from the registry's snapshot, listing only the models the key may
//! use, in the engines' shape (`{"object":"list","data":[{"id",..}]}`); `GET /v1/models/{id}` answers
//! one of them, or 404 `model_not_found` for a model that is not served or not allowed to the key.
//! Neither is forwarded.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use cortex_core::{Endpoint, EngineKind, InMemoryRegistry, InstanceId, ModelId, Registry};
//! use cortex_gateway::route::{RouteLayer, Routed};
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let registry = Arc::new(InMemoryRegistry::new());
//! registry.register(Endpoint::new(
//!     ModelId::new("gemma").unwrap(),
//!     "gemma-3",
//!     0,
//!     InstanceId::new("pid-1"),
//!     EngineKind::LLAMA_CPP,
//!     "http://127.0.0.1:39211".parse().unwrap(),
//! ));
//!
//! let service = ServiceBuilder::new()
//!     .layer(RouteLayer::new(registry))
//!     .service_fn(|req: Request<Full<bytes::Bytes>>| async move {
//!         let routed = req.extensions().get::<Routed>().unwrap();
//!         assert_eq!(&*routed.model, "gemma-3");
//!         assert_eq!(routed.endpoints.len(), 1);
//!         Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::new())))
//!     });
//!
//! let request = Request::post("/v1/chat/completions")
//!     .body(Full::new(bytes::Bytes::from_static(br#"{"model":"gemma-3","messages":[]}"#)))
//!     .unwrap();
//! assert_eq!(service.clone().oneshot(request).await.unwrap().status(), 200);
//!
//! let request = Request::post("/v1/chat/completions")
//!     .body(Full::new(bytes::Bytes::from_static(br#"{"model":"nope","messages":[]}"#)))
//!     .unwrap();
//! assert_eq!(service.oneshot(request).await.unwrap().status(), 404);
//! # });
//! ```

mod budget;
mod future;
mod layer;
mod names;
mod service;
mod surface;

use std::sync::Arc;

use cortex_core::Endpoints;

use crate::error::Refusal;

pub use self::budget::{BodyBudget, DEFAULT_BODY_BUDGET};
pub use self::future::ResponseFuture;
pub use self::layer::RouteLayer;
pub use self::names::Names;
pub use self::service::{Route, percent_decode};
pub use self::surface::{Operation, Surface};

/// Why a model the registry has no endpoints for is refused: asked by [`Route`] before it answers
/// 404 `model_not_found`. `None` keeps the 404 (the model is not known); a [`Refusal`] replaces it,
/// such as a 503 saying the model is stopped. Closures `Fn(&str) -> Option<Refusal>` implement it.
///
/// ```
/// use cortex_gateway::error::Refusal;
/// use cortex_gateway::route::RouteLayer;
/// use http::StatusCode;
/// # let registry = std::sync::Arc::new(cortex_core::InMemoryRegistry::new());
///
/// let layer = RouteLayer::new(registry).unrouted(|model: &str| {
///     (model == "gemma-3").then(|| {
///         Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "The model `gemma-3` is stopped.")
///             .code("model_stopped")
///     })
/// });
/// ```
pub trait Unrouted: Send + Sync + 'static {
    /// The refusal for a request naming `model`, which has no endpoints now.
    fn refusal(&self, model: &str) -> Option<Refusal>;
}

impl<F> Unrouted for F
where
    F: Fn(&str) -> Option<Refusal> + Send + Sync + 'static,
{
    fn refusal(&self, model: &str) -> Option<Refusal> {
        self(model)
    }
}

/// A model being loaded for a request: resolves once the model has endpoints, or to the refusal
/// every request waiting for it gets (an OpenAI-shaped 503 naming why the start failed).
pub type Loading = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Refusal>> + Send>>;

/// Starts models on demand. Asked by [`Route`] when a model has no endpoints, before
/// [`Unrouted`]: a model it loads makes the request wait (bounded by the model's start, and by
/// the client, whose hang-up drops only its own wait: the start goes on for the others) and is
/// then routed as usual. `GET /v1/models` lists what it can load beside what runs.
pub trait Loader: Send + Sync + 'static {
    /// `None` when `model` (a served name) is not loaded on demand; otherwise the wait for it,
    /// starting it unless it is starting already (so concurrent first requests start it once).
    fn load(&self, model: &str) -> Option<Loading>;

    /// The models it can load, with each one's state (`unloaded`, `loading`, `loaded`,
    /// `failed`), for `GET /v1/models`.
    fn catalog(&self) -> Vec<(String, &'static str)>;

    /// A request for `model` was routed (for idle tracking).
    fn touch(&self, model: &str);
}

/// The default limit on a request body: 32 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 32 << 20;

/// Where a request goes, found by [`Route`]; in the request's extensions.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Routed {
    /// The served name asked for.
    pub model: Arc<str>,
    /// Its healthy endpoints (never empty).
    pub endpoints: Endpoints,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether the client asked for `stream_options.include_usage`.
    pub client_wants_usage: bool,
    /// Whether the gateway spliced `include_usage` in (so the usage chunk is not the client's).
    pub usage_injected: bool,
    /// What the request's method and path are.
    pub operation: Operation,
}
