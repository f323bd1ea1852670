use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::outcome::TapBody;

/// The error of a body that failed after its headers.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that went idle for longer than the proxy's idle timeout.
#[derive(Debug)]
pub struct IdleTimeout(Duration);

impl fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nothing came for {} s", self.0.as_secs())
    }
}

impl std::error::Error for IdleTimeout {}

pin_project! {
    /// The response body of [`Proxy`](super::Proxy): the engine's body, frame by frame, or a body
    /// the proxy wrote (a translated error), read once by a [`TapBody`] whose
    /// [`Tap`](crate::outcome::Tap) is in the response's extensions.
    pub struct ResponseBody {
        #[pin]
        inner: TapBody<Source>,
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .finish()
    }
}

impl ResponseBody {
    pub(super) fn new(inner: TapBody<Source>) -> Self {
        Self { inner }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// Where the bytes come from.
    #[project = SourceProj]
    pub(super) enum Source {
        /// The engine's body, failing when it goes idle.
        Upstream {
            #[pin]
            body: Incoming,
            #[pin]
            idle: Sleep,
            idle_timeout: Duration,
        },
        /// A body the proxy wrote.
        Full {
            bytes: Option<Bytes>,
        },
    }
}

// === impl Source ===

impl Source {
    pub(super) fn upstream(body: Incoming, idle_timeout: Duration) -> Self {
        Self::Upstream {
            body,
            idle: tokio::time::sleep(idle_timeout),
            idle_timeout,
        }
    }

    pub(super) fn full(bytes: Bytes) -> Self {
        Self::Full { bytes: Some(bytes) }
    }
}

impl Body for Source {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            SourceProj::Full { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            SourceProj::Upstream {
                body,
                mut idle,
                idle_timeout,
            } => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    idle.as_mut().reset(Instant::now() + *idle_timeout);
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Pending => {
                    std::task::ready!(idle.poll(cx));
                    Poll::Ready(Some(Err(IdleTimeout(*idle_timeout).into())))
                }
            },
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream { body, .. } => body.is_end_stream(),
            Self::Full { bytes } => bytes.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream { body, .. } => body.size_hint(),
            Self::Full { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
