use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::{AcquireError, OwnedSemaphorePermit};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::QueueWait;
use super::layer::Slot;
use crate::error::{Refusal, RefusalOr};
use crate::guard::Guarded;

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A request waiting in a replica's queue; leaving (by any path) takes it off the depth.
struct Waiter {
    slot: Arc<Slot>,
    since: Instant,
}

impl Waiter {
    fn new(slot: Arc<Slot>) -> Self {
        let depth = slot.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        #[allow(clippy::cast_precision_loss, reason = "a gauge")]
        metrics::gauge!("cortex_gateway_queue_depth", "model" => Arc::clone(&slot.model), "replica" => Arc::clone(&slot.replica))
            .set(depth as f64);
        Self {
            slot,
            since: Instant::now(),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let depth = self.slot.waiting.fetch_sub(1, Ordering::Relaxed) - 1;
        #[allow(clippy::cast_precision_loss, reason = "a gauge")]
        metrics::gauge!("cortex_gateway_queue_depth", "model" => Arc::clone(&self.slot.model), "replica" => Arc::clone(&self.slot.replica))
            .set(depth as f64);
    }
}

pin_project! {
    /// The future of [`Queue`](super::Queue).
    pub struct ResponseFuture<S, B, F> {
        #[pin]
        state: State<S, B, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, F> {
        Waiting {
            acquire: Acquire,
            deadline: Pin<Box<Sleep>>,
            waiter: Option<Waiter>,
            inner: Option<S>,
            req: Option<Request<B>>,
        },
        Calling {
            #[pin]
            future: F,
            permit: Option<OwnedSemaphorePermit>,
            waited: Duration,
        },
        Refused {
            refusal: Option<Refusal>,
        },
    }
}

impl<S, B, F> fmt::Debug for ResponseFuture<S, B, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

// === impl ResponseFuture ===

impl<S, B, F> ResponseFuture<S, B, F> {
    pub(super) fn calling(future: F, permit: OwnedSemaphorePermit, waited: Duration) -> Self {
        Self {
            state: State::Calling {
                future,
                permit: Some(permit),
                waited,
            },
        }
    }

    pub(super) fn refused(refusal: Refusal) -> Self {
        Self {
            state: State::Refused {
                refusal: Some(refusal),
            },
        }
    }

    pub(super) fn waiting(slot: Arc<Slot>, inner: S, req: Request<B>, timeout: Duration) -> Self {
        let acquire = Box::pin(Arc::clone(&slot.permits).acquire_owned());
        Self {
            state: State::Waiting {
                acquire,
                deadline: Box::pin(tokio::time::sleep(timeout)),
                waiter: Some(Waiter::new(slot)),
                inner: Some(inner),
                req: Some(req),
            },
        }
    }
}

impl<S, B, F, ResBody, E> Future for ResponseFuture<S, B, F>
where
    S: Service<Request<B>, Response = Response<ResBody>, Error = E, Future = F>,
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<super::ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting {
                    acquire,
                    deadline,
                    waiter,
                    inner,
                    req,
                } => {
                    let next = match acquire.as_mut().poll(cx) {
                        Poll::Ready(Ok(permit)) => {
                            let waiter = waiter.take().expect("polled after completion");
                            let wait = waiter.since.elapsed();
                            metrics::histogram!("cortex_gateway_queue_wait_seconds", "model" => Arc::clone(&waiter.slot.model), "replica" => Arc::clone(&waiter.slot.replica))
                                .record(wait.as_secs_f64());
                            drop(waiter);
                            let mut inner = inner.take().expect("polled after completion");
                            let req = req.take().expect("polled after completion");
                            State::Calling {
                                future: inner.call(req),
                                permit: Some(permit),
                                waited: wait,
                            }
                        }
                        Poll::Ready(Err(_)) | Poll::Pending => {
                            ready!(deadline.as_mut().poll(cx));
                            let waiter = waiter.take().expect("polled after completion");
                            let wait = waiter.since.elapsed();
                            State::Refused {
                                refusal: Some(Refusal::unavailable(
                                    format!(
                                        "replica `{}` stayed busy for {} s; retry later",
                                        waiter.slot.name,
                                        wait.as_secs()
                                    ),
                                    "queue_timeout",
                                    Duration::from_secs(1),
                                )),
                            }
                        }
                    };
                    this.state.set(next);
                }
                StateProj::Calling {
                    future,
                    permit,
                    waited,
                } => {
                    let result = ready!(future.poll(cx));
                    let permit = permit.take();
                    let waited = *waited;
                    return Poll::Ready(result.map(|mut response| {
                        response.extensions_mut().insert(QueueWait(waited));
                        response.map(|body| Guarded::new(RefusalOr::inner(body), permit))
                    }));
                }
                StateProj::Refused { refusal } => {
                    let refusal = refusal.take().expect("polled after completion");
                    return Poll::Ready(Ok(refusal
                        .into_response()
                        .map(|body| Guarded::new(body, None))));
                }
            }
        }
    }
}
