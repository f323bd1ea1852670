use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::{Refusal, RefusalOr};

pin_project! {
    /// The future of a layer that either refuses at once or forwards: the inner future's
    /// response with its body wrapped in [`RefusalOr`], or the refusal.
    #[derive(Debug)]
    pub struct RefuseOr<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Inner {
            #[pin]
            future: F,
        },
        Refused {
            refusal: Option<Refusal>,
        },
    }
}

// === impl RefuseOr ===

impl<F> RefuseOr<F> {
    /// Forwards to `future`.
    pub fn inner(future: F) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    /// Answers `refusal`.
    pub fn refused(refusal: Refusal) -> Self {
        Self {
            state: State::Refused {
                refusal: Some(refusal),
            },
        }
    }
}

impl<F, B, E> Future for RefuseOr<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<RefusalOr<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future
                .poll(cx)
                .map(|r| r.map(|response| response.map(RefusalOr::inner))),
            StateProj::Refused { refusal } => Poll::Ready(Ok(refusal
                .take()
                .expect("RefuseOr polled after completion")
                .into_response())),
        }
    }
}
