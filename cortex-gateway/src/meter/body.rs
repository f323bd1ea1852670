use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::future::Recorder;
use crate::outcome::TapBody;

pin_project! {
    /// The response body of [`MeterUsage`](super::MeterUsage): records when it is dropped, from the
    /// [`Tap`](crate::outcome::Tap) that read it (the proxy's, or its own over another service's
    /// body).
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        // Declared first, dropped first: the tap has settled the outcome when the record is made.
        #[pin]
        inner: TapBody<B>,
        recorder: Option<Recorder>,
    }
}

// === impl ResponseBody ===

impl<B> ResponseBody<B> {
    pub(super) fn new(inner: TapBody<B>, recorder: Recorder) -> Self {
        Self {
            inner,
            recorder: Some(recorder),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            // Recorded at the end rather than at the drop, which may come much later.
            this.recorder.take();
        }
        Poll::Ready(frame)
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
