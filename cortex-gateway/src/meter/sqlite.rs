//! Usage records kept in an embedded SQLite database (feature `sqlite`; SQLite is compiled in by
//! `rusqlite`'s `bundled` feature, so there is nothing to install).
//!
//! [`SqliteUsage`] is a [`UsageSink`] that never blocks or slows a response: `record` hands the
//! row to a bounded channel and returns; one writer thread commits rows in batches (up to 1,024
//! per transaction, WAL journal). When the database is slow or locked, rows wait in the channel
//! up to its bound ([`SqliteUsage::with_buffer`], default 65,536) and the batch being written
//! is retried with back-off; beyond the bound a row is dropped, counted
//! ([`SqliteUsage::dropped`], `cortex_usage_dropped_total`) and logged — the gateway keeps
//! serving. (`PostgresUsage`, feature `postgres`, shares this writer.) [`SqliteUsage::flush`] waits for what was recorded so far to be committed;
//! dropping the store flushes it too.
//!
//! [`SqliteUsage::query`] sums requests and tokens by key and model over a time range, as
//! `cortex models usage` and the admin API answer.
//!
//! ```no_run
//! use cortex_gateway::meter::{SqliteUsage, UsageQuery};
//!
//! let usage = SqliteUsage::open("/var/lib/cortex/usage.sqlite3").unwrap();
//! // … GatewayBuilder::new(registry).usage_sink(std::sync::Arc::new(usage)) …
//! # let usage = SqliteUsage::open("/tmp/u.sqlite3").unwrap();
//! let rows = usage.query(&UsageQuery::default().model("gemma")).unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, params};

use super::store::{Backend, Row, Writer, entry, key_record, millis, models_column, source_name};
pub use super::store::{DEFAULT_USAGE_BUFFER, UsageQuery, UsageStoreError};
use super::{UsageEntry, UsageRecord, UsageSink};
use crate::auth::{KeyDatabase, KeyDatabaseError, KeyRecord};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT,
    model TEXT,
    replica INTEGER,
    instance TEXT,
    engine TEXT,
    status INTEGER,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    usage_source TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    streamed INTEGER NOT NULL,
    client_disconnected INTEGER NOT NULL,
    failed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_at ON usage (at_ms);
CREATE INDEX IF NOT EXISTS usage_key_model_at ON usage (key_id, model, at_ms);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT NOT NULL,
    hash TEXT NOT NULL,
    models TEXT,
    requests_per_minute INTEGER,
    created_ms INTEGER NOT NULL,
    created_by TEXT,
    revoked_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS keys_live_id ON keys (id) WHERE revoked_ms IS NULL;
";

/// Usage records in SQLite. See the [module docs](self).
#[derive(Debug)]
pub struct SqliteUsage {
    path: PathBuf,
    writer: Writer,
}

struct Sqlite(Connection);

impl Backend for Sqlite {
    // One local transaction: it took effect exactly when it reports so.
    fn commit(&mut self, _batch: u64, rows: &[Row]) -> Result<(), String> {
        commit(&self.0, rows).map_err(|e| e.to_string())
    }
}

// === impl SqliteUsage ===

impl SqliteUsage {
    /// Opens (creating it and its table when missing) the database at `path`, with the default
    /// buffer.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or is not a usage database SQLite can write.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, UsageStoreError> {
        Self::with_buffer(path, DEFAULT_USAGE_BUFFER)
    }

    /// As [`open`](Self::open), with `rows` waiting for the writer at most (at least 1).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn with_buffer(path: impl AsRef<Path>, rows: usize) -> Result<Self, UsageStoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = connect(&path)?;
        conn.execute_batch(SCHEMA)
            .map_err(|source| UsageStoreError::Sqlite {
                path: path.clone(),
                doing: "creating the usage table",
                source,
            })?;
        let writer = Writer::start(path.display().to_string(), rows, move || Ok(Sqlite(conn)))?;
        Ok(Self { path, writer })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records dropped because the buffer was full (the database slow or locked).
    pub fn dropped(&self) -> u64 {
        self.writer.dropped()
    }

    /// Waits until every record handed over before this call is committed (returns at once
    /// when the writer is gone). Blocks: call it from a blocking context.
    pub fn flush(&self) {
        self.writer.flush();
    }

    /// Requests and tokens by key and model, for the records `query` selects, sorted by key
    /// and model. Reads through its own connection, beside the writer.
    ///
    /// # Errors
    ///
    /// SQLite could not read the database.
    pub fn query(&self, query: &UsageQuery) -> Result<Vec<UsageEntry>, UsageStoreError> {
        let err = |doing| {
            let path = self.path.clone();
            move |source| UsageStoreError::Sqlite {
                path,
                doing,
                source,
            }
        };
        let conn = connect(&self.path)?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT key_id, model, at_ms - at_ms % ?5 AS bucket, COUNT(*), SUM(prompt_tokens),
                        SUM(completion_tokens), SUM(total_tokens), SUM(usage_source = 'missing'),
                        SUM(failed), SUM(client_disconnected)
                 FROM usage
                 WHERE (?1 IS NULL OR key_id = ?1) AND (?2 IS NULL OR model = ?2)
                   AND (?3 IS NULL OR at_ms >= ?3) AND (?4 IS NULL OR at_ms < ?4)
                 GROUP BY key_id, model, bucket ORDER BY bucket, key_id, model",
            )
            .map_err(err("preparing the usage query"))?;
        let rows = stmt
            .query_map(
                params![
                    query.key_id,
                    query.model,
                    query.since.map(millis),
                    query.until.map(millis),
                    query.every_ms()
                ],
                |r| {
                    let mut counts = [0_i64; 7];
                    for (i, c) in counts.iter_mut().enumerate() {
                        *c = r.get::<_, Option<i64>>(i + 3)?.unwrap_or(0);
                    }
                    Ok(entry(r.get(0)?, r.get(1)?, r.get(2)?, counts))
                },
            )
            .map_err(err("reading usage"))?;
        rows.collect::<Result<_, _>>().map_err(err("reading usage"))
    }
}

impl UsageSink for SqliteUsage {
    fn record(&self, record: UsageRecord) {
        self.writer.record(record);
    }
}

fn connect(path: &Path) -> Result<Connection, UsageStoreError> {
    let err = |doing| {
        move |source| UsageStoreError::Sqlite {
            path: path.to_path_buf(),
            doing,
            source,
        }
    };
    let conn = Connection::open(path).map_err(err("opening"))?;
    conn.busy_timeout(Duration::from_millis(200))
        .map_err(err("setting the busy timeout"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err("turning on the WAL journal"))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err("setting synchronous = NORMAL"))?;
    Ok(conn)
}

fn commit(conn: &Connection, rows: &[Row]) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO usage (at_ms, request_id, key_id, model, replica, instance, engine,
                status, prompt_tokens, completion_tokens, total_tokens, usage_source, latency_ms,
                ttft_ms, streamed, client_disconnected, failed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for Row { at_ms, record: r } in rows {
            insert.execute(params![
                at_ms,
                r.request_id,
                r.key_id.as_deref(),
                r.model.as_deref(),
                r.replica,
                r.instance.as_ref().map(ToString::to_string),
                r.engine.as_ref().map(ToString::to_string),
                r.status,
                n(r.usage.prompt_tokens),
                n(r.usage.completion_tokens),
                n(r.usage.total_tokens),
                source_name(r.usage.source),
                r.latency.as_secs_f64() * 1000.0,
                r.time_to_first_token.map(|d| d.as_secs_f64() * 1000.0),
                r.streamed,
                r.client_disconnected,
                r.failed,
            ])?;
        }
    }
    tx.commit()
}

/// Client keys in the same file (table `keys`: digests, never keys; a revoked key's row stays,
/// with when it was revoked).
impl KeyDatabase for SqliteUsage {
    fn keys(&self) -> Result<Vec<KeyRecord>, KeyDatabaseError> {
        let fail = |e: &dyn std::fmt::Display| {
            KeyDatabaseError::Database(format!(
                "key database {}: reading keys: {e}",
                self.path.display()
            ))
        };
        let conn = connect(&self.path).map_err(|e| fail(&e))?;
        let mut stmt = conn
            .prepare(
                "SELECT id, hash, models, requests_per_minute, created_by FROM keys
                 WHERE revoked_ms IS NULL ORDER BY id",
            )
            .map_err(|e| fail(&e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .map_err(|e| fail(&e))?;
        rows.map(|row| {
            let (id, hash, models, rpm, by) = row.map_err(|e| fail(&e))?;
            key_record(id, &hash, models.as_deref(), rpm, by).map_err(|e| fail(&e))
        })
        .collect()
    }

    fn add_key(&self, key: &KeyRecord) -> Result<(), KeyDatabaseError> {
        let conn = connect(&self.path).map_err(|e| KeyDatabaseError::Database(e.to_string()))?;
        let inserted = conn.execute(
            "INSERT INTO keys (id, hash, models, requests_per_minute, created_ms, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                key.id,
                key.hash.to_string(),
                models_column(key.models.as_ref()),
                key.requests_per_minute.map(|r| i64::from(r.get())),
                millis(std::time::SystemTime::now()),
                key.created_by,
            ],
        );
        match inserted {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(KeyDatabaseError::Duplicate { id: key.id.clone() })
            }
            Err(e) => Err(KeyDatabaseError::Database(format!(
                "key database {}: adding key `{}`: {e}",
                self.path.display(),
                key.id
            ))),
        }
    }

    fn revoke_key(&self, id: &str) -> Result<bool, KeyDatabaseError> {
        let fail = |e: &dyn std::fmt::Display| {
            KeyDatabaseError::Database(format!(
                "key database {}: revoking key `{id}`: {e}",
                self.path.display()
            ))
        };
        let conn = connect(&self.path).map_err(|e| fail(&e))?;
        let n = conn
            .execute(
                "UPDATE keys SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, millis(std::time::SystemTime::now())],
            )
            .map_err(|e| fail(&e))?;
        Ok(n > 0)
    }
}
