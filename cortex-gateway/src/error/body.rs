use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A response body that is either the inner service's or one the gateway wrote (a refusal's
    /// JSON, a model list).
    ///
    /// See the [module docs](crate::error).
    #[derive(Debug)]
    pub struct RefusalOr<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner {
            #[pin]
            body: B,
        },
        Own {
            bytes: Option<Bytes>,
        },
    }
}

// === impl RefusalOr ===

impl<B> RefusalOr<B> {
    /// Wraps the inner service's body.
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A body of `bytes`.
    pub fn refusal(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Own { bytes: Some(bytes) },
        }
    }

    /// The bytes of a body the gateway wrote (not yet polled); `None` for the inner service's.
    pub fn own_bytes(self) -> Option<Bytes> {
        match self.kind {
            Kind::Own { bytes } => bytes,
            Kind::Inner { .. } => None,
        }
    }
}

impl<B> Body for RefusalOr<B>
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
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Own { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Own { bytes } => bytes.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Own { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
