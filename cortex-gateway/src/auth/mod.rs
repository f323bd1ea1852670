//! API-key authentication: `Authorization: Bearer KEY` or `X-Api-Key: KEY`, checked against a
//! [`KeyStore`] of hashed keys.
//!
//! [`RequireApiKey`] looks the presented key up, applies the key's requests-per-minute limit
//! (governor's GCRA), removes both headers so the key is never forwarded upstream, and puts the
//! [`ApiKey`] into the request's extensions, where routing checks the key's allowed models and
//! metering reads its id. Refusals are OpenAI-shaped: 401 `missing_api_key` / `invalid_api_key`,
//! 429 `rate_limit_exceeded` with `Retry-After`. The key itself is never logged: only its id is.
//!
//! [`InMemoryKeyStore`] keeps SHA-256 digests, never keys. A presented key is hashed, its digest
//! finds the candidate entry in a hash table, and the two digests are then compared in constant
//! time (`subtle`). The only timing that depends on the table is that of the lookup, and it
//! depends on the digest of the attacker's own input: learning a stored digest from it would take
//! inputs whose SHA-256 digests are chosen, a preimage attack. (A linear constant-time scan over
//! every entry, the earlier design, cost about 1 µs for 17 keys and grew with the key count.)
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use cortex_gateway::auth::{ApiKey, InMemoryKeyStore, RequireApiKeyLayer};
//! use http::{Request, Response};
//! use http_body_util::Empty;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let mut keys = InMemoryKeyStore::new();
//! keys.insert_key("sk-alice-secret", ApiKey::new("alice").allow_models(["gemma"]));
//!
//! let service = ServiceBuilder::new()
//!     .layer(RequireApiKeyLayer::new(keys))
//!     .service_fn(|req: Request<Empty<bytes::Bytes>>| async move {
//!         // The key is gone; its id is in the extensions.
//!         assert!(req.headers().get("authorization").is_none());
//!         let key = req.extensions().get::<std::sync::Arc<ApiKey>>().unwrap();
//!         assert_eq!(key.id(), "alice");
//!         Ok::<_, Infallible>(Response::new(Empty::<bytes::Bytes>::new()))
//!     });
//!
//! let request = Request::builder()
//!     .header("authorization", "Bearer sk-alice-secret")
//!     .body(Empty::new())
//!     .unwrap();
//! let response = service.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//!
//! let request = Request::builder().header("x-api-key", "wrong").body(Empty::new()).unwrap();
//! assert_eq!(service.oneshot(request).await.unwrap().status(), 401);
//! # });
//! ```

mod layer;
mod service;

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use self::layer::RequireApiKeyLayer;
pub use self::service::RequireApiKey;

/// The future of [`RequireApiKey`].
pub type ResponseFuture<F> = crate::error::RefuseOr<F>;

/// An API key's identity and permissions (never the key itself).
pub struct ApiKey {
    id: Arc<str>,
    models: Option<Vec<String>>,
    rpm: Option<NonZeroU32>,
    limiter: Option<DefaultDirectRateLimiter>,
}

// === impl ApiKey ===

impl ApiKey {
    /// A key named `id` (the name metering and logs use), allowed every model, with no rate limit.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self {
            id: id.into(),
            models: None,
            rpm: None,
            limiter: None,
        }
    }

    /// Allows only `models` (served names).
    pub fn allow_models<I, M>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.models = Some(models.into_iter().map(Into::into).collect());
        self
    }

    /// Limits the key to `rpm` requests per minute (a burst of up to `rpm`, refilled evenly).
    pub fn requests_per_minute(mut self, rpm: NonZeroU32) -> Self {
        self.rpm = Some(rpm);
        self.limiter = Some(RateLimiter::direct(Quota::per_minute(rpm)));
        self
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key's id, shared.
    pub fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    /// Whether the key may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }

    /// The models the key may use; `None` for all.
    pub fn models(&self) -> Option<&[String]> {
        self.models.as_deref()
    }

    /// The requests-per-minute limit, if any.
    pub fn rpm(&self) -> Option<NonZeroU32> {
        self.rpm
    }

    /// Takes one request from the key's allowance; `Err` holds how long until the next one.
    pub(crate) fn check_rate(&self) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now())),
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("models", &self.models)
            .field("rpm", &self.rpm)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 digest of a key, the form keys are stored in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

// === impl KeyHash ===

impl KeyHash {
    /// The digest of `key`.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Parses `sha256:` followed by 64 hex digits (the form [`fmt::Display`] writes).
    ///
    /// # Errors
    ///
    /// A message naming what is wrong with `text`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("key hash {text:?} does not start with \"sha256:\""))?;
        if hex.len() != 64 {
            return Err(format!(
                "key hash has {} hex digits after \"sha256:\", expected 64",
                hex.len()
            ));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).unwrap_or_default();
            *byte = u8::from_str_radix(pair, 16)
                .map_err(|_| format!("key hash has a non-hex digit near position {}", 7 + 2 * i))?;
        }
        Ok(Self(out))
    }

    /// Whether the digests are equal, in constant time.
    pub fn matches(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({self})")
    }
}

/// Where keys are looked up. Implemented for closures `Fn(&str) -> Option<Arc<ApiKey>>`.
///
/// `lookup` runs on every request and must not block.
pub trait KeyStore: Send + Sync + 'static {
    /// The key `presented` by a client, if it is known.
    fn lookup(&self, presented: &str) -> Option<Arc<ApiKey>>;
}

impl<F> KeyStore for F
where
    F: Fn(&str) -> Option<Arc<ApiKey>> + Send + Sync + 'static,
{
    fn lookup(&self, presented: &str) -> Option<Arc<ApiKey>> {
        self(presented)
    }
}

impl<K: KeyStore + ?Sized> KeyStore for Arc<K> {
    fn lookup(&self, presented: &str) -> Option<Arc<ApiKey>> {
        (**self).lookup(presented)
    }
}

/// Keys in memory, as SHA-256 digests, found by digest and compared in constant time (see the
/// [module docs](self)).
#[derive(Debug, Default)]
pub struct InMemoryKeyStore {
    entries: HashMap<[u8; 32], (KeyHash, Arc<ApiKey>)>,
}

// === impl InMemoryKeyStore ===

impl InMemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key by its digest (as a configuration file keeps it).
    pub fn insert(&mut self, hash: KeyHash, key: ApiKey) {
        self.entries.insert(hash.0, (hash, Arc::new(key)));
    }

    /// Adds a key given in plain text; only its digest is kept.
    pub fn insert_key(&mut self, plain: &str, key: ApiKey) {
        self.insert(KeyHash::of(plain), key);
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl InMemoryKeyStore {
    /// This store, with each key that `old` holds unchanged (same digest, id, models and limit)
    /// taken from `old`, so that a store rebuilt from its sources (a reload, a refresh from a
    /// database) keeps the keys' rate-limit state: a key is not given a fresh allowance each time.
    #[must_use]
    pub fn keeping_state_of(mut self, old: &Self) -> Self {
        for (digest, (_, key)) in &mut self.entries {
            if let Some((_, before)) = old.entries.get(digest) {
                if before.id == key.id && before.models == key.models && before.rpm == key.rpm {
                    *key = Arc::clone(before);
                }
            }
        }
        self
    }

    /// Adds every key of `records`.
    pub fn extend(&mut self, records: impl IntoIterator<Item = KeyRecord>) {
        for record in records {
            let mut key = ApiKey::new(record.id);
            if let Some(models) = record.models {
                key = key.allow_models(models);
            }
            if let Some(rpm) = record.requests_per_minute {
                key = key.requests_per_minute(rpm);
            }
            self.insert(record.hash, key);
        }
    }
}

/// A client key as a database keeps it: its digest, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRecord {
    /// The key's id (in logs and usage records).
    pub id: String,
    /// The key's digest.
    pub hash: KeyHash,
    /// The models (served names) it may use; all when `None`.
    pub models: Option<Vec<String>>,
    /// Its requests-per-minute limit; none when `None`.
    pub requests_per_minute: Option<NonZeroU32>,
    /// Who created it (an admin caller's address, say).
    pub created_by: Option<String>,
}

impl KeyRecord {
    /// A key named `id` with digest `hash`, allowed every model, with no limit.
    pub fn new(id: impl Into<String>, hash: KeyHash) -> Self {
        Self {
            id: id.into(),
            hash,
            models: None,
            requests_per_minute: None,
            created_by: None,
        }
    }
}

/// Why a key database refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyDatabaseError {
    /// A key with this id is there already.
    Duplicate {
        /// The id.
        id: String,
    },
    /// The database failed; the message names it and what was being done.
    Database(String),
}

impl fmt::Display for KeyDatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Duplicate { id } => write!(f, "a key `{id}` is in the database already"),
            Self::Database(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for KeyDatabaseError {}

/// Client keys kept in a database (the usage databases of features `sqlite` and `postgres`
/// implement it), beside or instead of a configuration file. A gateway reads them into an
/// [`InMemoryKeyStore`] ([`InMemoryKeyStore::extend`]) and reads again after a change, or
/// periodically when other gateways share the database: requests never wait for the database.
pub trait KeyDatabase: Send + Sync {
    /// Every key not revoked.
    ///
    /// # Errors
    ///
    /// The database cannot be read.
    fn keys(&self) -> Result<Vec<KeyRecord>, KeyDatabaseError>;

    /// Adds `key`.
    ///
    /// # Errors
    ///
    /// [`KeyDatabaseError::Duplicate`] when its id is taken; the database failing.
    fn add_key(&self, key: &KeyRecord) -> Result<(), KeyDatabaseError>;

    /// Revokes the key `id`; `false` when there is none.
    ///
    /// # Errors
    ///
    /// The database failing.
    fn revoke_key(&self, id: &str) -> Result<bool, KeyDatabaseError>;
}

impl KeyStore for InMemoryKeyStore {
    fn lookup(&self, presented: &str) -> Option<Arc<ApiKey>> {
        let digest = KeyHash::of(presented);
        let (hash, key) = self.entries.get(&digest.0)?;
        hash.matches(&digest).then(|| Arc::clone(key))
    }
}
