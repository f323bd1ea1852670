use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cortex_core::{Endpoint, EngineKind};
use http::uri::{Parts as UriParts, PathAndQuery};
use http::{HeaderValue, Request, Uri, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::headers::strip_hop_by_hop;
use super::{ResponseFuture, future::Ctx};
use crate::balance::Picked;
use crate::error::Refusal;
use crate::request_id;

type KeyFn = dyn Fn(&Endpoint) -> Option<HeaderValue> + Send + Sync;

/// Forwards requests to their replica. See the [module docs](crate::proxy).
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Full<Bytes>>,
    fixed: Option<(Uri, EngineKind)>,
    upstream_key: Option<Arc<KeyFn>>,
    pub(super) first_byte_timeout: Duration,
    pub(super) idle_timeout: Duration,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("fixed", &self.fixed)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Proxy ===

impl Proxy {
    /// A proxy to the replica each request's [`Picked`] names.
    pub fn new() -> Self {
        let mut proxy = Self {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            fixed: None,
            upstream_key: None,
            first_byte_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(4),
        };
        proxy.rebuild();
        proxy
    }

    /// A proxy to one upstream (an OpenAI-compatible base URL such as `http://127.0.0.1:8080`),
    /// for requests that name no replica.
    pub fn to(base_url: Uri) -> Self {
        Self::new().fixed(base_url, EngineKind::LLAMA_CPP)
    }

    /// Sends requests without a [`Picked`] replica to `base_url`, an `engine` upstream.
    pub fn fixed(mut self, base_url: Uri, engine: EngineKind) -> Self {
        self.fixed = Some((base_url, engine));
        self
    }

    /// The key sent upstream (`Authorization: Bearer ..`) for each replica, if any.
    pub fn upstream_key(
        mut self,
        key: impl Fn(&Endpoint) -> Option<HeaderValue> + Send + Sync + 'static,
    ) -> Self {
        self.upstream_key = Some(Arc::new(key));
        self
    }

    /// The connect timeout (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self.rebuild();
        self
    }

    /// How long to wait for the response headers (default 300 s).
    pub fn first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.first_byte_timeout = timeout;
        self
    }

    /// How long a response body may stay silent between frames (default 120 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept (default 4 s); keep it below the engines'
    /// keep-alive.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self.rebuild();
        self
    }

    fn rebuild(&mut self) {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.connect_timeout));
        self.client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(connector);
    }
}

/// The upstream URI of a request: the replica's scheme and authority, the request's path and
/// query. Only plain `http` replicas with a host can be reached (the client has no TLS).
fn upstream_uri(base: &Uri, original: &Uri) -> Result<Uri, String> {
    match base.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(format!("the scheme `{other}` is not supported (only http)")),
        None => return Err(String::from("it has no scheme (http://)")),
    }
    if base.authority().is_none() {
        return Err(String::from("it names no host"));
    }
    let mut parts = UriParts::default();
    parts.scheme = base.scheme().cloned();
    parts.authority = base.authority().cloned();
    let path = original
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

impl Service<Request<Full<Bytes>>> for Proxy {
    type Response = http::Response<super::ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Full<Bytes>>) -> Self::Future {
        let picked = req.extensions_mut().remove::<Picked>();
        let routed = req.extensions().get::<crate::route::Routed>();
        let cut_usage = routed.is_some_and(|r| r.usage_injected);
        let stream = routed.is_some_and(|r| r.stream);
        let request_id = request_id::ensure(req.headers_mut());
        let (base, engine) = match (&picked, &self.fixed) {
            (Some(p), _) => (p.0.base_url.clone(), p.0.engine.clone()),
            (None, Some((base, engine))) => (base.clone(), engine.clone()),
            (None, None) => {
                return ResponseFuture::failed(
                    Refusal::new(
                        http::StatusCode::BAD_GATEWAY,
                        "no replica was picked for this request",
                    )
                    .code("no_upstream"),
                    Ctx::new(None, engine_default(), request_id, self, cut_usage),
                );
            }
        };
        let uri = match upstream_uri(&base, req.uri()) {
            Ok(uri) => uri,
            Err(e) => {
                return ResponseFuture::failed(
                    Refusal::new(
                        http::StatusCode::BAD_GATEWAY,
                        format!("the replica's address {base} cannot be used: {e}"),
                    )
                    .code("no_upstream"),
                    Ctx::new(picked, engine, request_id, self, cut_usage),
                );
            }
        };
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-api-key");
        headers.remove(header::HOST);
        headers.remove(header::ACCEPT_ENCODING);
        headers.remove(header::CONTENT_LENGTH);
        if stream && engine == EngineKind::LLAMA_CPP {
            // llama-server (b11434's cpp-httplib) closes the connection after a streamed
            // answer despite its `Keep-Alive` header; a pooled connection would fail the next
            // request sent on it ("connection closed before message completed"). Saying so
            // keeps it out of the pool.
            headers.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        if let (Some(key), Some(p)) = (&self.upstream_key, &picked) {
            if let Some(value) = key(&p.0) {
                headers.insert(header::AUTHORIZATION, value);
            }
        }
        let ctx = Ctx::new(picked, engine, request_id, self, cut_usage);
        ResponseFuture::sending(self.client.request(req), ctx)
    }
}

fn engine_default() -> EngineKind {
    EngineKind::LLAMA_CPP
}
