use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use cortex_core::EngineKind;
use cortex_engines::errors::translate;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Body;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::ResponseBody;
use super::body::Source;
use super::headers::strip_hop_by_hop;
use super::service::Proxy;
use crate::balance::Picked;
use crate::error::Refusal;
use crate::failover::NotSent;
use crate::meter::UpstreamTiming;
use crate::outcome::TapBody;
use crate::request_id::X_REQUEST_ID;
use crate::sse::is_event_stream;

/// Error bodies are read up to this size to translate them.
const ERROR_BODY_CAP: usize = 64 << 10;

/// What the future needs to finish the response.
pub(super) struct Ctx {
    picked: Option<Picked>,
    engine: EngineKind,
    request_id: HeaderValue,
    sent: Instant,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    cut_usage: bool,
}

impl Ctx {
    pub(super) fn new(
        picked: Option<Picked>,
        engine: EngineKind,
        request_id: HeaderValue,
        proxy: &Proxy,
        cut_usage: bool,
    ) -> Self {
        Self {
            cut_usage,
            picked,
            engine,
            request_id,
            sent: Instant::now(),
            first_byte_timeout: proxy.first_byte_timeout,
            idle_timeout: proxy.idle_timeout,
        }
    }

    fn replica(&self) -> String {
        self.picked.as_ref().map_or_else(
            || String::from("the upstream"),
            |p| {
                format!(
                    "replica {} of `{}` ({})",
                    p.0.replica, p.0.served_name, p.0.base_url
                )
            },
        )
    }

    /// Taps the body, and adds the tap, the request id, the replica and the timing to a response.
    fn finish(&self, response: Response<Source>, headers_at: Instant) -> Response<ResponseBody> {
        let (parts, source) = response.into_parts();
        let body = TapBody::new(source, parts.status, &parts.headers, self.replica())
            .cut_usage(self.cut_usage);
        let tap = body.tap().clone();
        let mut response = Response::from_parts(parts, ResponseBody::new(body));
        response.extensions_mut().insert(tap);
        response
            .headers_mut()
            .insert(X_REQUEST_ID, self.request_id.clone());
        if let Some(p) = &self.picked {
            response.extensions_mut().insert(p.clone());
        }
        response.extensions_mut().insert(UpstreamTiming {
            sent: self.sent,
            headers: headers_at,
        });
        response
    }

    fn refusal(&self, refusal: &Refusal) -> Response<ResponseBody> {
        self.finish(refusal.to_response(Source::full), Instant::now())
    }
}

type Sending = hyper_util::client::legacy::ResponseFuture;

/// An error and its sources, `: `-separated: hyper-util's own message ("client error
/// (Connect)") leaves out the cause a user needs ("Connection refused").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

pin_project! {
    /// The future of [`Proxy`](super::Proxy).
    pub struct ResponseFuture {
        #[pin]
        state: State,
        ctx: Ctx,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Sending {
            future: Sending,
            #[pin]
            deadline: Sleep,
        },
        ReadingError {
            #[pin]
            body: Incoming,
            buf: Vec<u8>,
            #[pin]
            deadline: Sleep,
            parts: Option<http::response::Parts>,
            headers_at: Instant,
        },
        Failed {
            refusal: Option<Refusal>,
        },
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

// === impl ResponseFuture ===

impl ResponseFuture {
    pub(super) fn sending(future: Sending, ctx: Ctx) -> Self {
        let deadline = tokio::time::sleep(ctx.first_byte_timeout);
        Self {
            state: State::Sending { future, deadline },
            ctx,
        }
    }

    pub(super) fn failed(refusal: Refusal, ctx: Ctx) -> Self {
        Self {
            state: State::Failed {
                refusal: Some(refusal),
            },
            ctx,
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, std::convert::Infallible>;

    #[allow(
        clippy::too_many_lines,
        reason = "one state machine, read top to bottom"
    )]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let ctx = &*this.ctx;
            match this.state.as_mut().project() {
                StateProj::Sending { future, deadline } => {
                    let response = match Pin::new(future).poll(cx) {
                        Poll::Ready(Ok(response)) => response,
                        Poll::Ready(Err(e)) => {
                            let refusal = if e.is_connect() {
                                Refusal::new(
                                    StatusCode::BAD_GATEWAY,
                                    format!(
                                        "could not connect to {}: {}",
                                        ctx.replica(),
                                        chain(&e)
                                    ),
                                )
                            } else {
                                Refusal::new(
                                    StatusCode::BAD_GATEWAY,
                                    format!(
                                        "{} failed before answering: {}",
                                        ctx.replica(),
                                        chain(&e)
                                    ),
                                )
                            };
                            tracing::warn!(replica = %ctx.replica(), error = %e, "upstream request failed");
                            let mut response = ctx.refusal(&refusal.code("upstream_unavailable"));
                            if e.is_connect() {
                                // Not one byte reached the engine: safe to send elsewhere.
                                response.extensions_mut().insert(NotSent);
                            }
                            return Poll::Ready(Ok(response));
                        }
                        Poll::Pending => {
                            std::task::ready!(deadline.poll(cx));
                            let refusal = Refusal::new(
                                StatusCode::GATEWAY_TIMEOUT,
                                format!(
                                    "{} sent no answer within {} s",
                                    ctx.replica(),
                                    ctx.first_byte_timeout.as_secs()
                                ),
                            )
                            .code("upstream_timeout");
                            return Poll::Ready(Ok(ctx.refusal(&refusal)));
                        }
                    };
                    let headers_at = Instant::now();
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    let sse = is_event_stream(&parts.headers);
                    if parts.status.as_u16() >= 400 && !sse {
                        let deadline = tokio::time::sleep(ctx.idle_timeout);
                        this.state.set(State::ReadingError {
                            body,
                            buf: Vec::new(),
                            deadline,
                            parts: Some(parts),
                            headers_at,
                        });
                        continue;
                    }
                    if sse {
                        parts
                            .headers
                            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                        parts
                            .headers
                            .insert("x-accel-buffering", HeaderValue::from_static("no"));
                    }
                    let body = Source::upstream(body, ctx.idle_timeout);
                    return Poll::Ready(Ok(
                        ctx.finish(Response::from_parts(parts, body), headers_at)
                    ));
                }
                StateProj::ReadingError {
                    mut body,
                    buf,
                    deadline,
                    parts,
                    headers_at,
                } => {
                    let done = loop {
                        match body.as_mut().poll_frame(cx) {
                            Poll::Ready(Some(Ok(frame))) => {
                                if let Some(data) = frame.data_ref() {
                                    let room = ERROR_BODY_CAP.saturating_sub(buf.len());
                                    buf.extend_from_slice(&data[..data.len().min(room)]);
                                }
                            }
                            Poll::Ready(_) => break true,
                            Poll::Pending => break false,
                        }
                    };
                    if !done {
                        std::task::ready!(deadline.poll(cx));
                    }
                    let parts = parts.take().expect("polled after completion");
                    let translated = translate(&ctx.engine, parts.status.as_u16(), buf);
                    let mut refusal = Refusal::from_engine(&translated);
                    if let Some(secs) = parts
                        .headers
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    {
                        refusal = refusal.retry_after(Duration::from_secs(secs));
                    }
                    let response = refusal.to_response(Source::full);
                    return Poll::Ready(Ok(ctx.finish(response, *headers_at)));
                }
                StateProj::Failed { refusal } => {
                    let refusal = refusal.take().expect("polled after completion");
                    return Poll::Ready(Ok(ctx.refusal(&refusal)));
                }
            }
        }
    }
}
