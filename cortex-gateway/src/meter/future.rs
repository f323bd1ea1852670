use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Response, header};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::body::{Mode, ResponseBody};
use super::{UpstreamTiming, UsageRecord, UsageSink};
use crate::balance::Picked;
use crate::queue::QueueWait;
use crate::request_id::X_REQUEST_ID;
use crate::sse::{Usage, UsageSource};

/// Builds and delivers one request's record, exactly once: when dropped (at the body's end, on its
/// failure, or when the client goes away).
#[allow(clippy::struct_excessive_bools, reason = "the record's flags")]
pub(crate) struct Recorder {
    sink: Arc<dyn UsageSink>,
    start: Instant,
    request_id: HeaderValue,
    key_id: Option<Arc<str>>,
    model: Option<Arc<str>>,
    pub(super) strip_usage: bool,
    picked: Option<Picked>,
    status: Option<u16>,
    pub(super) usage: Usage,
    pub(super) first_byte: Option<Instant>,
    pub(super) streamed: bool,
    pub(super) ended: bool,
    pub(super) failed: bool,
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
            usage: Usage::MISSING,
            first_byte: None,
            streamed: false,
            ended: false,
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
        let ttft = self.first_byte.map(|t| t - self.start);
        let client_disconnected = !self.ended && !self.failed;
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
        if self.usage.source != UsageSource::Missing {
            metrics::counter!("cortex_gateway_tokens_total", "model" => model.clone(), "kind" => "prompt")
                .increment(self.usage.prompt_tokens);
            metrics::counter!("cortex_gateway_tokens_total", "model" => model.clone(), "kind" => "completion")
                .increment(self.usage.completion_tokens);
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
            usage: self.usage,
            latency,
            time_to_first_token: ttft,
            streamed: self.streamed,
            client_disconnected,
            failed: self.failed,
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
                let content_type = response.headers().get(header::CONTENT_TYPE);
                let mode = if !response.status().is_success() {
                    Mode::Plain
                } else if crate::sse::is_event_stream(response.headers()) {
                    recorder.streamed = true;
                    Mode::sse()
                } else if content_type
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
                {
                    Mode::Json(Vec::new())
                } else {
                    Mode::Plain
                };
                if recorder.strip_usage && recorder.streamed {
                    // Frames are re-cut; any length the upstream announced no longer holds.
                    response.headers_mut().remove(header::CONTENT_LENGTH);
                }
                Poll::Ready(Ok(
                    response.map(|body| ResponseBody::new(body, recorder, mode))
                ))
            }
            Err(e) => {
                recorder.failed = true;
                drop(recorder);
                Poll::Ready(Err(e))
            }
        }
    }
}
