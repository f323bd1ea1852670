//! Usage records in PostgreSQL (feature `postgres`), for several gateways writing to one
//! database.
//!
//! [`PostgresUsage`] is a [`UsageSink`] built like [`SqliteUsage`](super::SqliteUsage) (feature
//! `sqlite`): `record` hands the row to a bounded channel and returns at once; one writer thread
//! commits rows in batches (up to 1,024 per transaction) into the table `cortex_usage`, which it
//! creates when missing. When the server is slow, restarting or down, the batch being written is
//! retried with back-off (the connection made again each time) while new rows wait in the channel
//! up to its bound ([`PostgresUsage::with_buffer`], default 65,536); beyond the bound a row is
//! dropped, counted ([`PostgresUsage::dropped`], `cortex_usage_dropped_total`) and logged. No
//! request ever waits for the database. Each batch is committed once, even when the server died
//! between taking a commit and answering it: the writer's batch number is committed with the batch
//! (table `cortex_usage_batches`, one row per writer), and a retry that finds it writes nothing. Each row carries the id of the gateway that wrote it
//! ([`PostgresUsage::gateway`]), so the totals of several gateways add up in one query.
//!
//! The client is the `postgres` crate (the blocking face of `tokio-postgres`); it runs on the
//! writer thread, and [`PostgresUsage::query`] runs on a thread of its own, so both may be called
//! from async code.
//!
//! ```no_run
//! use cortex_gateway::meter::{PostgresUsage, UsageQuery};
//!
//! let usage = PostgresUsage::open("host=db.internal user=cortex dbname=cortex").unwrap();
//! // … GatewayBuilder::new(registry).usage_sink(std::sync::Arc::new(usage)) …
//! # let usage = PostgresUsage::open("host=localhost").unwrap();
//! let rows = usage.query(&UsageQuery::default().model("gemma")).unwrap();
//! ```

use std::time::Duration;

use postgres::{Client, NoTls};

use super::store::{Backend, Row, Writer, entry, key_record, millis, models_column, source_name};
pub use super::store::{DEFAULT_USAGE_BUFFER, UsageQuery, UsageStoreError};
use super::{UsageEntry, UsageRecord, UsageSink};
use crate::auth::{KeyDatabase, KeyDatabaseError, KeyRecord};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cortex_usage (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    gateway TEXT NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT,
    model TEXT,
    replica BIGINT,
    instance TEXT,
    engine TEXT,
    status INTEGER,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL,
    usage_source TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    streamed BOOLEAN NOT NULL,
    client_disconnected BOOLEAN NOT NULL,
    failed BOOLEAN NOT NULL
);
CREATE INDEX IF NOT EXISTS cortex_usage_at ON cortex_usage (at_ms);
CREATE INDEX IF NOT EXISTS cortex_usage_key_model_at ON cortex_usage (key_id, model, at_ms);
CREATE TABLE IF NOT EXISTS cortex_keys (
    id TEXT NOT NULL,
    hash TEXT NOT NULL,
    models TEXT,
    requests_per_minute BIGINT,
    created_ms BIGINT NOT NULL,
    created_by TEXT,
    revoked_ms BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS cortex_keys_live_id ON cortex_keys (id) WHERE revoked_ms IS NULL;
CREATE TABLE IF NOT EXISTS cortex_usage_batches (
    writer TEXT PRIMARY KEY,
    batch BIGINT NOT NULL
);
";

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Usage records in PostgreSQL. See the [module docs](self).
#[derive(Debug)]
pub struct PostgresUsage {
    config: postgres::Config,
    server: String,
    gateway: String,
    writer: Writer,
}

/// `host:port/dbname` of a configuration, for messages (never its password).
fn server_of(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map_or_else(String::new, |h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        });
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("{host}:{port}/{db}")
}

struct Postgres {
    config: postgres::Config,
    gateway: String,
    /// This writer's row in `cortex_usage_batches`: the gateway id, when the writer started and
    /// a count within the process, so no two writers share one.
    writer: String,
    client: Option<Client>,
}

/// A name no other writer has: `gateway`, the time in nanoseconds and a count of this process's
/// writers.
fn writer_id(gateway: &str) -> String {
    static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{gateway}/{nanos}/{n}")
}

impl Postgres {
    fn connect(config: &postgres::Config) -> Result<Client, postgres::Error> {
        let mut client = config.connect(NoTls)?;
        // Several gateways may create the table at once: one wins, the others see it exists.
        if let Err(e) = client.batch_execute(SCHEMA) {
            let raced = e.code().is_some_and(|c| {
                *c == postgres::error::SqlState::UNIQUE_VIOLATION
                    || *c == postgres::error::SqlState::DUPLICATE_TABLE
            });
            if !raced {
                return Err(e);
            }
        }
        Ok(client)
    }
}

impl Backend for Postgres {
    fn commit(&mut self, batch: u64, rows: &[Row]) -> Result<(), String> {
        // A connection the server closed (a restart, a kill) is made again.
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.client = Some(Self::connect(&self.config).map_err(|e| e.to_string())?);
        }
        let Some(client) = self.client.as_mut() else {
            return Err("no connection".to_owned());
        };
        let result = commit(client, &self.gateway, &self.writer, batch, rows);
        if result.is_err() {
            // Whatever broke, the next try starts from a fresh connection.
            self.client = None;
        }
        result.map_err(|e| e.to_string())
    }
}

/// Commits `rows` as `writer`'s batch number `batch`, once: the batch's number is written in the
/// same transaction (`cortex_usage_batches`, one row per writer), so a retry of a batch whose
/// commit took effect but whose answer was lost (the server killed in between) finds its number
/// there and writes nothing again.
fn commit(
    client: &mut Client,
    gateway: &str,
    writer: &str,
    batch: u64,
    rows: &[Row],
) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    let batch = i64::try_from(batch).unwrap_or(i64::MAX);
    let fresh = tx.execute(
        "INSERT INTO cortex_usage_batches (writer, batch) VALUES ($1, $2)
         ON CONFLICT (writer) DO UPDATE SET batch = EXCLUDED.batch
         WHERE cortex_usage_batches.batch < EXCLUDED.batch",
        &[&writer, &batch],
    )?;
    if fresh == 0 {
        // Committed before; dropping `tx` rolls this one back.
        return Ok(());
    }
    let insert = tx.prepare(
        "INSERT INTO cortex_usage (at_ms, gateway, request_id, key_id, model, replica, instance,
            engine, status, prompt_tokens, completion_tokens, total_tokens, usage_source,
            latency_ms, ttft_ms, streamed, client_disconnected, failed)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )?;
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for Row { at_ms, record: r } in rows {
        tx.execute(
            &insert,
            &[
                at_ms,
                &gateway,
                &r.request_id,
                &r.key_id.as_deref(),
                &r.model.as_deref(),
                &r.replica.map(i64::from),
                &r.instance.as_ref().map(ToString::to_string),
                &r.engine.as_ref().map(ToString::to_string),
                &r.status.map(i32::from),
                &n(r.usage.prompt_tokens),
                &n(r.usage.completion_tokens),
                &n(r.usage.total_tokens),
                &source_name(r.usage.source),
                &(r.latency.as_secs_f64() * 1000.0),
                &r.time_to_first_token.map(|d| d.as_secs_f64() * 1000.0),
                &r.streamed,
                &r.client_disconnected,
                &r.failed,
            ],
        )?;
    }
    tx.commit()
}

// === impl PostgresUsage ===

impl PostgresUsage {
    /// Connects to the server `params` names (`host=… port=… user=… dbname=…`, or a
    /// `postgresql://` URL), creating the table when missing, with the default buffer. The
    /// gateway id written with each row is this host's name and process id.
    ///
    /// # Errors
    ///
    /// `params` cannot be read, or the server cannot be reached or refuses.
    pub fn open(params: &str) -> Result<Self, UsageStoreError> {
        Self::with_buffer(params, DEFAULT_USAGE_BUFFER)
    }

    /// As [`open`](Self::open), with `rows` waiting for the writer at most (at least 1).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn with_buffer(params: &str, rows: usize) -> Result<Self, UsageStoreError> {
        let gateway = format!(
            "{}:{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            std::process::id()
        );
        Self::for_gateway(params, rows, gateway)
    }

    /// As [`with_buffer`](Self::with_buffer), writing `gateway` as the id of the gateway with
    /// each row.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn for_gateway(
        params: &str,
        rows: usize,
        gateway: impl Into<String>,
    ) -> Result<Self, UsageStoreError> {
        let mut config: postgres::Config =
            params.parse().map_err(|source| UsageStoreError::Postgres {
                server: "?".to_owned(),
                doing: "reading the connection parameters",
                source,
            })?;
        config.connect_timeout(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("cortex-usage");
        }
        let server = server_of(&config);
        let gateway = gateway.into();
        let writer = {
            let (config, server, gateway) = (config.clone(), server.clone(), gateway.clone());
            Writer::start(format!("postgres://{server}"), rows, move || {
                let client =
                    Postgres::connect(&config).map_err(|source| UsageStoreError::Postgres {
                        server,
                        doing: "connecting and creating the usage table",
                        source,
                    })?;
                Ok(Postgres {
                    config,
                    writer: writer_id(&gateway),
                    gateway,
                    client: Some(client),
                })
            })?
        };
        Ok(Self {
            config,
            server,
            gateway,
            writer,
        })
    }

    /// The id written with each row.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// Records dropped because the buffer was full (the database slow or down).
    pub fn dropped(&self) -> u64 {
        self.writer.dropped()
    }

    /// Waits until every record handed over before this call is committed (returns at once
    /// when the writer is gone); while the server is down, that is until it is back. Blocks:
    /// call it from a blocking context.
    pub fn flush(&self) {
        self.writer.flush();
    }

    /// Requests and tokens by key and model, for the records `query` selects (of every
    /// gateway writing to the database), sorted by key and model. Connects on a thread of its
    /// own.
    ///
    /// # Errors
    ///
    /// The server cannot be reached or refuses.
    pub fn query(&self, query: &UsageQuery) -> Result<Vec<UsageEntry>, UsageStoreError> {
        let (since, until) = (query.since.map(millis), query.until.map(millis));
        let every = query.every_ms();
        let rows = self.with_client("reading usage", |client| {
            client.query(
                "SELECT key_id, model, at_ms - at_ms % $5::BIGINT AS bucket,
                        COUNT(*)::BIGINT, SUM(prompt_tokens)::BIGINT,
                        SUM(completion_tokens)::BIGINT, SUM(total_tokens)::BIGINT,
                        COUNT(*) FILTER (WHERE usage_source = 'missing'),
                        COUNT(*) FILTER (WHERE failed),
                        COUNT(*) FILTER (WHERE client_disconnected)
                 FROM cortex_usage
                 WHERE ($1::TEXT IS NULL OR key_id = $1) AND ($2::TEXT IS NULL OR model = $2)
                   AND ($3::BIGINT IS NULL OR at_ms >= $3) AND ($4::BIGINT IS NULL OR at_ms < $4)
                 GROUP BY key_id, model, bucket ORDER BY bucket, key_id, model",
                &[&query.key_id, &query.model, &since, &until, &every],
            )
        })?;
        let err = |source| UsageStoreError::Postgres {
            server: self.server.clone(),
            doing: "reading usage",
            source,
        };
        rows.iter()
            .map(|r| {
                let mut counts = [0_i64; 7];
                for (i, c) in counts.iter_mut().enumerate() {
                    *c = r.try_get(i + 3)?;
                }
                Ok(entry(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, counts))
            })
            .collect::<Result<_, postgres::Error>>()
            .map_err(err)
    }
}

impl UsageSink for PostgresUsage {
    fn record(&self, record: UsageRecord) {
        self.writer.record(record);
    }
}

impl PostgresUsage {
    /// Runs `f` with a new connection on a thread of its own (the blocking client cannot run on
    /// a thread that runs async tasks).
    fn with_client<T: Send>(
        &self,
        doing: &'static str,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, UsageStoreError> {
        let err = |source| UsageStoreError::Postgres {
            server: self.server.clone(),
            doing,
            source,
        };
        let run = || -> Result<T, UsageStoreError> {
            let mut client = self.config.connect(NoTls).map_err(err)?;
            f(&mut client).map_err(err)
        };
        std::thread::scope(|s| s.spawn(run).join()).map_err(|_| {
            UsageStoreError::Thread(std::io::Error::other("the database call panicked"))
        })?
    }
}

/// Client keys in the same database (table `cortex_keys`: digests, never keys; a revoked key's
/// row stays, with when it was revoked), shared by every gateway that writes there.
impl KeyDatabase for PostgresUsage {
    fn keys(&self) -> Result<Vec<KeyRecord>, KeyDatabaseError> {
        let rows = self
            .with_client("reading keys", |client| {
                client.query(
                    "SELECT id, hash, models, requests_per_minute, created_by FROM cortex_keys
                     WHERE revoked_ms IS NULL ORDER BY id",
                    &[],
                )
            })
            .map_err(|e| KeyDatabaseError::Database(e.to_string()))?;
        rows.iter()
            .map(|r| {
                let read = || -> Result<_, postgres::Error> {
                    Ok((
                        r.try_get::<_, String>(0)?,
                        r.try_get::<_, String>(1)?,
                        r.try_get::<_, Option<String>>(2)?,
                        r.try_get::<_, Option<i64>>(3)?,
                        r.try_get::<_, Option<String>>(4)?,
                    ))
                };
                let (id, hash, models, rpm, by) = read().map_err(|e| {
                    KeyDatabaseError::Database(format!(
                        "postgres://{}: reading keys: {e}",
                        self.server
                    ))
                })?;
                key_record(id, &hash, models.as_deref(), rpm, by).map_err(|e| {
                    KeyDatabaseError::Database(format!("postgres://{}: {e}", self.server))
                })
            })
            .collect()
    }

    fn add_key(&self, key: &KeyRecord) -> Result<(), KeyDatabaseError> {
        let hash = key.hash.to_string();
        let models = models_column(key.models.as_ref());
        let rpm = key.requests_per_minute.map(|r| i64::from(r.get()));
        let now = millis(std::time::SystemTime::now());
        let added = self.with_client("adding a key", |client| {
            client.execute(
                "INSERT INTO cortex_keys (id, hash, models, requests_per_minute, created_ms, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&key.id, &hash, &models, &rpm, &now, &key.created_by],
            )
        });
        match added {
            Ok(_) => Ok(()),
            Err(UsageStoreError::Postgres { source, .. })
                if source.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) =>
            {
                Err(KeyDatabaseError::Duplicate { id: key.id.clone() })
            }
            Err(e) => Err(KeyDatabaseError::Database(e.to_string())),
        }
    }

    fn revoke_key(&self, id: &str) -> Result<bool, KeyDatabaseError> {
        let now = millis(std::time::SystemTime::now());
        self.with_client("revoking a key", |client| {
            client.execute(
                "UPDATE cortex_keys SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL",
                &[&id, &now],
            )
        })
        .map(|n| n > 0)
        .map_err(|e| KeyDatabaseError::Database(e.to_string()))
    }
}
