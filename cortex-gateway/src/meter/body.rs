use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::future::Recorder;
use crate::sse::{EventKind, SseParser, UsageTracker};

/// JSON bodies are copied aside up to this size to read their `usage`.
const JSON_CAP: usize = 1 << 20;

/// How the body is watched.
#[derive(Debug)]
pub(crate) enum Mode {
    /// Not read (errors, other content types).
    Plain,
    /// Copied aside to read `usage` at the end.
    Json(Vec<u8>),
    /// Parsed event by event.
    Sse(Box<SseTap>),
}

#[derive(Debug, Default)]
pub(crate) struct SseTap {
    parser: SseParser,
    tracker: UsageTracker,
    /// Bytes of an event not yet complete, held back while usage chunks are being cut out.
    carry: BytesMut,
    /// (end offset, cut) of each event completed by the current chunk.
    spans: Vec<(usize, bool)>,
}

impl Mode {
    pub(super) fn sse() -> Self {
        Self::Sse(Box::default())
    }
}

// === impl SseTap ===

impl SseTap {
    /// Observes `chunk`; returns the bytes to forward (the chunk itself unless usage-only events
    /// are cut out).
    fn pass(&mut self, chunk: Bytes, cut_usage: bool) -> Bytes {
        let Self {
            parser,
            tracker,
            carry,
            spans,
        } = self;
        if !cut_usage {
            parser.feed(&chunk, |data| {
                tracker.observe(data);
            });
            return chunk;
        }
        spans.clear();
        parser.feed_spans(&chunk, |data, end| {
            let kind = tracker.observe(data);
            spans.push((end, kind == EventKind::UsageOnly));
        });
        let last = spans.last().map_or(0, |s| s.0);
        if carry.is_empty() && last == chunk.len() && !spans.iter().any(|s| s.1) {
            return chunk;
        }
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
    }
}

pin_project! {
    /// The response body of [`MeterUsage`](super::MeterUsage): watches usage as frames pass and
    /// records when it ends, fails or is dropped.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
        mode: Mode,
    }
}

// === impl ResponseBody ===

impl<B> ResponseBody<B> {
    pub(super) fn new(inner: B, recorder: Recorder, mode: Mode) -> Self {
        Self {
            inner,
            recorder: Some(recorder),
            mode,
        }
    }
}

fn finish(recorder: &mut Option<Recorder>, mode: &mut Mode, failed: bool) {
    let Some(mut r) = recorder.take() else { return };
    match mode {
        Mode::Sse(tap) => {
            r.usage = tap.tracker.usage();
            r.failed |= tap.tracker.saw_error();
        }
        Mode::Json(buf) => {
            let mut tracker = UsageTracker::new();
            tracker.observe(buf);
            r.usage = tracker.usage();
        }
        Mode::Plain => {}
    }
    r.failed |= failed;
    r.ended = !failed;
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        loop {
            let Some(recorder) = this.recorder.as_mut() else {
                // Recorded: pass whatever is left through.
                return this.inner.as_mut().poll_frame(cx);
            };
            match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            if !data.is_empty() {
                                recorder.first_byte.get_or_insert_with(Instant::now);
                            }
                            let data = match &mut *this.mode {
                                Mode::Sse(tap) => {
                                    let out = tap.pass(data, recorder.strip_usage);
                                    // Kept current, so a body dropped later still records what
                                    // was seen; after `[DONE]` a hang-up is the client being done,
                                    // not a disconnect (SDKs close once they read it).
                                    recorder.usage = tap.tracker.usage();
                                    recorder.failed |= tap.tracker.saw_error();
                                    recorder.ended |= tap.tracker.saw_done();
                                    out
                                }
                                Mode::Json(buf) => {
                                    if buf.len() + data.len() <= JSON_CAP {
                                        buf.extend_from_slice(&data);
                                    }
                                    data
                                }
                                Mode::Plain => data,
                            };
                            let end = this.inner.is_end_stream();
                            if end {
                                let carry = match &mut *this.mode {
                                    Mode::Sse(tap) => tap.carry.split().freeze(),
                                    _ => Bytes::new(),
                                };
                                finish(this.recorder, this.mode, false);
                                if !carry.is_empty() {
                                    let mut all = BytesMut::from(&data[..]);
                                    all.extend_from_slice(&carry);
                                    return Poll::Ready(Some(Ok(Frame::data(all.freeze()))));
                                }
                            }
                            if data.is_empty() && !end {
                                continue;
                            }
                            Frame::data(data)
                        }
                        Err(frame) => frame,
                    };
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(e)) => {
                    finish(this.recorder, this.mode, true);
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    let carry = match &mut *this.mode {
                        Mode::Sse(tap) => tap.carry.split().freeze(),
                        _ => Bytes::new(),
                    };
                    finish(this.recorder, this.mode, false);
                    if carry.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(carry))));
                }
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.recorder.is_none() && self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.mode {
            Mode::Sse(_) => SizeHint::default(),
            _ => self.inner.size_hint(),
        }
    }
}
