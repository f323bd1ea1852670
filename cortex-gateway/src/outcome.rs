//! One classification of each response, decided once at the end of its body and shared by the
//! layers that need it, as linkerd2-proxy classifies responses: the body is read once, by one
//! [`TapBody`], and [`meter`](crate::meter) and [`breaker`](crate::breaker) read the verdict from
//! the [`Tap`] in the response's extensions.
//!
//! The tap sits where the bytes come in — the [`Proxy`](crate::proxy::Proxy) wraps every upstream
//! body in one; [`MeterUsage`](crate::meter::MeterUsage) wraps the body of any other inner
//! service that left no [`Tap`] — and does everything that needs the bytes:
//!
//! - an event stream (`text/event-stream`) is parsed event by event ([`SseParser`]), once:
//!   usage and `error` events are read ([`UsageTracker`]), the usage-only chunk the gateway asked
//!   for is cut out ([`TapBody::cut_usage`]), and only whole events are forwarded — the bytes of an
//!   event not yet complete are held until its blank line arrives. So when the upstream fails in
//!   the middle of an event, the partial event is dropped and the client gets a well-formed
//!   `data: {"error": ..}` event instead, which OpenAI SDKs raise as an `APIError`;
//! - a JSON answer of any size has its `usage` object found as the bytes pass (the last one wins;
//!   only the object is kept, at most 4 KiB of it), chat, completions, embeddings and
//!   `/v1/responses` (`input_tokens` / `output_tokens`) alike.
//!
//! The [`Outcome`]: [`Success`](Outcome::Success); [`ClientError`](Outcome::ClientError) for a
//! 4xx answer (the caller's fault, or the replica pushing back with 429: it works);
//! [`UpstreamFailure`](Outcome::UpstreamFailure) for a 5xx answer, a body that fails or goes idle,
//! or an `error` event; [`ClientHangUp`](Outcome::ClientHangUp) when the body is dropped before its
//! end (after `[DONE]` it is a success: SDKs close once they read it). Written by hand: this is the
//! gateway's own policy over bytes no crate sees.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::error::Refusal;
use crate::sse::{EventKind, MAX_EVENT, SseParser, Usage, UsageTracker};

/// How a response ended, for the meter and the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Answered in full.
    Success,
    /// A 4xx answer: the request was at fault, or the replica pushed back (429).
    ClientError,
    /// A 5xx answer, a body that failed or went idle, or an `error` event.
    UpstreamFailure,
    /// The client went away before the end.
    ClientHangUp,
}

/// What the tap saw of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Observed {
    /// Tokens, and where they came from.
    pub usage: Usage,
    /// How the response ended; `None` while its body is still running.
    pub outcome: Option<Outcome>,
    /// When the first byte of the body passed.
    pub first_byte: Option<Instant>,
    /// Whether the body is an event stream.
    pub streamed: bool,
}

impl Default for Observed {
    fn default() -> Self {
        Self {
            usage: Usage::MISSING,
            outcome: None,
            first_byte: None,
            streamed: false,
        }
    }
}

/// The shared record of one response's [`Observed`]; in the response's extensions.
#[derive(Debug, Clone, Default)]
pub struct Tap(Arc<Mutex<Observed>>);

// === impl Tap ===

impl Tap {
    /// What was seen so far.
    pub fn observed(&self) -> Observed {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut Observed)) {
        change(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Sets the outcome unless one is set.
    fn settle(&self, outcome: Outcome) {
        self.update(|o| {
            o.outcome.get_or_insert(outcome);
        });
    }
}

/// The `usage` object of a JSON body, found as the bytes pass.
#[derive(Debug, Default)]
struct JsonUsage {
    /// The last bytes of the previous chunk, for a key split between chunks.
    tail: Vec<u8>,
    /// The object being captured, with its brace depth and string state.
    capture: Option<Capture>,
    usage: Option<Usage>,
}

#[derive(Debug, Default)]
struct Capture {
    bytes: Vec<u8>,
    depth: u32,
    in_string: bool,
    escaped: bool,
}

/// The longest `usage` object kept.
const USAGE_CAP: usize = 4 << 10;
const USAGE_KEY: &[u8] = b"\"usage\"";

// === impl JsonUsage ===

impl JsonUsage {
    fn feed(&mut self, chunk: &[u8]) {
        let mut at = 0;
        while at < chunk.len() {
            if self.capture.is_some() {
                at += self.capture_from(&chunk[at..]);
                continue;
            }
            // A key split between the previous chunk and this one.
            if at == 0 && !self.tail.is_empty() {
                let head = &chunk[..chunk.len().min(USAGE_KEY.len())];
                let mut joined = std::mem::take(&mut self.tail);
                joined.extend_from_slice(head);
                if let Some(i) = memchr::memmem::find(&joined, USAGE_KEY) {
                    let end = i + USAGE_KEY.len();
                    let skip = end.saturating_sub(joined.len() - head.len());
                    if end > joined.len() - head.len() {
                        self.capture = Some(Capture::default());
                        at = skip;
                        continue;
                    }
                }
            }
            match memchr::memmem::find(&chunk[at..], USAGE_KEY) {
                Some(i) => {
                    self.capture = Some(Capture::default());
                    at += i + USAGE_KEY.len();
                }
                None => break,
            }
        }
        let keep = chunk.len().min(USAGE_KEY.len() - 1);
        self.tail.clear();
        self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
    }

    /// Captures the object after a `"usage"` key; returns the bytes consumed.
    fn capture_from(&mut self, bytes: &[u8]) -> usize {
        let Some(c) = self.capture.as_mut() else {
            return bytes.len();
        };
        for (i, &b) in bytes.iter().enumerate() {
            if c.depth == 0 {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' | b':' => continue,
                    b'{' => {}
                    // `"usage": null`, or the word inside a string: not an object.
                    _ => {
                        self.capture = None;
                        return i;
                    }
                }
            }
            c.bytes.push(b);
            if c.in_string {
                match (c.escaped, b) {
                    (true, _) => c.escaped = false,
                    (false, b'\\') => c.escaped = true,
                    (false, b'"') => c.in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => c.in_string = true,
                    b'{' => c.depth += 1,
                    b'}' => c.depth -= 1,
                    _ => {}
                }
            }
            if c.depth == 0 {
                let mut tracker = UsageTracker::new();
                let mut object = Vec::with_capacity(c.bytes.len() + 10);
                object.extend_from_slice(b"{\"usage\":");
                object.extend_from_slice(&c.bytes);
                object.push(b'}');
                tracker.observe(&object);
                if tracker.usage() != Usage::MISSING {
                    self.usage = Some(tracker.usage());
                }
                self.capture = None;
                return i + 1;
            }
            if c.bytes.len() > USAGE_CAP {
                self.capture = None;
                return i + 1;
            }
        }
        bytes.len()
    }
}

/// Stream state: the parser, the usage, and the bytes of an event not yet complete.
#[derive(Debug, Default)]
struct SseTap {
    parser: SseParser,
    tracker: UsageTracker,
    carry: BytesMut,
    /// (end offset, cut) of each event completed by the current chunk.
    spans: Vec<(usize, bool)>,
}

// === impl SseTap ===

impl SseTap {
    /// Observes `chunk`; returns the bytes to forward: the whole events it completes, less the
    /// usage-only ones when `cut_usage`.
    fn pass(&mut self, chunk: &Bytes, cut_usage: bool) -> Bytes {
        let Self {
            parser,
            tracker,
            carry,
            spans,
        } = self;
        spans.clear();
        // Every blank line is a boundary, so comments (`: ping`) pass at once too.
        parser.feed_boundaries(chunk, |data, end| {
            let cut = data.is_some_and(|d| tracker.observe(d) == EventKind::UsageOnly);
            spans.push((end, cut_usage && cut));
        });
        let last = spans.last().map_or(0, |s| s.0);
        let out = if carry.is_empty() && !spans.iter().any(|s| s.1) {
            // The common case: whole events, forwarded without a copy.
            let out = chunk.slice(..last);
            carry.extend_from_slice(&chunk[last..]);
            out
        } else {
            let mut out = BytesMut::new();
            let mut start = 0;
            for &(end, cut) in spans.iter() {
                if cut {
                    carry.clear();
                } else {
                    out.extend_from_slice(&carry.split());
                    out.extend_from_slice(&chunk[start..end]);
                }
                start = end;
            }
            carry.extend_from_slice(&chunk[start..]);
            out.freeze()
        };
        if carry.len() > MAX_EVENT {
            // An event too long to hold: its bytes go on as they are (the parser skips it).
            let mut all = BytesMut::from(&out[..]);
            all.extend_from_slice(&carry.split());
            return all.freeze();
        }
        out
    }
}

#[derive(Debug)]
enum Mode {
    /// Another tap reads this body: forwarded untouched, nothing recorded.
    External,
    /// Nothing in it matters (errors, other content types).
    Pass,
    Json(Box<JsonUsage>),
    Sse(Box<SseTap>),
}

pin_project! {
    /// A response body read once for its [`Observed`]. See the [module docs](self).
    #[project = TapProj]
    pub struct TapBody<B> {
        #[pin]
        inner: B,
        tap: Tap,
        mode: Mode,
        cut_usage: bool,
        origin: Arc<str>,
        ended: bool,
        seen_byte: bool,
    }

    impl<B> PinnedDrop for TapBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.ended && !matches!(this.mode, Mode::External) {
                let done = matches!(this.mode, Mode::Sse(s) if s.tracker.saw_done());
                this.tap.settle(if done { Outcome::Success } else { Outcome::ClientHangUp });
            }
        }
    }
}

impl<B> fmt::Debug for TapBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapBody")
            .field("tap", &self.tap)
            .field("mode", &self.mode)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

// === impl TapBody ===

impl<B> TapBody<B> {
    /// Reads `inner`, the body of a response with `status` and `headers`, into a new [`Tap`]
    /// (see [`tap`](Self::tap)); `origin` names where it comes from in the error event that ends a
    /// failed stream (such as "replica 0 of `gemma` (`http://127.0.0.1:39211`)").
    pub fn new(
        inner: B,
        status: StatusCode,
        headers: &http::HeaderMap,
        origin: impl Into<Arc<str>>,
    ) -> Self {
        let tap = Tap::default();
        let streamed = crate::sse::is_event_stream(headers);
        let head = if status.is_server_error() {
            Some(Outcome::UpstreamFailure)
        } else if status.is_client_error() {
            Some(Outcome::ClientError)
        } else {
            None
        };
        let mode = if head.is_some() {
            Mode::Pass
        } else if streamed {
            Mode::Sse(Box::default())
        } else if headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
        {
            Mode::Json(Box::default())
        } else {
            Mode::Pass
        };
        tap.update(|o| {
            o.streamed = streamed;
            o.outcome = head;
        });
        Self {
            inner,
            tap,
            mode,
            cut_usage: false,
            origin: origin.into(),
            ended: false,
            seen_byte: false,
        }
    }

    /// Forwards `inner` untouched: `tap` is filled by the tap below, which read the same bytes.
    pub fn external(inner: B, tap: Tap) -> Self {
        Self {
            inner,
            tap,
            mode: Mode::External,
            cut_usage: false,
            origin: Arc::from(""),
            ended: false,
            seen_byte: true,
        }
    }

    /// Cuts the usage-only chunk out of a stream (the gateway asked for it; the client did not).
    #[must_use]
    pub fn cut_usage(mut self, cut: bool) -> Self {
        self.cut_usage = cut;
        self
    }

    /// The tap this body fills; put it in the response's extensions.
    pub fn tap(&self) -> &Tap {
        &self.tap
    }
}

impl<B> Body for TapBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if let Mode::External = this.mode {
            let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
            *this.ended = frame.is_none() || this.inner.is_end_stream();
            return Poll::Ready(frame);
        }
        loop {
            match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: engines send none
                    };
                    if !data.is_empty() && !*this.seen_byte {
                        *this.seen_byte = true;
                        this.tap.update(|o| o.first_byte = Some(Instant::now()));
                    }
                    let data = match &mut *this.mode {
                        Mode::External | Mode::Pass => data,
                        Mode::Json(json) => {
                            json.feed(&data);
                            data
                        }
                        Mode::Sse(sse) => {
                            let before = (sse.tracker.usage(), sse.tracker.saw_error());
                            let out = sse.pass(&data, *this.cut_usage);
                            let after = (sse.tracker.usage(), sse.tracker.saw_error());
                            if before != after {
                                this.tap.update(|o| o.usage = after.0);
                            }
                            out
                        }
                    };
                    if this.inner.is_end_stream() {
                        let rest = finish(&mut this, None);
                        return Poll::Ready(Some(Ok(Frame::data(join(data, rest)))));
                    }
                    if data.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    if let Mode::Sse(_) = this.mode {
                        let message = format!("the stream from {} failed: {e}", this.origin);
                        tracing::warn!(origin = %this.origin, error = %e, "stream ended by an upstream failure");
                        finish(&mut this, Some(Outcome::UpstreamFailure));
                        let event = Refusal::new(StatusCode::BAD_GATEWAY, message)
                            .code("upstream_stream_failed")
                            .to_event();
                        return Poll::Ready(Some(Ok(Frame::data(event))));
                    }
                    finish(&mut this, Some(Outcome::UpstreamFailure));
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    let rest = finish(&mut this, None);
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.ended
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match (&self.mode, self.cut_usage) {
            (Mode::Sse(_), _) => SizeHint::default(),
            _ => self.inner.size_hint(),
        }
    }
}

/// Taps `response`'s body (see [`TapBody::new`]) and puts its [`Tap`] in the response's
/// extensions: how a service of your own, standing where the [`Proxy`](crate::proxy::Proxy) stands,
/// gives the meter and the breaker the same classification.
///
/// ```
/// use cortex_gateway::outcome::{Outcome, Tap, tap_response};
/// use http_body_util::{BodyExt, Full};
///
/// # tokio_test::block_on(async {
/// let mut response = http::Response::new(Full::new(bytes::Bytes::from_static(
///     b"data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"lost\"}}\n\n",
/// )));
/// response.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
/// let response = tap_response(response, "my upstream");
/// let tap = response.extensions().get::<Tap>().unwrap().clone();
/// response.into_body().collect().await.unwrap();
/// assert_eq!(tap.observed().outcome, Some(Outcome::UpstreamFailure));
/// # });
/// ```
pub fn tap_response<B>(
    response: http::Response<B>,
    origin: impl Into<Arc<str>>,
) -> http::Response<TapBody<B>> {
    let (mut parts, body) = response.into_parts();
    let body = TapBody::new(body, parts.status, &parts.headers, origin);
    parts.extensions.insert(body.tap().clone());
    http::Response::from_parts(parts, body)
}

/// Two frames' bytes as one.
fn join(a: Bytes, b: Bytes) -> Bytes {
    match (a.is_empty(), b.is_empty()) {
        (_, true) => a,
        (true, false) => b,
        (false, false) => {
            let mut all = BytesMut::from(&a[..]);
            all.extend_from_slice(&b);
            all.freeze()
        }
    }
}

/// Ends the body: settles the outcome (`failed`, else what was seen) and returns the bytes still
/// held (a trailing incomplete event at a clean end; nothing after a failure).
fn finish<B>(this: &mut TapProj<'_, B>, failed: Option<Outcome>) -> Bytes {
    *this.ended = true;
    let (usage, error, rest) = match &mut *this.mode {
        Mode::External | Mode::Pass => (None, false, Bytes::new()),
        Mode::Json(json) => (json.usage, false, Bytes::new()),
        Mode::Sse(sse) => {
            let rest = sse.carry.split().freeze();
            let rest = if failed.is_some() { Bytes::new() } else { rest };
            (Some(sse.tracker.usage()), sse.tracker.saw_error(), rest)
        }
    };
    let outcome = failed.unwrap_or(if error {
        Outcome::UpstreamFailure
    } else {
        Outcome::Success
    });
    this.tap.update(|o| {
        if let Some(usage) = usage {
            o.usage = usage;
        }
        o.outcome.get_or_insert(outcome);
    });
    rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::UsageSource;

    fn usage_of(chunks: &[&[u8]]) -> Option<(u64, u64)> {
        let mut json = JsonUsage::default();
        for c in chunks {
            json.feed(c);
        }
        json.usage.map(|u| (u.prompt_tokens, u.completion_tokens))
    }

    #[test]
    fn json_usage_is_found_at_any_size_and_any_split() {
        let body = br#"{"choices":[{"text":"the \"usage\": {x} word"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10},"timings":{}}"#;
        for split in 0..body.len() {
            assert_eq!(
                usage_of(&[&body[..split], &body[split..]]),
                Some((7, 3)),
                "split at {split}"
            );
        }
        // Past the old 1 MiB copy.
        let big = vec![b' '; 3 << 20];
        assert_eq!(
            usage_of(&[
                b"{\"data\":[]",
                &big,
                br#","usage":{"prompt_tokens":5,"total_tokens":5}}"#
            ]),
            Some((5, 0))
        );
        // The Responses API's names.
        assert_eq!(
            usage_of(&[br#"{"usage":{"input_tokens":4,"output_tokens":6,"total_tokens":10}}"#]),
            Some((4, 6))
        );
        assert_eq!(usage_of(&[br#"{"usage":null}"#]), None);
    }

    #[test]
    fn only_whole_events_pass_and_the_injected_usage_chunk_is_cut() {
        let mut sse = SseTap::default();
        let a = sse.pass(
            &Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"ch"),
            false,
        );
        assert_eq!(&a[..], b"data: {\"a\":1}\n\n");
        let b = sse.pass(&Bytes::from_static(b"oices\":[]}\n\n"), false);
        assert_eq!(&b[..], b"data: {\"choices\":[]}\n\n");
        let usage = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let c = sse.pass(&Bytes::from_static(usage), true);
        assert_eq!(&c[..], b"data: [DONE]\n\n");
        // A keep-alive comment is a whole event: it passes at once.
        let d = sse.pass(&Bytes::from_static(b": ping\n\n"), false);
        assert_eq!(&d[..], b": ping\n\n");
        assert_eq!(sse.tracker.usage().source, UsageSource::Reported);
        assert!(sse.tracker.saw_done());
    }
}
