//! The request body scanner: finds `model`, `stream` and `stream_options.include_usage` in an
//! OpenAI request body without re-serializing it, and splices `include_usage` in when the gateway
//! needs usage from a stream the client did not ask it of.
//!
//! Parsing is `serde_json`'s (the whole body is validated; a body that is not a JSON object, or
//! whose `model` is not a string, is refused with the reason), reading only the three fields and
//! borrowing `stream_options` as a raw slice of the original bytes. The bytes forwarded upstream are
//! the client's own, untouched, except for the one splice.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

/// What the gateway needs from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scanned {
    /// `model`, when present.
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`: the client asked for the usage chunk.
    pub include_usage: bool,
    /// Byte offset of the `}` that closes `stream_options`, when it is an object.
    stream_options_end: Option<usize>,
    /// Byte offset of the `}` that closes the body.
    body_end: usize,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError(String);

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScanError {}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Scans `body`.
///
/// # Errors
///
/// A [`ScanError`] with a message fit for a 400 response: invalid JSON (with `serde_json`'s line
/// and column), not an object, or a field of the wrong type (named by its path).
pub fn scan(body: &[u8]) -> Result<Scanned, ScanError> {
    if body
        .iter()
        .find(|c| !c.is_ascii_whitespace())
        .is_some_and(|c| *c != b'{')
    {
        return Err(ScanError(
            "the request body must be a JSON object".to_owned(),
        ));
    }
    // JSON is UTF-8 (RFC 8259 §8.1); serde_json checks only the strings it reads, not those of the
    // fields it skips, so the whole body is checked first (found by the `body_scan` fuzz target).
    let text = std::str::from_utf8(body).map_err(|e| {
        ScanError(format!(
            "the request body is not valid JSON: invalid UTF-8 at byte {}",
            e.valid_up_to()
        ))
    })?;
    let de = &mut serde_json::Deserializer::from_str(text);
    let probe: Probe<'_> = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        ScanError(if !inner.is_data() {
            format!("the request body is not valid JSON: {msg}")
        } else if msg.contains("expected struct") {
            "the request body must be a JSON object".to_owned()
        } else if path == "." {
            msg
        } else {
            format!("`{path}`: {msg}")
        })
    })?;
    de.end()
        .map_err(|e| ScanError(format!("the request body is not valid JSON: {e}")))?;
    let body_end = last_brace(body)
        .ok_or_else(|| ScanError("the request body must be a JSON object".to_owned()))?;
    let (include_usage, stream_options_end) = match probe.stream_options {
        Some(raw) if raw.get().trim_start().starts_with('{') => {
            let so: StreamOptions = serde_json::from_str(raw.get())
                .map_err(|e| ScanError(format!("`stream_options`: {e}")))?;
            // The raw value borrows from `body`: its offset is the pointer difference.
            let start = (raw.get().as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
            let end = start + last_brace(raw.get().as_bytes()).unwrap_or(0);
            (so.include_usage == Some(true), Some(end))
        }
        _ => (false, None),
    };
    Ok(Scanned {
        model: probe.model.map(Cow::into_owned),
        stream: probe.stream == Some(true),
        include_usage,
        stream_options_end,
        body_end,
    })
}

fn last_brace(b: &[u8]) -> Option<usize> {
    let i = b.iter().rposition(|c| !c.is_ascii_whitespace())?;
    (b.get(i) == Some(&b'}')).then_some(i)
}

/// Whether the object whose closing brace is at `end` has no members (`{}` or `{ }`).
fn is_empty_object(body: &[u8], end: usize) -> bool {
    body.get(..end)
        .and_then(|b| b.iter().rposition(|c| !c.is_ascii_whitespace()))
        .is_some_and(|i| body.get(i) == Some(&b'{'))
}

impl Scanned {
    /// The body to send upstream so that a stream ends with a usage chunk: `body` itself when it
    /// is not a stream or the client asked for usage; otherwise `body` with
    /// `"include_usage":true` appended to `stream_options` (or `"stream_options":{…}` appended to
    /// the body). Appending last makes it win over an earlier `"include_usage":false` in every
    /// JSON parser the engines use (last duplicate key wins).
    pub fn with_usage_requested(&self, body: &Bytes) -> Bytes {
        if !self.stream || self.include_usage {
            return body.clone();
        }
        let (at, insert): (usize, &[u8]) = match self.stream_options_end {
            Some(end) => (end, b"\"include_usage\":true"),
            None => (
                self.body_end,
                b"\"stream_options\":{\"include_usage\":true}",
            ),
        };
        let comma = !is_empty_object(body, at);
        let mut out = BytesMut::with_capacity(body.len() + insert.len() + 1);
        out.extend_from_slice(body.get(..at).unwrap_or_default());
        if comma {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(insert);
        out.extend_from_slice(body.get(at..).unwrap_or_default());
        out.freeze()
    }
}

/// `body` (a JSON object, already [`scan`]ned) sent to `model` instead: `"model":"…"` appended as
/// its last member, which the engines' JSON parsers keep over the client's (the last duplicate key
/// wins, as for [`Scanned::with_usage_requested`]). Used for aliases and fallbacks.
pub fn with_model(body: &Bytes, model: &str) -> Bytes {
    let Some(end) = last_brace(body) else {
        return body.clone();
    };
    let value = serde_json::to_string(model).unwrap_or_else(|_| String::from("\"\""));
    let comma = !is_empty_object(body, end);
    let mut out = BytesMut::with_capacity(body.len() + value.len() + 10);
    out.extend_from_slice(body.get(..end).unwrap_or_default());
    if comma {
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(b"\"model\":");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(body.get(end..).unwrap_or_default());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splice(body: &str) -> String {
        let b = Bytes::copy_from_slice(body.as_bytes());
        String::from_utf8(
            scan(body.as_bytes())
                .unwrap()
                .with_usage_requested(&b)
                .to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn finds_fields_in_any_layout() {
        let s = scan(br#" { "messages": [{"role":"user","content":"{\"model\":1}"}], "stream" : true, "model":"m\u00e9" } "#).unwrap();
        assert_eq!(s.model.as_deref(), Some("mé"));
        assert!(s.stream && !s.include_usage);
        let s = scan(br#"{"model":"a","stream":false}"#).unwrap();
        assert!(!s.stream);
        assert_eq!(scan(b"{}").unwrap().model, None);
    }

    #[test]
    fn refuses_what_is_not_a_json_object() {
        for (body, want) in [
            (&b"[1]"[..], "must be a JSON object"),
            (b"{\"model\":", "not valid JSON"),
            (b"{\"model\":3}", "`model`: invalid type: integer `3`"),
            (b"{\"model\":\"a\",\"model\":\"b\"}", "duplicate field"),
            (b"{\"stream\":\"yes\"}", "`stream`: invalid type"),
            (b"{} x", "not valid JSON: trailing characters"),
            (b"", "not valid JSON"),
            // Invalid UTF-8 in a field the scan skips (found by the `body_scan` fuzz target).
            (
                b" {\" \":\"\xff\xff\" }",
                "not valid JSON: invalid UTF-8 at byte 7",
            ),
        ] {
            let err = scan(body).unwrap_err().to_string();
            assert!(err.contains(want), "{body:?}: {err}");
        }
    }

    #[test]
    fn splices_include_usage_where_it_wins() {
        assert_eq!(
            splice(r#"{"model":"m","stream":true}"#),
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
        );
        assert_eq!(
            splice(r#"{"stream":true,"stream_options":{"include_usage":false} }"#),
            r#"{"stream":true,"stream_options":{"include_usage":false,"include_usage":true} }"#
        );
        assert_eq!(
            splice(r#"{"stream":true,"stream_options":{ }}"#),
            r#"{"stream":true,"stream_options":{ "include_usage":true}}"#
        );
        // Not a stream, or usage already asked for: the body is untouched.
        assert_eq!(splice(r#"{"model":"m"}"#), r#"{"model":"m"}"#);
        let asked = r#"{"stream":true,"stream_options":{"include_usage":true}}"#;
        assert_eq!(splice(asked), asked);
        // The spliced body still parses, and a last-key-wins parser (llama.cpp's nlohmann::json,
        // Python's json for vLLM, serde_json::Value) reads include_usage as true.
        let out = splice(r#"{"stream":true,"stream_options":{"include_usage":false}}"#);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }
}
