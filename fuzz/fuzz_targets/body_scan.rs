//! The gateway's request body scanner: any bytes give a result or an error, never a panic; a
//! body it accepts is valid JSON, and splicing `include_usage` keeps it valid JSON.
//!
//! The oracle is `serde_json::Value`, which also refuses what JSON's grammar allows but a `Value`
//! cannot hold: numbers beyond `f64` (`1e999`) and lone UTF-16 surrogate escapes (`"\ud800"`,
//! which RFC 8259 §8.2 leaves to the receiver). The scanner forwards those (the engine answers for
//! itself), so those two refusals are not failures here. `seeds/body_scan` holds, by hand, a
//! plain body and each case that once failed here (a body not UTF-8, a number beyond f64, lone
//! surrogates), replayed on every run.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// The body as a `Value`; `None` when it is valid JSON a `Value` cannot hold. Panics when it is
/// not JSON.
fn json(bytes: &[u8], what: &str) -> Option<serde_json::Value> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => Some(v),
        Err(e) if e.to_string().starts_with("number out of range") => None,
        // A lone surrogate: "lone leading surrogate…", or a leading one not followed by `\u`
        // ("unexpected end of hex escape"; the hex digits themselves the scan checks too).
        Err(e) if e.to_string().contains("surrogate") || e.to_string().contains("hex escape") => {
            None
        }
        Err(e) => panic!("{what} is not JSON: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(scanned) = cortex_gateway::scan::scan(data) {
        json(data, "an accepted body");
        let spliced = scanned.with_usage_requested(&Bytes::copy_from_slice(data));
        if let Some(v) = json(&spliced, "the spliced body") {
            if scanned.stream {
                assert_eq!(v["stream_options"]["include_usage"], true);
            }
        }
    }
});
