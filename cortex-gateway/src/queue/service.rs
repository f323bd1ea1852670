use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower_service::Service;

use super::{QueueLayer, ResponseFuture};
use crate::balance::Picked;
use crate::error::Refusal;

/// A per-replica concurrency limit with a bounded FIFO wait. See the
/// [module docs](crate::queue).
#[derive(Debug, Clone)]
pub struct Queue<S> {
    pub(super) inner: S,
    pub(super) config: QueueLayer,
}

// === impl Queue ===

impl<S> Queue<S> {
    /// Wraps `inner` with `slots` concurrent requests per replica.
    pub fn new(inner: S, slots: usize) -> Self {
        Self {
            inner,
            config: QueueLayer::new(slots),
        }
    }

    /// The layer.
    pub fn layer(slots: usize) -> QueueLayer {
        QueueLayer::new(slots)
    }

    define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Queue<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<super::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let picked = req.extensions().get::<Picked>().map(|p| &p.0);
        let config = &self.config;
        let slot = config
            .queues
            .slot(picked, || match (&config.per_replica, picked) {
                (Some(f), Some(endpoint)) => f(endpoint),
                _ => config.slots,
            });
        if let Ok(permit) = std::sync::Arc::clone(&slot.permits).try_acquire_owned() {
            return ResponseFuture::calling(self.inner.call(req), permit, Duration::ZERO);
        }
        if slot.waiting.load(Ordering::Relaxed) >= self.config.max_waiting {
            return ResponseFuture::refused(Refusal::unavailable(
                format!(
                    "too many requests are waiting for replica `{}`; retry later",
                    slot.name
                ),
                "queue_full",
                Duration::from_secs(1),
            ));
        }
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::waiting(slot, inner, req, self.config.timeout)
    }
}
