use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cortex_core::{EngineKind, InstanceId};

use crate::sse::{Usage, UsageSource};

/// What one request used.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UsageRecord {
    /// The request's `x-request-id`.
    pub request_id: String,
    /// The caller's key id, when auth ran.
    pub key_id: Option<Arc<str>>,
    /// The served name asked for, when routed.
    pub model: Option<Arc<str>>,
    /// The replica that answered (its index), when one was picked.
    pub replica: Option<u32>,
    /// The runtime instance of that replica.
    pub instance: Option<InstanceId>,
    /// Its engine.
    pub engine: Option<EngineKind>,
    /// The status answered; `None` when no response was produced (the client left first, or the
    /// inner service failed).
    pub status: Option<u16>,
    /// Tokens, and where they came from.
    pub usage: Usage,
    /// From the request's arrival to the body's end (or the drop).
    pub latency: Duration,
    /// From the request's arrival to the first byte of the response body.
    pub time_to_first_token: Option<Duration>,
    /// Whether the answer was a stream.
    pub streamed: bool,
    /// Whether the client went away before the end.
    pub client_disconnected: bool,
    /// Whether the request failed: an inner error, a failing body or an `error` event.
    pub failed: bool,
}

impl UsageRecord {
    /// A record of request `request_id` with nothing else known yet (no key, model, replica or
    /// status; usage missing): for a sink's own tests, or to replay records into a sink.
    pub fn new(request_id: impl Into<String>) -> Self {
        Self {
            request_id: request_id.into(),
            key_id: None,
            model: None,
            replica: None,
            instance: None,
            engine: None,
            status: None,
            usage: crate::sse::Usage::MISSING,
            latency: Duration::ZERO,
            time_to_first_token: None,
            streamed: false,
            client_disconnected: false,
            failed: false,
        }
    }
}

/// Receives usage records. Implemented for closures `Fn(UsageRecord)`.
///
/// `record` runs on the task that ends the response (or drops it) and must not block: hand the
/// record to a channel or an in-memory aggregate.
pub trait UsageSink: Send + Sync + 'static {
    /// Takes one record.
    fn record(&self, record: UsageRecord);
}

impl<F> UsageSink for F
where
    F: Fn(UsageRecord) + Send + Sync + 'static,
{
    fn record(&self, record: UsageRecord) {
        self(record);
    }
}

impl<U: UsageSink + ?Sized> UsageSink for Arc<U> {
    fn record(&self, record: UsageRecord) {
        (**self).record(record);
    }
}

/// Totals of some requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageTotals {
    /// Requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Total tokens.
    pub total_tokens: u64,
    /// Requests whose usage was missing.
    pub usage_missing: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Requests whose client went away first.
    pub client_disconnected: u64,
}

/// One row of [`InMemoryUsage::totals`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageEntry {
    /// The key id (`None`: requests without auth).
    pub key_id: Option<Arc<str>>,
    /// The model (`None`: requests not routed).
    pub model: Option<Arc<str>>,
    /// The start of the time bucket these totals cover, for a query with
    /// [`UsageQuery::every`](crate::meter::UsageQuery::every); `None` otherwise.
    pub from: Option<std::time::SystemTime>,
    /// The totals.
    pub totals: UsageTotals,
}

type Key = (Option<Arc<str>>, Option<Arc<str>>);

/// Usage totals by key and model, in memory.
#[derive(Debug, Default)]
pub struct InMemoryUsage {
    totals: Mutex<HashMap<Key, UsageTotals>>,
}

// === impl InMemoryUsage ===

impl InMemoryUsage {
    /// No usage yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The totals, sorted by key id and model.
    pub fn totals(&self) -> Vec<UsageEntry> {
        let map = self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<UsageEntry> = map
            .iter()
            .map(|((key_id, model), totals)| UsageEntry {
                key_id: key_id.clone(),
                model: model.clone(),
                from: None,
                totals: *totals,
            })
            .collect();
        out.sort_by(|a, b| (&a.key_id, &a.model).cmp(&(&b.key_id, &b.model)));
        out
    }
}

impl UsageSink for InMemoryUsage {
    fn record(&self, record: UsageRecord) {
        let mut map = self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let t = map.entry((record.key_id, record.model)).or_default();
        t.requests += 1;
        t.prompt_tokens += record.usage.prompt_tokens;
        t.completion_tokens += record.usage.completion_tokens;
        t.total_tokens += record.usage.total_tokens;
        t.usage_missing += u64::from(record.usage.source == UsageSource::Missing);
        t.failed += u64::from(record.failed);
        t.client_disconnected += u64::from(record.client_disconnected);
    }
}
