use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::future::Report;
use crate::error::RefusalOr;

pin_project! {
    /// The response body of [`CircuitBreaker`](super::CircuitBreaker): reports the outcome when it
    /// is dropped (from the response's [`Tap`](crate::outcome::Tap), else from how the body
    /// ended), or at its first byte for a half-open probe's stream.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        inner: RefusalOr<B>,
        report: Option<Report>,
    }
}

// === impl ResponseBody ===

impl<B> ResponseBody<B> {
    pub(super) fn new(inner: RefusalOr<B>, report: Option<Report>) -> Self {
        Self { inner, report }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(report) = this.report.as_mut() {
            match &frame {
                Some(Ok(f)) => {
                    if report.is_probe() && f.data_ref().is_some_and(|d| !d.is_empty()) {
                        // A probe's stream is judged by its first byte: the replica answers.
                        report.succeed();
                        this.report.take();
                    }
                }
                Some(Err(_)) => report.fail(),
                None => report.ended(),
            }
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
