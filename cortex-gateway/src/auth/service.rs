use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, header};
use tower_service::Service;

use super::{KeyStore, RequireApiKeyLayer, ResponseFuture};
use crate::error::{Refusal, RefusalOr};

/// Requires a known API key. See the [module docs](crate::auth).
#[derive(Debug)]
pub struct RequireApiKey<S, K: ?Sized> {
    pub(super) inner: S,
    pub(super) keys: Arc<K>,
    pub(super) enabled: bool,
}

// === impl RequireApiKey ===

impl<S, K: KeyStore> RequireApiKey<S, K> {
    /// Wraps `inner`, checking keys against `keys`.
    pub fn new(inner: S, keys: K) -> Self {
        Self {
            inner,
            keys: Arc::new(keys),
            enabled: true,
        }
    }

    /// The layer.
    pub fn layer(keys: K) -> RequireApiKeyLayer<K> {
        RequireApiKeyLayer::new(keys)
    }

    define_inner_service_accessors!();
}

impl<S: Clone, K: ?Sized> Clone for RequireApiKey<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            keys: Arc::clone(&self.keys),
            enabled: self.enabled,
        }
    }
}

/// The key a request presents: `Authorization: Bearer KEY`, else `X-Api-Key: KEY`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, key) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| key.trim())
            .filter(|k| !k.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for RequireApiKey<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    K: KeyStore + ?Sized,
{
    type Response = Response<RefusalOr<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let headers = req.headers_mut();
        if !self.enabled {
            headers.remove(header::AUTHORIZATION);
            headers.remove("x-api-key");
            return ResponseFuture::inner(self.inner.call(req));
        }
        let had_header =
            headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-key");
        let key = presented(headers).map(|k| self.keys.lookup(k));
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-api-key");
        let key = match key {
            Some(Some(key)) => key,
            Some(None) => return ResponseFuture::refused(Refusal::invalid_key()),
            None if had_header => return ResponseFuture::refused(Refusal::invalid_key()),
            None => return ResponseFuture::refused(Refusal::missing_key()),
        };
        if let Err(wait) = key.check_rate() {
            tracing::debug!(key = key.id(), ?wait, "rate limited");
            return ResponseFuture::refused(Refusal::rate_limited(wait));
        }
        req.extensions_mut().insert(key);
        ResponseFuture::inner(self.inner.call(req))
    }
}
