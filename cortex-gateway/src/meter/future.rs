use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Response, header};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::body::ResponseBody;
use super::{UpstreamTiming, UsageRecord, UsageSink};
use crate::balance::Picked;
use crate::outcome::{Outcome, Tap, TapBody};
use crate::queue::QueueWait;
use crate::request_id::X_REQUEST_ID;
use crate::sse::UsageSource;

/// Builds and delivers one request's record, exactly once: when dropped (at the body's end, on its
/// failure, or when the client goes away).
pub(crate) struct Recorder {
    sink: Arc<dyn UsageSink>,
    start: Instant,
    request_id: HeaderValue,
    key_id: Option<Arc<str>>,
    model: Option<Arc<str>>,
    pub(super) strip_usage: bool,
    picked: Option<Picked>,
    status: Option<u16>,
    tap: Option<Tap>,
    failed: bool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("request_id", &self.request_id)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

// === impl Recorder ===

impl Recorder {
    pub(super) fn new(
        sink: Arc<dyn UsageSink>,
        start: Instant,
        request_id: HeaderValue,
        key_id: Option<Arc<str>>,
        model: Option<Arc<str>>,
        strip_usage: bool,
    ) -> Self {
        if let Some(model) = &model {
            metrics::gauge!("cortex_gateway_in_flight_requests", "model" => Arc::clone(model))
                .increment(1.0);
        }
        Self {
            sink,
            start,
            request_id,
            key_id,
            model,
            strip_usage,
            picked: None,
            status: None,
            tap: None,
            failed: false,
        }
    }

    /// The model as a metric label, without copying it.
    fn model_label(&self) -> metrics::SharedString {
        self.model
            .as_ref()
            .map_or(metrics::SharedString::const_str(""), |m| {
                metrics::SharedString::from(Arc::clone(m))
            })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let now = Instant::now();
        let latency = now - self.start;
        let seen = self.tap.as_ref().map(Tap::observed).unwrap_or_default();
        let usage = seen.usage;
        let ttft = seen.first_byte.map(|t| t - self.start);
        // No outcome: no response was produced (the client left first, or the inner service
        // failed, then `failed` is set).
        let outcome = seen.outcome.unwrap_or(if self.failed {
            Outcome::UpstreamFailure
        } else {
            Outcome::ClientHangUp
        });
        let failed = outcome == Outcome::UpstreamFailure;
        let client_disconnected = outcome == Outcome::ClientHangUp;
        let model = self.model_label();
        let status = crate::meter::status_label(self.status);
        metrics::counter!("cortex_gateway_requests_total", "model" => model.clone(), "status" => status)
            .increment(1);
        metrics::histogram!("cortex_gateway_request_duration_seconds", "model" => model.clone())
            .record(latency.as_secs_f64());
        if let Some(ttft) = ttft {
            metrics::histogram!("cortex_gateway_time_to_first_token_seconds", "model" => model.clone())
                .record(ttft.as_secs_f64());
        }
        if usage.source != UsageSource::Missing {
            metrics::counter!("cortex_gateway_tokens_total", "model" => model.clone(), "kind" => "prompt")
                .increment(usage.prompt_tokens);
            metrics::counter!("cortex_gateway_tokens_total", "model" => model.clone(), "kind" => "completion")
                .increment(usage.completion_tokens);
        }
        if client_disconnected {
            metrics::counter!("cortex_gateway_client_disconnects_total", "model" => model.clone())
                .increment(1);
        }
        if self.model.is_some() {
            metrics::gauge!("cortex_gateway_in_flight_requests", "model" => model).decrement(1.0);
        }
        let endpoint = self.picked.take().map(|p| p.0);
        self.sink.record(UsageRecord {
            request_id: String::from_utf8_lossy(self.request_id.as_bytes()).into_owned(),
            key_id: self.key_id.take(),
            model: self.model.take(),
            replica: endpoint.as_ref().map(|e| e.replica),
            instance: endpoint.as_ref().map(|e| e.instance.clone()),
            engine: endpoint.map(|e| e.engine),
            status: self.status,
            usage,
            latency,
            time_to_first_token: ttft,
            streamed: seen.streamed,
            client_disconnected,
            failed,
        });
    }
}

pin_project! {
    /// The future of [`MeterUsage`](super::MeterUsage).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        recorder: Option<Recorder>,
    }
}

// === impl ResponseFuture ===

impl<F> ResponseFuture<F> {
    pub(super) fn new(future: F, recorder: Recorder) -> Self {
        Self {
            future,
            recorder: Some(recorder),
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
        let mut recorder = this.recorder.take().expect("polled after completion");
        match result {
            Ok(mut response) => {
                let now = Instant::now();
                let mut own = now - recorder.start;
                if let Some(t) = response.extensions().get::<UpstreamTiming>() {
                    own = own.saturating_sub(t.headers - t.sent);
                }
                if let Some(QueueWait(waited)) = response.extensions().get::<QueueWait>() {
                    own = own.saturating_sub(*waited);
                }
                metrics::histogram!("cortex_gateway_overhead_seconds").record(own.as_secs_f64());
                recorder.status = Some(response.status().as_u16());
                recorder.picked = response.extensions().get::<Picked>().cloned();
                if !response.headers().contains_key(X_REQUEST_ID) {
                    response
                        .headers_mut()
                        .insert(X_REQUEST_ID, recorder.request_id.clone());
                }
                let (parts, body) = response.into_parts();
                let body = match parts.extensions.get::<Tap>() {
                    // The proxy read the body: nothing to parse here.
                    Some(tap) => TapBody::external(body, tap.clone()),
                    None => TapBody::new(body, parts.status, &parts.headers, "the inner service")
                        .cut_usage(recorder.strip_usage),
                };
                if recorder.strip_usage && body.tap().observed().streamed {
                    // Frames are re-cut; any length the upstream announced no longer holds.
                    let mut parts = parts;
                    parts.headers.remove(header::CONTENT_LENGTH);
                    recorder.tap = Some(body.tap().clone());
                    return Poll::Ready(Ok(Response::from_parts(
                        parts,
                        ResponseBody::new(body, recorder),
                    )));
                }
                recorder.tap = Some(body.tap().clone());
                Poll::Ready(Ok(Response::from_parts(
                    parts,
                    ResponseBody::new(body, recorder),
                )))
            }
            Err(e) => {
                recorder.failed = true;
                drop(recorder);
                Poll::Ready(Err(e))
            }
        }
    }
}
