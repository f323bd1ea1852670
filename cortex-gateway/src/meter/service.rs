use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower_service::Service;

use super::future::Recorder;
use super::{MeterUsageLayer, ResponseBody, ResponseFuture, UsageSink};
use crate::auth::ApiKey;
use crate::request_id;
use crate::route::Routed;

/// Records usage per request. See the [module docs](crate::meter).
#[derive(Clone)]
pub struct MeterUsage<S> {
    pub(super) inner: S,
    pub(super) sink: Arc<dyn UsageSink>,
}

impl<S: fmt::Debug> fmt::Debug for MeterUsage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeterUsage")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

// === impl MeterUsage ===

impl<S> MeterUsage<S> {
    /// Wraps `inner`, delivering records to `sink`.
    pub fn new(inner: S, sink: impl UsageSink) -> Self {
        Self {
            inner,
            sink: Arc::new(sink),
        }
    }

    /// The layer.
    pub fn layer(sink: impl UsageSink) -> MeterUsageLayer {
        MeterUsageLayer::new(sink)
    }

    define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MeterUsage<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let request_id = request_id::ensure(req.headers_mut());
        let key_id = req
            .extensions()
            .get::<Arc<ApiKey>>()
            .map(|k| Arc::clone(k.id_arc()));
        let routed = req.extensions().get::<Routed>();
        let recorder = Recorder::new(
            Arc::clone(&self.sink),
            start,
            request_id,
            key_id,
            routed.map(|r| Arc::clone(&r.model)),
            routed.is_some_and(|r| r.usage_injected),
        );
        ResponseFuture::new(self.inner.call(req), recorder)
    }
}
