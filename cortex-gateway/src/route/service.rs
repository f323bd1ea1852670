use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cortex_core::Registry;
use http::{Method, Request, Response, header};
use http_body::Body;
use http_body_util::Full;
use tower_service::Service;

use super::{Loader, Names, ResponseFuture, RouteLayer};
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

/// One model object, as the engines and `OpenAI` list it; an alias says which model it names
/// (`alias_of`), a model with fallbacks lists those the key may use (`fallbacks`).
fn model_object(
    snapshot: &cortex_core::RegistrySnapshot,
    names: &Names,
    key: Option<&ApiKey>,
    name: &str,
) -> serde_json::Value {
    let target = names.target(name);
    let served = target.unwrap_or(name);
    let owned_by = snapshot
        .get(served)
        .and_then(|e| e.first())
        .map(|e| e.engine.to_string());
    let mut object =
        serde_json::json!({"id": name, "object": "model", "created": 0, "owned_by": owned_by});
    if let Some(target) = target {
        object["alias_of"] = target.into();
    }
    let fallbacks: Vec<&str> = names
        .fallbacks(served)
        .iter()
        .map(String::as_str)
        .filter(|f| key.is_none_or(|k| k.allows(f)))
        .collect();
    if !fallbacks.is_empty() {
        object["fallbacks"] = fallbacks.into();
    }
    object
}

/// A JSON answer written by the gateway, marked [`Refused`] (no replica was asked).
fn answer<B>(body: &serde_json::Value) -> Response<RefusalOr<B>> {
    let mut response = Response::new(RefusalOr::refusal(Bytes::from(body.to_string())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response.extensions_mut().insert(Refused);
    response
}

/// Whether `name` (a served name or an alias) is served now and `key` may use it.
fn listed(
    snapshot: &cortex_core::RegistrySnapshot,
    names: &Names,
    key: Option<&ApiKey>,
    name: &str,
) -> bool {
    let target = names.target(name).unwrap_or(name);
    snapshot.get(target).is_some_and(|e| !e.is_empty())
        && key.is_none_or(|k| k.allows(name) || k.allows(target))
}

/// `GET /v1/models`: the registry's served names and their aliases the key may use.
pub(super) fn list_models<B>(
    registry: &dyn Registry,
    names: &Names,
    loader: Option<&dyn Loader>,
    key: Option<&ApiKey>,
) -> Response<RefusalOr<B>> {
    let snapshot = registry.snapshot();
    let mut all: Vec<&str> = snapshot
        .models
        .keys()
        .map(|name| &**name)
        .chain(names.aliases().map(|(alias, _)| alias))
        .filter(|name| listed(&snapshot, names, key, name))
        .collect();
    all.sort_unstable();
    all.dedup();
    let mut data: Vec<serde_json::Value> = all
        .iter()
        .map(|name| model_object(&snapshot, names, key, name))
        .collect();
    // Models loaded on demand: listed whatever their state, with it.
    for (name, state) in loader.map(Loader::catalog).unwrap_or_default() {
        if key.is_some_and(|k| !k.allows(&name)) {
            continue;
        }
        match data.iter_mut().find(|m| m["id"] == name.as_str()) {
            Some(object) => object["state"] = state.into(),
            None => data.push(serde_json::json!({
                "id": name, "object": "model", "created": 0, "owned_by": null, "state": state,
            })),
        }
    }
    data.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    answer(&serde_json::json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{id}`: one served model (or alias) the key may use, else 404
/// `model_not_found` (a model the key may not use is not told apart from one that does not
/// exist, as `OpenAI` answers).
pub(super) fn get_model<B>(
    registry: &dyn Registry,
    names: &Names,
    key: Option<&ApiKey>,
    raw: &str,
) -> Response<RefusalOr<B>> {
    let name = percent_decode(raw);
    let snapshot = registry.snapshot();
    if !listed(&snapshot, names, key, &name) {
        return Refusal::model_not_found(&name).into_response();
    }
    answer(&model_object(&snapshot, names, key, &name))
}

/// `%XX` escapes decoded (served names may hold `/`, which clients escape in a path or a query);
/// a malformed escape is kept as it is.
///
/// ```
/// assert_eq!(cortex_gateway::route::percent_decode("org%2Fmodel"), "org/model");
/// ```
pub fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
        let (method, path) = (req.method(), req.uri().path());
        if method == Method::GET && path == "/v1/models" {
            let key = req.extensions().get::<Arc<ApiKey>>().map(|k| &**k);
            return ResponseFuture::answered(list_models::<()>(
                &*self.config.registry,
                &self.config.names,
                self.config.loader.as_deref(),
                key,
            ));
        }
        if let (true, Some(id)) = (method == Method::GET, path.strip_prefix("/v1/models/")) {
            let key = req.extensions().get::<Arc<ApiKey>>().map(|k| &**k);
            return ResponseFuture::answered(get_model::<()>(
                &*self.config.registry,
                &self.config.names,
                key,
                id,
            ));
        }
        if !self.config.surface.is_known(method, path) {
            return ResponseFuture::refused(Refusal::unknown_url(method, path));
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.config.body_limit as u64) {
            return ResponseFuture::refused(Refusal::too_large(self.config.body_limit));
        }
        // Within the body limit, so it fits a usize.
        let declared = declared.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let Some(reserved) = self.config.budget.reserve(declared) else {
            return ResponseFuture::refused(Refusal::body_budget(&self.config.budget));
        };
        // The clone is not ready; the ready one goes into the future (tower's rule).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        ResponseFuture::reading(parts, body, inner, self.config.clone(), reserved, declared)
    }
}
