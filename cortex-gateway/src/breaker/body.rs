use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::future::Report;
use crate::error::RefusalOr;
use crate::sse::{SseParser, is_error_event};

pin_project! {
    /// The response body of [`CircuitBreaker`](super::CircuitBreaker): reports the outcome when it
    /// ends, fails or is dropped.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        inner: RefusalOr<B>,
        report: Option<Report>,
        sse: Option<Box<SseParser>>,
    }
}

// === impl ResponseBody ===

impl<B> ResponseBody<B> {
    pub(super) fn new(inner: RefusalOr<B>, report: Option<Report>, sse: bool) -> Self {
        let sse = (sse && report.is_some()).then(Box::default);
        Self { inner, report, sse }
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
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(parser), Some(data)) = (this.sse.as_mut(), frame.data_ref()) {
                    let mut error = false;
                    parser.feed(data, |event| error |= is_error_event(event));
                    if error {
                        if let Some(report) = this.report.as_mut() {
                            report.fail();
                        }
                    }
                }
                if this.inner.is_end_stream() {
                    if let Some(mut report) = this.report.take() {
                        report.succeed();
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(mut report) = this.report.take() {
                    report.fail();
                }
            }
            None => {
                if let Some(mut report) = this.report.take() {
                    report.succeed();
                }
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
