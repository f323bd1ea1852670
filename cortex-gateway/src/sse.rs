//! Server-sent events as the engines send them, parsed incrementally, and the token usage they
//! carry.
//!
//! [`SseParser`] takes the bytes of a `text/event-stream` body in whatever chunks the network
//! delivers and yields each event's `data` once the blank line that ends it has arrived (lines end
//! in `\n`, `\r\n` or `\r`; several `data:` lines join with `\n`; comments and other fields are
//! skipped), as the SSE specification reads it. [`UsageTracker`] reads the events of an OpenAI
//! stream and keeps the usage: the `usage` object when the engine reports one (the final chunk
//! with `stream_options.include_usage`), else llama.cpp's `timings` (`cache_n + prompt_n` prompt
//! tokens, `predicted_n` completion tokens), else missing; and whether an `error` event came.
//! Written by hand: the SSE crates on crates.io are clients that own the connection, not
//! incremental parsers over a body a proxy forwards untouched.

use serde::Deserialize;

/// Bytes of an unfinished event kept at most (1 MiB): a longer event is dropped, not buffered
/// without bound.
pub const MAX_EVENT: usize = 1 << 20;

/// An incremental SSE parser.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    skip_lf: bool,
    overflow: bool,
}

// === impl SseParser ===

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `chunk`; calls `on_event` with the data of each event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(&[u8])) {
        self.feed_spans(chunk, |data, _| on_event(data));
    }

    /// Feeds `chunk`; calls `on_event` with the data of each event it completes and the offset in
    /// `chunk` just past the line end that completed it (where the next event's bytes begin).
    pub fn feed_spans(&mut self, chunk: &[u8], mut on_event: impl FnMut(&[u8], usize)) {
        self.feed_boundaries(chunk, |data, end| {
            if let Some(data) = data {
                on_event(data, end);
            }
        });
    }

    /// Feeds `chunk`; calls `on_event` at every blank line (where an event, dispatched or not,
    /// ends) with the event's data if it has any, and the offset just past that line.
    pub(crate) fn feed_boundaries(
        &mut self,
        chunk: &[u8],
        mut on_event: impl FnMut(Option<&[u8]>, usize),
    ) {
        let mut i = 0;
        while let Some(rest) = chunk.get(i..).filter(|r| !r.is_empty()) {
            if self.skip_lf {
                self.skip_lf = false;
                if rest[0] == b'\n' {
                    i += 1;
                    continue;
                }
            }
            let Some(off) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.push_line(rest);
                break;
            };
            self.push_line(&rest[..off]);
            self.skip_lf = rest[off] == b'\r';
            let end = i + off + 1;
            self.end_line(&mut |data: Option<&[u8]>| on_event(data, end));
            i = end;
        }
    }

    /// Appends to the current line, up to [`MAX_EVENT`] bytes.
    fn push_line(&mut self, bytes: &[u8]) {
        let room = MAX_EVENT.saturating_sub(self.line.len());
        if bytes.len() > room {
            self.line.extend_from_slice(&bytes[..room]);
            self.overflow = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(Option<&[u8]>)) {
        if self.line.is_empty() {
            if self.has_data && !self.overflow {
                on_event(Some(&self.data));
            } else {
                on_event(None);
            }
            self.data.clear();
            self.has_data = false;
            self.overflow = false;
            return;
        }
        let line = std::mem::take(&mut self.line);
        let (field, value) = match line.iter().position(|c| *c == b':') {
            Some(0) => (&line[..0], &line[..0]), // a comment
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &line[..0]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            if self.data.len() + value.len() <= MAX_EVENT {
                self.data.extend_from_slice(value);
            } else {
                self.overflow = true;
            }
            self.has_data = true;
        }
        self.line = line;
        self.line.clear();
    }
}

/// Where a usage figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// The engine's `usage` object.
    Reported,
    /// llama.cpp's `timings`.
    Timings,
    /// Neither arrived.
    Missing,
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Total tokens.
    pub total_tokens: u64,
    /// Where the figures came from.
    pub source: UsageSource,
}

impl Usage {
    /// No usage known.
    pub const MISSING: Self = Self {
        prompt_tokens: 0,
        completion_tokens: 0,
        total_tokens: 0,
        source: UsageSource::Missing,
    };
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default)]
    usage: Option<UsageJson>,
    /// The Responses API's events: `response.completed` carries the usage in `response`.
    #[serde(default)]
    response: Option<ResponseJson>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a str>,
    #[serde(default)]
    timings: Option<Timings>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
    #[serde(borrow, default)]
    choices: Option<&'a serde_json::value::RawValue>,
}

/// Whether a response's `Content-Type` is `text/event-stream` (with or without parameters).
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// Whether an event's data is an `error` object (`{"error": ..}`), as engines and the gateway end a
/// failed stream.
pub fn is_error_event(data: &[u8]) -> bool {
    has_key(data, b"\"error\"")
        && serde_json::from_slice::<Chunk<'_>>(data).is_ok_and(|c| c.error.is_some())
}

fn has_key(data: &[u8], key: &[u8]) -> bool {
    memchr::memmem::find(data, key).is_some()
}

#[derive(Deserialize)]
struct ResponseJson {
    #[serde(default)]
    usage: Option<UsageJson>,
}

/// Chat and completions name the counts `prompt_tokens` / `completion_tokens`; the Responses API
/// `input_tokens` / `output_tokens`.
#[derive(Deserialize)]
#[allow(clippy::struct_field_names, reason = "OpenAI's field names")]
struct UsageJson {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: u64,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[allow(clippy::struct_field_names, reason = "llama.cpp's field names")]
struct Timings {
    #[serde(default)]
    cache_n: u64,
    #[serde(default)]
    prompt_n: u64,
    #[serde(default)]
    predicted_n: u64,
}

/// What one event of an OpenAI stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `[DONE]`.
    Done,
    /// The usage-only chunk `include_usage` adds (`"choices": []` and a `usage` object).
    UsageOnly,
    /// An `error` event.
    Error,
    /// Anything else.
    Other,
}

/// Reads usage and errors from the events of an OpenAI stream (or a whole non-streamed body).
#[derive(Debug, Clone, Copy)]
pub struct UsageTracker {
    usage: Usage,
    error: bool,
    done: bool,
}

impl Default for UsageTracker {
    fn default() -> Self {
        Self {
            usage: Usage::MISSING,
            error: false,
            done: false,
        }
    }
}

// === impl UsageTracker ===

impl UsageTracker {
    /// A tracker with nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one event's data (or a whole JSON response body); says what it was.
    pub fn observe(&mut self, data: &[u8]) -> EventKind {
        if data.trim_ascii() == b"[DONE]" {
            self.done = true;
            return EventKind::Done;
        }
        // Token chunks, nearly every event of a stream, carry none of the three keys: skip the
        // JSON parse for them (this runs once per streamed chunk).
        if !has_key(data, b"\"usage\"")
            && !has_key(data, b"\"timings\"")
            && !has_key(data, b"\"error\"")
            && !has_key(data, b"response.failed")
        {
            return EventKind::Other;
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
            return EventKind::Other;
        };
        if chunk.error.is_some() || matches!(chunk.kind, Some("error" | "response.failed")) {
            self.error = true;
            return EventKind::Error;
        }
        let usage = chunk
            .usage
            .as_ref()
            .or_else(|| chunk.response.as_ref().and_then(|r| r.usage.as_ref()));
        if let Some(u) = usage {
            self.usage = Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u
                    .total_tokens
                    .unwrap_or(u.prompt_tokens + u.completion_tokens),
                source: UsageSource::Reported,
            };
        } else if let (Some(t), false) =
            (&chunk.timings, self.usage.source == UsageSource::Reported)
        {
            let prompt = t.cache_n + t.prompt_n;
            self.usage = Usage {
                prompt_tokens: prompt,
                completion_tokens: t.predicted_n,
                total_tokens: prompt + t.predicted_n,
                source: UsageSource::Timings,
            };
        }
        let no_choices = chunk.choices.is_some_and(|c| {
            let c = c.get().trim();
            c.starts_with('[')
                && c.get(1..c.len() - 1)
                    .is_some_and(|inner| inner.trim().is_empty())
        });
        if chunk.usage.is_some() && no_choices {
            EventKind::UsageOnly
        } else {
            EventKind::Other
        }
    }

    /// The usage so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Whether an `error` event arrived.
    pub fn saw_error(&self) -> bool {
        self.error
    }

    /// Whether `[DONE]` arrived.
    pub fn saw_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |d| out.push(String::from_utf8_lossy(d).into_owned()));
        }
        out
    }

    #[test]
    fn parses_events_split_anywhere_with_any_line_ending() {
        assert_eq!(
            events(&[
                b"data: a\n\nda",
                b"ta: b\r\n\r",
                b"\ndata:c\rdata: d\r\r: comment\n\nevent: x\n\n"
            ]),
            ["a", "b", "c\nd"]
        );
        // An unfinished event is not yielded.
        assert_eq!(events(&[b"data: a\n"]), Vec::<String>::new());
    }

    #[test]
    fn usage_from_the_real_llama_server_captures() {
        for (file, want) in [
            (
                "06b_chat_stream_include_usage.txt",
                (31, 24, UsageSource::Reported),
            ),
            ("06_chat_stream.txt", (31, 24, UsageSource::Timings)),
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../testdata/llama-server-captures")
                .join(file);
            let raw = std::fs::read(path).unwrap();
            // The captures hold the HTTP head, then the body; head lines have no `data` field,
            // so the parser skips them like any unknown field.
            let body = &raw[..];
            let mut t = UsageTracker::new();
            let mut p = SseParser::new();
            let mut kinds = Vec::new();
            p.feed(body, |d| kinds.push(t.observe(d)));
            let u = t.usage();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.source),
                want,
                "{file}"
            );
            assert!(t.saw_done() && !t.saw_error());
            assert_eq!(
                kinds.contains(&EventKind::UsageOnly),
                want.2 == UsageSource::Reported
            );
        }
    }
}
