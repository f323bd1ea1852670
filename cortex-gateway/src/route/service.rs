use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cortex_core::Registry;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::Full;
use tower_service::Service;

use super::{ResponseFuture, RouteLayer};
use crate::auth::ApiKey;
use crate::error::{Refusal, RefusalOr, Refused};

/// Routes a request by its `model`. See the [module docs](crate::route).
#[derive(Debug, Clone)]
pub struct Route<S> {
    pub(super) inner: S,
    pub(super) config: RouteLayer,
}

// === impl Route ===

impl<S> Route<S> {
    /// Wraps `inner`, routing through `registry`.
    pub fn new(inner: S, registry: Arc<dyn Registry>) -> Self {
        Self {
            inner,
            config: RouteLayer::new(registry),
        }
    }

    /// The layer.
    pub fn layer(registry: Arc<dyn Registry>) -> RouteLayer {
        RouteLayer::new(registry)
    }

    define_inner_service_accessors!();
}

/// `GET /v1/models`: the registry's served names the key may use.
pub(super) fn list_models<B>(
    registry: &dyn Registry,
    key: Option<&ApiKey>,
) -> Response<RefusalOr<B>> {
    let snapshot = registry.snapshot();
    let mut names: Vec<&str> = snapshot
        .models
        .keys()
        .map(|name| &**name)
        .filter(|name| key.is_none_or(|k| k.allows(name)))
        .collect();
    names.sort_unstable();
    let data: Vec<_> = names
        .iter()
        .map(|name| {
            let owned_by = snapshot
                .get(name)
                .and_then(|e| e.first())
                .map(|e| e.engine.to_string());
            serde_json::json!({"id": name, "object": "model", "created": 0, "owned_by": owned_by})
        })
        .collect();
    let body = serde_json::json!({"object": "list", "data": data}).to_string();
    let mut response = Response::new(RefusalOr::refusal(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response.extensions_mut().insert(Refused);
    response
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Route<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone,
    ReqBody: Body,
    ReqBody::Error: std::fmt::Display,
{
    type Response = Response<RefusalOr<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ReqBody, S, S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if req.method() == Method::GET && req.uri().path() == "/v1/models" {
            let key = req.extensions().get::<Arc<ApiKey>>().map(|k| &**k);
            return ResponseFuture::answered(list_models::<()>(&*self.config.registry, key));
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.config.body_limit as u64) {
            return ResponseFuture::refused(Refusal::too_large(self.config.body_limit));
        }
        // The clone is not ready; the ready one goes into the future (tower's rule).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        ResponseFuture::reading(parts, body, inner, self.config.clone())
    }
}
