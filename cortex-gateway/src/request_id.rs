//! `x-request-id`: kept when the client sent one, else created.
//!
//! Written by hand rather than with tower-http's `SetRequestIdLayer`: the id is made in the
//! middle of the stack (the meter and the proxy both need it, with or without the other layers)
//! from a per-process random prefix and a counter — no UUID dependency, no allocation beyond the
//! header — and tower-http's layer would add a service wrapper to every stack for one header.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderValue};

/// The header name.
pub const X_REQUEST_ID: &str = "x-request-id";

/// The request's id: its `x-request-id` when present, else a new one (`req-` and 24 hex digits:
/// a per-process random prefix and a counter), written into `headers`.
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if let Some(id) = headers.get(X_REQUEST_ID) {
        return id.clone();
    }
    let prefix = *PREFIX.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(u64::from(std::process::id()));
        hasher.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `req-`, 8 hex digits of the prefix, 16 of the counter: written in place (no `format!`).
    let mut id = *b"req-000000000000000000000000";
    let digits = u128::from(prefix >> 32) << 64 | u128::from(n);
    for (i, byte) in id[4..].iter_mut().rev().enumerate() {
        *byte = b"0123456789abcdef"[((digits >> (4 * i)) & 0xf) as usize];
    }
    #[allow(
        clippy::missing_panics_doc,
        reason = "hex digits are always a valid header value"
    )]
    let value = HeaderValue::from_bytes(&id).expect("hex digits are a valid header value");
    headers.insert(X_REQUEST_ID, value.clone());
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_distinct_ids_and_keeps_a_clients() {
        let mut a = HeaderMap::new();
        let mut b = HeaderMap::new();
        let (ia, ib) = (ensure(&mut a), ensure(&mut b));
        assert_ne!(ia, ib);
        for id in [&ia, &ib] {
            let text = id.to_str().unwrap();
            assert_eq!(text.len(), 28, "{text}");
            assert!(text.starts_with("req-"), "{text}");
            assert!(text[4..].bytes().all(|c| c.is_ascii_hexdigit()), "{text}");
        }
        // The counter is the last 16 digits; consecutive ids share the prefix.
        assert_eq!(ia.as_bytes()[..12], ib.as_bytes()[..12]);
        assert_eq!(a.get(X_REQUEST_ID), Some(&ia));

        let mut c = HeaderMap::new();
        c.insert(X_REQUEST_ID, HeaderValue::from_static("client-7"));
        assert_eq!(ensure(&mut c), "client-7");
    }
}
