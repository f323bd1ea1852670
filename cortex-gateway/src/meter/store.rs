//! What the usage databases share (features `sqlite`, `postgres`): the query, the error, and the
//! batched writer that keeps every database write off the request path.
//!
//! [`Writer`] hands each record to a bounded channel and returns (`record` never blocks); one
//! thread commits rows in batches (up to 1,024 per transaction) through a [`Backend`]. When a
//! commit fails — the database slow, locked, restarting or down — the batch is retried with
//! back-off (50 ms doubling to 5 s) while new rows wait in the channel up to its bound; beyond the
//! bound a row is dropped, counted (`cortex_usage_dropped_total`) and logged. So at most
//! `buffer + 1,024` rows are held in memory and no row is lost unless the buffer overflowed.
//! Written by hand: a channel and a loop; no crate batches writes to an arbitrary database
//! with these guarantees.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{UsageEntry, UsageRecord, UsageTotals};
use crate::sse::UsageSource;

/// Rows committed per transaction, at most.
pub(crate) const BATCH: usize = 1024;

/// Rows waiting for the writer, by default.
pub const DEFAULT_USAGE_BUFFER: usize = 65_536;

/// Why a usage database could not be opened or read.
#[derive(Debug)]
#[non_exhaustive]
pub enum UsageStoreError {
    /// SQLite refused, on this file.
    #[cfg(feature = "sqlite")]
    Sqlite {
        /// The database file.
        path: std::path::PathBuf,
        /// What was being done.
        doing: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// PostgreSQL refused, or could not be reached.
    #[cfg(feature = "postgres")]
    Postgres {
        /// The server, as `host:port/dbname` (never the password).
        server: String,
        /// What was being done.
        doing: &'static str,
        /// The client's error.
        source: postgres::Error,
    },
    /// The writer thread could not be started.
    Thread(std::io::Error),
}

impl std::fmt::Display for UsageStoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite {
                path,
                doing,
                source,
            } => write!(f, "usage database {}: {doing}: {source}", path.display()),
            #[cfg(feature = "postgres")]
            Self::Postgres {
                server,
                doing,
                source,
            } => write!(f, "usage database postgres://{server}: {doing}: {source}"),
            Self::Thread(e) => write!(f, "usage database: starting the writer thread: {e}"),
        }
    }
}

impl std::error::Error for UsageStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite { source, .. } => Some(source),
            #[cfg(feature = "postgres")]
            Self::Postgres { source, .. } => Some(source),
            Self::Thread(e) => Some(e),
        }
    }
}

/// Which records a usage database's `query` sums: every field unset means all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageQuery {
    /// Only this key id.
    pub key_id: Option<String>,
    /// Only this served name.
    pub model: Option<String>,
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
    /// Only records before this time.
    pub until: Option<SystemTime>,
    /// Totals per time bucket of this length (buckets start at multiples of it since the Unix
    /// epoch, to the millisecond), each row's [`UsageEntry::from`] its bucket's start; `None`:
    /// one total over the whole range.
    pub every: Option<std::time::Duration>,
}

impl UsageQuery {
    /// Only `key_id`'s records.
    #[must_use]
    pub fn key(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// Only `model`'s records.
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Records in `[since, until)`; either end may be open.
    #[must_use]
    pub fn between(mut self, since: Option<SystemTime>, until: Option<SystemTime>) -> Self {
        self.since = since;
        self.until = until;
        self
    }

    /// Totals per time bucket of length `every` (at least a millisecond), as for a chart.
    #[must_use]
    pub fn every(mut self, every: std::time::Duration) -> Self {
        self.every = Some(every.max(std::time::Duration::from_millis(1)));
        self
    }

    /// The bucket length in milliseconds, for the SQL of a database store.
    pub(crate) fn every_ms(&self) -> Option<i64> {
        self.every
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1))
    }
}

/// The totals of one key and model from a query's columns: requests, prompt, completion and
/// total tokens, records without usage, failures, hang-ups.
/// `from_ms` is the time bucket's start, for a query by time bucket.
pub(crate) fn entry(
    key_id: Option<String>,
    model: Option<String>,
    from_ms: Option<i64>,
    counts: [i64; 7],
) -> UsageEntry {
    let [requests, prompt, completion, total, missing, failed, gone] =
        counts.map(|v| u64::try_from(v).unwrap_or(0));
    UsageEntry {
        key_id: key_id.map(Arc::from),
        model: model.map(Arc::from),
        from: from_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| UNIX_EPOCH + std::time::Duration::from_millis(ms)),
        totals: UsageTotals {
            requests,
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total,
            usage_missing: missing,
            failed,
            client_disconnected: gone,
        },
    }
}

/// A key's allowed models as stored: a JSON array, or NULL for all.
pub(crate) fn models_column(models: Option<&Vec<String>>) -> Option<String> {
    models.map(|m| serde_json::Value::from(m.clone()).to_string())
}

/// A key read back from its columns: id, digest, models (JSON), limit, creator.
pub(crate) fn key_record(
    id: String,
    hash: &str,
    models: Option<&str>,
    rpm: Option<i64>,
    created_by: Option<String>,
) -> Result<crate::auth::KeyRecord, String> {
    let hash = crate::auth::KeyHash::parse(hash).map_err(|e| format!("key `{id}`: {e}"))?;
    let models = models
        .map(|m| {
            serde_json::from_str::<Vec<String>>(m).map_err(|e| format!("key `{id}`: models: {e}"))
        })
        .transpose()?;
    let mut record = crate::auth::KeyRecord::new(id, hash);
    record.models = models;
    record.requests_per_minute = rpm
        .and_then(|r| u32::try_from(r).ok())
        .and_then(std::num::NonZeroU32::new);
    record.created_by = created_by;
    Ok(record)
}

/// One record and when it was recorded.
pub(crate) struct Row {
    pub(crate) at_ms: i64,
    pub(crate) record: UsageRecord,
}

pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn source_name(source: UsageSource) -> &'static str {
    match source {
        UsageSource::Reported => "reported",
        UsageSource::Timings => "timings",
        UsageSource::Missing => "missing",
    }
}

/// A database rows are committed to, by the writer thread.
pub(crate) trait Backend: Send + 'static {
    /// Commits `rows` in one transaction, or fails (the batch is retried, the rows kept).
    ///
    /// `batch` numbers the batches of one writer, from 1, each retry of a batch with the same
    /// number: a backend whose commit can fail *after* it took effect (a server that died before
    /// its answer arrived) uses it to commit each batch once.
    fn commit(&mut self, batch: u64, rows: &[Row]) -> Result<(), String>;
}

enum Msg {
    Row(Box<Row>),
    Flush(SyncSender<()>),
}

/// The channel and the thread that commits what comes through it.
#[derive(Debug)]
pub(crate) struct Writer {
    /// The database, for log lines.
    what: String,
    /// `None` only while dropping.
    tx: Option<SyncSender<Msg>>,
    dropped: AtomicU64,
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl Writer {
    /// Starts the writer thread over `backend`, made on that thread by `connect` (some clients
    /// must live on the thread that uses them); its error is returned here.
    pub(crate) fn start<B: Backend>(
        what: String,
        rows: usize,
        connect: impl FnOnce() -> Result<B, UsageStoreError> + Send + 'static,
    ) -> Result<Self, UsageStoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(rows.max(1));
        let closing = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = std::sync::mpsc::sync_channel(1);
        let thread = {
            let closing = Arc::clone(&closing);
            std::thread::Builder::new()
                .name("cortex-usage-writer".to_owned())
                .spawn(move || match connect() {
                    Ok(mut backend) => {
                        let _ = ready_tx.send(Ok(()));
                        write_loop(&mut backend, &rx, &closing);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(UsageStoreError::Thread)?
        };
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(UsageStoreError::Thread(std::io::Error::other(
                    "the writer thread ended before it was ready",
                )));
            }
        }
        Ok(Self {
            what,
            tx: Some(tx),
            dropped: AtomicU64::new(0),
            closing,
            thread: Some(thread),
        })
    }

    /// Records dropped because the buffer was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every record handed over before this call is committed (returns at once
    /// when the writer is gone).
    pub(crate) fn flush(&self) {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Flush(ack)).is_ok());
        if sent {
            let _ = done.recv();
        }
    }

    /// Hands `record` to the writer, or drops and counts it when the buffer is full.
    pub(crate) fn record(&self, record: UsageRecord) {
        let row = Msg::Row(Box::new(Row {
            at_ms: millis(SystemTime::now()),
            record,
        }));
        let Some(tx) = self.tx.as_ref() else { return };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(row) {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("cortex_usage_dropped_total").increment(1);
            // Once, then every 10,000th: the count is in the metric.
            if before % 10_000 == 0 {
                tracing::warn!(
                    database = %self.what,
                    dropped = before + 1,
                    "usage buffer full (the database is slow, locked or down): dropping records"
                );
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has committed what is buffered (or, with
        // the database unwritable, after 10 s more of retries).
        self.closing.store(true, Ordering::Relaxed);
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Commits rows in batches until the channel closes; a batch that fails is retried with
/// back-off, up to 5 s apart, while new rows wait in the channel.
fn write_loop<B: Backend>(backend: &mut B, rx: &Receiver<Msg>, closing: &AtomicBool) {
    let mut batch: Vec<Row> = Vec::with_capacity(BATCH);
    let mut acks: Vec<SyncSender<()>> = Vec::new();
    let mut number = 0_u64;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Row(row) => batch.push(*row),
                Msg::Flush(ack) => acks.push(ack),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let mut wait = Duration::from_millis(50);
        let mut closing_since: Option<std::time::Instant> = None;
        let mut failures = 0_u32;
        if !batch.is_empty() {
            number += 1;
        }
        while !batch.is_empty() {
            let Err(e) = backend.commit(number, &batch) else {
                if failures > 0 {
                    tracing::info!(
                        retries = failures,
                        "usage database: writing again after failed commits"
                    );
                }
                break;
            };
            if closing.load(Ordering::Relaxed) {
                let since = *closing_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(10) {
                    tracing::error!(error = %e, rows = batch.len(), "usage database: giving up at shutdown; these rows are lost");
                    break;
                }
            }
            // Once, then every 20th retry (about every 100 s while the database is down).
            if failures % 20 == 0 {
                tracing::warn!(error = %e, rows = batch.len(), "usage database: commit failed; retrying");
            }
            failures += 1;
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        batch.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}
