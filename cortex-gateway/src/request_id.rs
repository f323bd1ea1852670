//! `x-request-id`: kept when the client sent one, else created.

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
    let id = format!("req-{:08x}{n:016x}", prefix >> 32);
    #[allow(
        clippy::missing_panics_doc,
        reason = "hex digits are always a valid header value"
    )]
    let value = HeaderValue::try_from(id).expect("hex digits are a valid header value");
    headers.insert(X_REQUEST_ID, value.clone());
    value
}
