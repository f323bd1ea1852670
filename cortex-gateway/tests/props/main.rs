//! Property tests: usage extraction gives the same result for any split of an SSE byte stream
//! into chunks; the body scanner finds `model` and `stream` in any valid JSON layout and refuses
//! invalid bodies.

use std::fmt::Write as _;

use cortex_gateway::scan::scan;
use cortex_gateway::sse::{SseParser, UsageTracker};
use proptest::prelude::*;
use serde_json::{Value, json};

fn capture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/llama-server-captures")
            .join(name),
    )
    .unwrap()
}

/// Events and usage of `body` fed in the chunks that `cuts` (sorted offsets) make.
fn run(body: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, String) {
    let mut p = SseParser::new();
    let mut t = UsageTracker::new();
    let mut events = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&body.len())) {
        let c = c.clamp(at, body.len());
        p.feed(&body[at..c], |d| {
            t.observe(d);
            events.push(d.to_vec());
        });
        at = c;
    }
    (
        events,
        format!(
            "{:?} error={} done={}",
            t.usage(),
            t.saw_error(),
            t.saw_done()
        ),
    )
}

/// A stream: the real captures' bodies, with line endings rewritten as `\r\n` or `\r` too.
fn streams() -> impl Strategy<Value = Vec<u8>> {
    let files = [
        "06_chat_stream.txt",
        "06b_chat_stream_include_usage.txt",
        "07b_completions_stream.txt",
    ];
    (0..files.len(), 0..3usize).prop_map(move |(f, ending)| {
        let raw = capture(files[f]);
        let eol: &[u8] = [&b"\n"[..], b"\r\n", b"\r"][ending];
        let mut out = Vec::new();
        for line in raw.split(|c| *c == b'\n') {
            out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
            out.extend_from_slice(eol);
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn usage_is_the_same_for_any_split(body in streams(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40)) {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(run(&body, &cuts), run(&body, &[]));
        // Byte by byte too.
        let every: Vec<usize> = (0..body.len()).collect();
        prop_assert_eq!(run(&body, &every).1, run(&body, &[]).1);
    }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Writes `v` with arbitrary whitespace between tokens and `\u` escapes in strings.
fn write_loose(v: &Value, ws: &mut impl Iterator<Item = u8>, out: &mut String) {
    space(ws, out);
    match v {
        Value::String(s) => {
            out.push('"');
            for ch in s.chars() {
                if ch.is_ascii_alphanumeric() && ws.next().unwrap_or(0) % 2 == 0 {
                    out.push(ch);
                } else {
                    let mut buf = [0u16; 2];
                    for u in ch.encode_utf16(&mut buf) {
                        let _ = write!(out, "\\u{u:04x}");
                    }
                }
            }
            out.push('"');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_loose(x, ws, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_loose(&Value::String(k.clone()), ws, out);
                out.push(':');
                write_loose(x, ws, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
    space(ws, out);
}

fn space(ws: &mut impl Iterator<Item = u8>, out: &mut String) {
    for _ in 0..ws.next().unwrap_or(0) % 3 {
        out.push([' ', '\n', '\t', '\r'][usize::from(ws.next().unwrap_or(0) % 4)]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_scanner_finds_model_and_stream_in_any_layout(
        model in ".*",
        stream in proptest::option::of(any::<bool>()),
        extra in proptest::collection::btree_map("[a-z_]{1,8}", json_value(), 0..6),
        order in any::<u64>(),
        ws in proptest::collection::vec(any::<u8>(), 64),
    ) {
        let mut fields: Vec<(String, Value)> = extra
            .into_iter()
            .filter(|(k, _)| k != "model" && k != "stream" && k != "stream_options")
            .collect();
        fields.push(("model".to_owned(), Value::String(model.clone())));
        if let Some(s) = stream {
            fields.push(("stream".to_owned(), Value::Bool(s)));
        }
        let n = fields.len();
        fields.rotate_left(usize::try_from(order % n as u64).unwrap());
        // Write the object by hand so field order is ours.
        let mut ws = ws.into_iter().cycle();
        let mut body = String::from("{");
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 { body.push(','); }
            write_loose(&Value::String(k.clone()), &mut ws, &mut body);
            body.push(':');
            write_loose(v, &mut ws, &mut body);
        }
        body.push('}');
        let s = scan(body.as_bytes()).unwrap();
        prop_assert_eq!(s.model.as_deref(), Some(model.as_str()));
        prop_assert_eq!(s.stream, stream == Some(true));
    }

    #[test]
    fn the_scanner_refuses_what_serde_json_refuses(v in json_value(), cut in any::<prop::sample::Index>()) {
        let body = json!({"model": "m", "x": v}).to_string();
        let cut = cut.index(body.len());
        let truncated = &body.as_bytes()[..cut];
        let valid = serde_json::from_slice::<Value>(truncated).is_ok();
        prop_assert_eq!(scan(truncated).is_ok(), valid && truncated.first() == Some(&b'{'));
    }
}
