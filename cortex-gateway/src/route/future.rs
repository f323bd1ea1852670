use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Request, Response, header};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::budget::Reservation;
use super::{RouteLayer, Routed};
use crate::auth::ApiKey;
use crate::error::{Refusal, RefusalOr};
use crate::scan::scan;

pin_project! {
    /// The future of [`Route`](super::Route).
    pub struct ResponseFuture<B, S, F> {
        #[pin]
        state: State<B, S, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B, S, F> {
        Reading {
            #[pin]
            body: B,
            buf: Collect,
            parts: Option<Parts>,
            inner: Option<S>,
            config: RouteLayer,
            reserved: Option<Reservation>,
        },
        Loading {
            loading: super::Loading,
            parts: Option<Parts>,
            body: Bytes,
            inner: Option<S>,
            config: RouteLayer,
            reserved: Option<Reservation>,
        },
        Calling {
            #[pin]
            future: F,
            // The body's bytes count against the budget until the replica's answer begins.
            reserved: Option<Reservation>,
        },
        Answered {
            response: Option<Response<Bytes>>,
        },
    }
}

// === impl ResponseFuture ===

impl<B, S, F> ResponseFuture<B, S, F> {
    pub(super) fn reading(
        parts: Parts,
        body: B,
        inner: S,
        config: RouteLayer,
        reserved: Reservation,
        declared: usize,
    ) -> Self {
        Self {
            state: State::Reading {
                body,
                buf: Collect {
                    expected: declared,
                    ..Collect::default()
                },
                parts: Some(parts),
                inner: Some(inner),
                config,
                reserved: Some(reserved),
            },
        }
    }

    pub(super) fn refused(refusal: Refusal) -> Self {
        Self::answered(refusal.into_response::<()>())
    }

    pub(super) fn answered<T>(response: Response<RefusalOr<T>>) -> Self {
        Self {
            state: State::Answered {
                response: Some(flatten(response)),
            },
        }
    }
}

/// The request body as it arrives: a body of one frame (hyper's for a small body, `Full`'s) is kept
/// as it is, without a copy; more frames are gathered into one buffer, sized once to the declared
/// length (so the memory held is what the budget reserved, not a doubling buffer's slack).
#[derive(Debug, Default)]
struct Collect {
    first: Bytes,
    rest: Option<BytesMut>,
    expected: usize,
}

impl Collect {
    fn len(&self) -> usize {
        self.rest.as_ref().map_or(self.first.len(), BytesMut::len)
    }

    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match &mut self.rest {
            Some(rest) => rest.extend_from_slice(&data),
            None if self.first.is_empty() => self.first = data,
            None => {
                let need = self.first.len() + data.len();
                let mut rest = BytesMut::with_capacity(need.max(self.expected));
                rest.extend_from_slice(&self.first);
                rest.extend_from_slice(&data);
                self.rest = Some(rest);
            }
        }
    }

    fn take(&mut self) -> Bytes {
        match self.rest.take() {
            Some(rest) => rest.freeze(),
            None => std::mem::take(&mut self.first),
        }
    }
}

/// A gateway-written response with its bytes taken out of the body wrapper.
fn flatten<T>(response: Response<RefusalOr<T>>) -> Response<Bytes> {
    response.map(|body| body.own_bytes().unwrap_or_default())
}

/// The `model` query parameter, for a request without a body (a `GET` an operator allowed).
fn model_in_query(parts: &Parts) -> Option<String> {
    parts.uri.query()?.split('&').find_map(|pair| {
        let value = pair.strip_prefix("model=")?;
        Some(super::service::percent_decode(&value.replace('+', " ")))
    })
}

/// What the read body decides.
enum Decision {
    /// Forward, with the body to send.
    Forward(Bytes),
    /// Wait for the model to load, then decide again.
    Load(super::Loading, Bytes),
}

/// What the read body decides: forward, wait for the model to load (when `may_load`), or refuse.
fn decide(
    parts: &mut Parts,
    body: Bytes,
    config: &RouteLayer,
    may_load: bool,
) -> Result<Decision, Refusal> {
    let (model, scanned) = if body.is_empty() && parts.method != http::Method::POST {
        (model_in_query(parts), None)
    } else {
        let scanned = scan(&body).map_err(|e| Refusal::bad_request(e.to_string()))?;
        (scanned.model.as_deref().map(str::to_owned), Some(scanned))
    };
    let Some(model) = model else {
        return Err(Refusal::bad_request("you must provide a model parameter").param("model"));
    };
    let key = parts.extensions.get::<Arc<ApiKey>>();
    let target = config.names.target(&model).unwrap_or(&model).to_owned();
    if key.is_some_and(|k| !k.allows(&model) && !k.allows(&target)) {
        return Err(Refusal::model_not_allowed(&model));
    }
    let usable = |endpoints: &cortex_core::Endpoints| {
        !endpoints.is_empty()
            && config
                .breakers
                .as_ref()
                .is_none_or(|b| endpoints.iter().any(|e| b.is_available(&e.instance)))
    };
    let primary = config.registry.resolve(&target).filter(|e| !e.is_empty());
    let fallback = if primary.as_ref().is_some_and(usable) {
        None
    } else {
        config.names.fallbacks(&target).iter().find_map(|name| {
            let allowed = key.is_none_or(|k| k.allows(name));
            let endpoints = config
                .registry
                .resolve(name)
                .filter(|e| allowed && usable(e))?;
            Some((name.clone(), endpoints))
        })
    };
    let (served, endpoints) = match (fallback, primary) {
        (Some((name, endpoints)), _) => {
            tracing::info!(model = %target, fallback = %name, "no usable replica: using the fallback");
            (name, endpoints)
        }
        (None, Some(endpoints)) => (target, endpoints),
        (None, None) => {
            if let Some(loading) = config
                .loader
                .as_ref()
                .filter(|_| may_load)
                .and_then(|l| l.load(&target))
            {
                return Ok(Decision::Load(loading, body));
            }
            let explained = config.unrouted.as_ref().and_then(|u| u.refusal(&target));
            return Err(explained.unwrap_or_else(|| Refusal::model_not_found(&model)));
        }
    };
    if let Some(loader) = &config.loader {
        loader.touch(&served);
    }
    let path = parts.uri.path();
    let Some(operation) =
        config
            .surface
            .operation(&endpoints[0].engine, &served, &parts.method, path)
    else {
        return Err(Refusal::unknown_url(&parts.method, path));
    };
    let stream = scanned.as_ref().is_some_and(|s| s.stream);
    let client_wants_usage = scanned.as_ref().is_some_and(|s| s.include_usage);
    let inject = config.inject_usage && operation.streams_chunks() && stream && !client_wants_usage;
    let body = match (&scanned, inject) {
        (Some(scanned), true) => scanned.with_usage_requested(&body),
        _ => body,
    };
    let body = if scanned.is_some() && served != model {
        crate::scan::with_model(&body, &served)
    } else {
        body
    };
    parts.extensions.insert(Routed {
        model: Arc::from(served),
        endpoints,
        stream,
        client_wants_usage,
        usage_injected: inject,
        operation,
    });
    // The length changes when usage is spliced in; the body sets it again.
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Decision::Forward(body))
}

/// The state after a decision: calling the inner service, waiting for the model to load, or
/// answering with the refusal.
fn next_state<B, S, F, ResBody, E>(
    decided: Result<Decision, Refusal>,
    parts: Parts,
    inner: &mut Option<S>,
    config: &RouteLayer,
    reserved: &mut Option<Reservation>,
) -> State<B, S, F>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>, Error = E, Future = F>,
{
    match decided {
        Ok(Decision::Forward(bytes)) => {
            let mut inner = inner.take().expect("polled after completion");
            State::Calling {
                future: inner.call(Request::from_parts(parts, Full::new(bytes))),
                reserved: reserved.take(),
            }
        }
        Ok(Decision::Load(loading, body)) => State::Loading {
            loading,
            parts: Some(parts),
            body,
            inner: inner.take(),
            config: config.clone(),
            reserved: reserved.take(),
        },
        Err(refusal) => State::Answered {
            response: Some(flatten(refusal.into_response::<()>())),
        },
    }
}

impl<B, S, F, ResBody, E> Future for ResponseFuture<B, S, F>
where
    B: Body,
    B::Error: std::fmt::Display,
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>, Error = E, Future = F>,
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<RefusalOr<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Reading {
                    mut body,
                    buf,
                    parts,
                    inner,
                    config,
                    reserved,
                } => {
                    let refusal = match ready!(body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            if let Ok(mut data) = frame.into_data() {
                                use bytes::Buf;
                                let len = buf.len() + data.remaining();
                                if len > config.body_limit {
                                    Some(Refusal::too_large(config.body_limit))
                                } else if !reserved.as_mut().is_some_and(|r| r.grow_to(len)) {
                                    Some(Refusal::body_budget(&config.budget))
                                } else {
                                    let n = data.remaining();
                                    buf.push(data.copy_to_bytes(n));
                                    continue;
                                }
                            } else {
                                continue; // trailers
                            }
                        }
                        Some(Err(e)) => Some(Refusal::bad_request(format!(
                            "the request body could not be read: {e}"
                        ))),
                        None => None,
                    };
                    let mut parts = parts.take().expect("polled after completion");
                    let decided = match refusal {
                        Some(r) => Err(r),
                        None => decide(&mut parts, buf.take(), config, true),
                    };
                    let next = next_state(decided, parts, inner, config, reserved);
                    this.state.set(next);
                }
                StateProj::Loading {
                    loading,
                    parts,
                    body,
                    inner,
                    config,
                    reserved,
                } => {
                    let loaded = ready!(loading.as_mut().poll(cx));
                    let mut parts = parts.take().expect("polled after completion");
                    // Once loaded, routed as usual (never a second load for this request).
                    let decided = loaded
                        .and_then(|()| decide(&mut parts, std::mem::take(body), config, false));
                    let next = next_state(decided, parts, inner, config, reserved);
                    this.state.set(next);
                }
                StateProj::Calling { future, reserved } => {
                    let result = ready!(future.poll(cx));
                    reserved.take();
                    return Poll::Ready(result.map(|response| response.map(RefusalOr::inner)));
                }
                StateProj::Answered { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(RefusalOr::refusal)));
                }
            }
        }
    }
}
