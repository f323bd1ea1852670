//! Where `cortex serve` keeps usage: every record in SQLite (`cortex_gateway::meter::SqliteUsage`,
//! the default) or in PostgreSQL (`cortex_gateway::meter::PostgresUsage`, for several gateways
//! sharing one database), or totals in memory; queried by key, model and time range by the admin
//! API and `cortex models usage`.

use std::sync::Arc;
use std::time::SystemTime;

use cortex_gateway::auth::KeyDatabase;
use cortex_gateway::meter::{
    InMemoryUsage, PostgresUsage, SqliteUsage, UsageEntry, UsageQuery, UsageRecord, UsageSink,
};

use crate::config::{Config, UsageStoreKind};

/// The configured store.
#[derive(Debug)]
pub enum UsageStore {
    /// Every record, in SQLite.
    Sqlite(SqliteUsage),
    /// Every record, in PostgreSQL (boxed: its connection settings are large).
    Postgres(Box<PostgresUsage>),
    /// Totals by key and model since the start.
    Memory(InMemoryUsage),
}

impl UsageStore {
    /// The store `config` asks for (`[usage]`), its file's directory created.
    ///
    /// # Errors
    ///
    /// The database cannot be opened, with the file named.
    pub fn open(config: &Config) -> Result<Arc<Self>, String> {
        let buffer = config
            .usage
            .buffer
            .unwrap_or(cortex_gateway::meter::DEFAULT_USAGE_BUFFER);
        Ok(Arc::new(match config.usage.store {
            UsageStoreKind::Memory => Self::Memory(InMemoryUsage::new()),
            UsageStoreKind::Postgres => {
                // Checked when the configuration was read.
                let params = config.usage.postgres.as_deref().unwrap_or_default();
                Self::Postgres(Box::new(
                    PostgresUsage::with_buffer(params, buffer).map_err(|e| e.to_string())?,
                ))
            }
            UsageStoreKind::Sqlite => {
                let path = config.usage.path.clone().unwrap_or_else(|| {
                    config
                        .runtime
                        .state_dir(config.server.listen)
                        .join("usage.sqlite3")
                });
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("usage.path: {}: {e}", dir.display()))?;
                }
                Self::Sqlite(SqliteUsage::with_buffer(&path, buffer).map_err(|e| e.to_string())?)
            }
        }))
    }

    /// Totals by key and model for `query`.
    ///
    /// # Errors
    ///
    /// The database cannot be read; or a time range asked of the memory store, which keeps
    /// totals only.
    pub fn query(&self, query: &UsageQuery) -> Result<Vec<UsageEntry>, String> {
        match self {
            Self::Sqlite(s) => s.query(query).map_err(|e| e.to_string()),
            Self::Postgres(p) => p.query(query).map_err(|e| e.to_string()),
            Self::Memory(m) => {
                if query.since.is_some() || query.until.is_some() {
                    return Err(
                        "time ranges need a database usage store ([usage] store = \"sqlite\" or \"postgres\")"
                            .to_owned(),
                    );
                }
                Ok(m.totals()
                    .into_iter()
                    .filter(|e| {
                        query
                            .key_id
                            .as_deref()
                            .is_none_or(|k| e.key_id.as_deref() == Some(k))
                            && query
                                .model
                                .as_deref()
                                .is_none_or(|m| e.model.as_deref() == Some(m))
                    })
                    .collect())
            }
        }
    }

    /// The database's client keys, when usage is kept in a database.
    pub fn key_database(&self) -> Option<&dyn KeyDatabase> {
        match self {
            Self::Sqlite(s) => Some(s),
            Self::Postgres(p) => Some(p.as_ref()),
            Self::Memory(_) => None,
        }
    }

    /// Waits for the records so far to be written (a database); nothing to wait for in memory.
    pub fn flush(&self) {
        match self {
            Self::Sqlite(s) => s.flush(),
            Self::Postgres(p) => p.flush(),
            Self::Memory(_) => {}
        }
    }
}

impl UsageSink for UsageStore {
    fn record(&self, record: UsageRecord) {
        match self {
            Self::Sqlite(s) => s.record(record),
            Self::Postgres(p) => p.record(record),
            Self::Memory(m) => m.record(record),
        }
    }
}

/// `since`/`until` of an admin query: RFC 3339 (`2026-12-02T08:00:00Z`) or a duration before
/// now (`1h`, `30m`).
///
/// # Errors
///
/// Neither form, with the value.
pub fn parse_time(value: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        return Ok(t);
    }
    let ago = humantime::parse_duration(value)
        .map_err(|_| format!("`{value}`: expected an RFC 3339 time or a duration such as 1h"))?;
    SystemTime::now()
        .checked_sub(ago)
        .ok_or_else(|| format!("`{value}`: before the epoch"))
}
