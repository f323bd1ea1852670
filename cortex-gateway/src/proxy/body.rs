use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::error::Refusal;

/// The error of a non-stream body that failed after its headers.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that went idle for longer than the proxy's idle timeout.
#[derive(Debug)]
pub struct IdleTimeout(());

impl fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the upstream body went idle")
    }
}

impl std::error::Error for IdleTimeout {}

pin_project! {
    /// The response body of [`Proxy`](super::Proxy): the engine's body, frame by frame, or a body
    /// the proxy wrote (a translated error).
    pub struct ResponseBody {
        #[pin]
        inner: Inner,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner {
        /// The engine's body.
        Upstream {
            #[pin]
            body: Incoming,
            #[pin]
            idle: Sleep,
            idle_timeout: Duration,
            sse: bool,
            done: bool,
            replica: String,
        },
        /// A body the proxy wrote.
        Full {
            bytes: Option<Bytes>,
        },
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Upstream { sse, done, .. } => f
                .debug_struct("Upstream")
                .field("sse", sse)
                .field("done", done)
                .finish_non_exhaustive(),
            Inner::Full { bytes } => f.debug_struct("Full").field("bytes", bytes).finish(),
        }
    }
}

// === impl ResponseBody ===

impl ResponseBody {
    pub(super) fn upstream(
        body: Incoming,
        sse: bool,
        idle_timeout: Duration,
        replica: String,
    ) -> Self {
        Self {
            inner: Inner::Upstream {
                body,
                idle: tokio::time::sleep(idle_timeout),
                idle_timeout,
                sse,
                done: false,
                replica,
            },
        }
    }

    pub(super) fn full(bytes: Bytes) -> Self {
        Self {
            inner: Inner::Full { bytes: Some(bytes) },
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().inner.project() {
            InnerProj::Full { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            InnerProj::Upstream {
                body,
                mut idle,
                idle_timeout,
                sse,
                done,
                replica,
            } => {
                if *done {
                    return Poll::Ready(None);
                }
                let message = match body.poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        idle.as_mut().reset(Instant::now() + *idle_timeout);
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Ready(Some(Err(e))) => {
                        if !*sse {
                            return Poll::Ready(Some(Err(e.into())));
                        }
                        format!(
                            "the connection to {replica} broke in the middle of the stream: {e}"
                        )
                    }
                    Poll::Pending => {
                        std::task::ready!(idle.poll(cx));
                        if !*sse {
                            return Poll::Ready(Some(Err(IdleTimeout(()).into())));
                        }
                        format!(
                            "{replica} sent nothing for {} s in the middle of the stream",
                            idle_timeout.as_secs()
                        )
                    }
                };
                tracing::warn!(%replica, %message, "stream ended by an upstream failure");
                *done = true;
                let event = Refusal::new(StatusCode::BAD_GATEWAY, message)
                    .code("upstream_stream_failed")
                    .to_event();
                Poll::Ready(Some(Ok(Frame::data(event))))
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream { body, done, .. } => *done || body.is_end_stream(),
            Inner::Full { bytes } => bytes.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream { body, .. } => body.size_hint(),
            Inner::Full { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
