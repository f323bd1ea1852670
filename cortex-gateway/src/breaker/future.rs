use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::ResponseBody;
use super::state::{Circuit, Class, Policy};
use crate::error::{Refusal, RefusalOr, RefuseOr, Refused};
use crate::outcome::{Outcome, Tap};

/// Reports one request's outcome to its circuit, exactly once, on drop: the verdict set, else the
/// [`Tap`]'s outcome, else nothing learned.
#[derive(Debug)]
pub(crate) struct Report {
    circuit: Arc<Circuit>,
    probe: bool,
    policy: Policy,
    class: Option<Class>,
    tap: Option<Tap>,
    /// The body ended cleanly (read when there is no tap).
    ended: bool,
}

// === impl Report ===

impl Report {
    pub(super) fn new(circuit: Arc<Circuit>, probe: bool, policy: Policy) -> Self {
        Self {
            circuit,
            probe,
            policy,
            class: None,
            tap: None,
            ended: false,
        }
    }

    pub(super) fn is_probe(&self) -> bool {
        self.probe
    }

    /// The body ended cleanly.
    pub(super) fn ended(&mut self) {
        self.ended = true;
    }

    /// Marks the request failed (the first verdict stands).
    pub(super) fn fail(&mut self) {
        self.class.get_or_insert(Class::Failure);
    }

    /// Marks the request succeeded unless it already failed.
    pub(super) fn succeed(&mut self) {
        self.class.get_or_insert(Class::Success);
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        let from_tap = || {
            let outcome = self.tap.as_ref()?.observed().outcome?;
            Some(match outcome {
                // A 4xx answer: the replica works.
                Outcome::Success | Outcome::ClientError => Class::Success,
                Outcome::UpstreamFailure => Class::Failure,
                _ => Class::Neutral,
            })
        };
        let class = self
            .class
            .or_else(from_tap)
            .or(self.ended.then_some(Class::Success))
            .unwrap_or(Class::Neutral);
        self.circuit
            .report(self.probe, class, &self.policy, Instant::now());
    }
}

pin_project! {
    /// The future of [`CircuitBreaker`](super::CircuitBreaker).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        future: RefuseOr<F>,
        report: Option<Report>,
    }
}

// === impl ResponseFuture ===

impl<F> ResponseFuture<F> {
    pub(super) fn inner(future: F, report: Report) -> Self {
        Self {
            future: RefuseOr::inner(future),
            report: Some(report),
        }
    }

    pub(super) fn refused(refusal: Refusal) -> Self {
        Self {
            future: RefuseOr::refused(refusal),
            report: None,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        let mut report = this.report.take();
        Poll::Ready(match result {
            Ok(response) => {
                if response.extensions().get::<Refused>().is_some() {
                    // Another layer refused: the replica was not asked.
                    if let Some(mut r) = report.take() {
                        r.class = Some(Class::Neutral);
                    }
                } else if let Some(r) = report.as_mut() {
                    r.tap = response.extensions().get::<Tap>().cloned();
                    if response.status().is_server_error() {
                        r.fail();
                    }
                    // A probe is judged by its head (a stream by its first byte, in the body), so
                    // one long answer does not keep the circuit half-open for minutes.
                    if r.probe && !crate::sse::is_event_stream(response.headers()) {
                        r.succeed();
                        report.take();
                    }
                }
                Ok(response.map(|body: RefusalOr<B>| ResponseBody::new(body, report)))
            }
            Err(e) => {
                if let Some(r) = report.as_mut() {
                    r.fail();
                }
                Err(e)
            }
        })
    }
}
