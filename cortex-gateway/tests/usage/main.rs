//! Usage records in SQLite (feature `sqlite`; PostgreSQL in [`postgres`], feature `postgres`): every record written under load is there after a
//! restart; a locked database loses nothing beyond the documented buffer, counts what it drops,
//! and never blocks `record`; queries sum by key, model and time range.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cortex_gateway::meter::{SqliteUsage, UsageQuery, UsageRecord, UsageSink as _};

mod postgres;

fn record(i: u64, key: &str, model: &str) -> UsageRecord {
    let mut r = UsageRecord::new(format!("req-{i}"));
    r.key_id = Some(Arc::from(key));
    r.model = Some(Arc::from(model));
    r.status = Some(200);
    r.usage.prompt_tokens = 10;
    r.usage.completion_tokens = i % 7;
    r.usage.total_tokens = 10 + i % 7;
    r
}

#[test]
fn records_written_under_load_are_all_there_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.sqlite3");
    let usage = Arc::new(SqliteUsage::open(&path).unwrap());
    // 8 threads × 5,000 records, as many tasks ending responses at once would hand them over.
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let usage = Arc::clone(&usage);
            std::thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                for i in 0..5_000 {
                    let started = Instant::now();
                    let key = if t % 2 == 0 { "alice" } else { "bob" };
                    usage.record(record(t * 5_000 + i, key, "gemma"));
                    slowest = slowest.max(started.elapsed());
                }
                slowest
            })
        })
        .collect();
    let slowest = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .max()
        .unwrap();
    eprintln!("slowest record(): {slowest:?}");
    assert_eq!(usage.dropped(), 0);
    drop(Arc::into_inner(usage).unwrap()); // flushes and closes

    let reopened = SqliteUsage::open(&path).unwrap();
    let all = reopened.query(&UsageQuery::default()).unwrap();
    let total: u64 = all.iter().map(|e| e.totals.requests).sum();
    assert_eq!(total, 40_000, "records written vs found after the restart");
    let alice = reopened.query(&UsageQuery::default().key("alice")).unwrap();
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].totals.requests, 20_000);
    assert_eq!(alice[0].totals.prompt_tokens, 200_000);
    let expected_completion: u64 = (0..8u64)
        .filter(|t| t % 2 == 0)
        .flat_map(|t| (0..5_000).map(move |i| (t * 5_000 + i) % 7))
        .sum();
    assert_eq!(alice[0].totals.completion_tokens, expected_completion);
    // A time range: everything is before now, nothing after.
    let later = SystemTime::now() + Duration::from_secs(60);
    let none = reopened
        .query(&UsageQuery::default().between(Some(later), None))
        .unwrap();
    assert!(none.is_empty());
    let upto = reopened
        .query(
            &UsageQuery::default()
                .model("gemma")
                .between(None, Some(later)),
        )
        .unwrap();
    assert_eq!(upto.iter().map(|e| e.totals.requests).sum::<u64>(), 40_000);
}

/// Another connection holds the database's write lock (as a slow or stuck writer would): records
/// wait in the buffer (64 here, beside the batch the writer retries), the rest are dropped and counted, `record` never blocks, and
/// once the lock is released everything buffered lands.
#[test]
fn a_locked_database_loses_only_what_overflows_the_buffer_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.sqlite3");
    let usage = SqliteUsage::with_buffer(&path, 64).unwrap();
    usage.record(record(0, "alice", "gemma"));
    usage.flush();

    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 1..=10_000 {
        let t = Instant::now();
        usage.record(record(i, "alice", "gemma"));
        slowest = slowest.max(t.elapsed());
    }
    let elapsed = started.elapsed();
    eprintln!("10,000 records against a locked database: {elapsed:?}, slowest {slowest:?}");
    let dropped = usage.dropped();
    // The writer holds one batch it keeps retrying, and 64 wait in the channel.
    assert!(
        (10_000 - 64 - 1_024..=10_000 - 64).contains(&dropped),
        "dropped {dropped}"
    );
    // The loop ended while the lock was still held: `record` did not wait for the database.
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    usage.flush();
    let found: u64 = usage
        .query(&UsageQuery::default())
        .unwrap()
        .iter()
        .map(|e| e.totals.requests)
        .sum();
    assert_eq!(found + dropped, 10_001, "found {found}, dropped {dropped}");
}

#[test]
fn a_file_that_is_not_a_database_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.sqlite3");
    std::fs::write(&path, b"not a database, not at all, not even close to one").unwrap();
    let err = SqliteUsage::open(&path).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
}

/// What a key database must do, whichever it is: keys added are read back (digest, models,
/// limit, creator), an id is unique among live keys, a revoked key is gone and its id free again,
/// and a store built from it authenticates the key.
pub(crate) fn keys_round_trip(db: &dyn cortex_gateway::auth::KeyDatabase) {
    use cortex_gateway::auth::{
        InMemoryKeyStore, KeyDatabaseError, KeyHash, KeyRecord, KeyStore as _,
    };
    assert!(db.keys().unwrap().is_empty());
    let mut alice = KeyRecord::new("alice", KeyHash::of("sk-alice"));
    alice.models = Some(vec!["gemma".to_owned()]);
    alice.requests_per_minute = std::num::NonZeroU32::new(60);
    alice.created_by = Some("127.0.0.1:50000".to_owned());
    db.add_key(&alice).unwrap();
    db.add_key(&KeyRecord::new("bob", KeyHash::of("sk-bob")))
        .unwrap();
    assert!(matches!(
        db.add_key(&KeyRecord::new("alice", KeyHash::of("sk-other"))),
        Err(KeyDatabaseError::Duplicate { id }) if id == "alice"
    ));
    let keys = db.keys().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], alice);
    let mut store = InMemoryKeyStore::new();
    store.extend(keys);
    let found = store.lookup("sk-alice").expect("alice authenticates");
    assert_eq!(found.id(), "alice");
    assert!(found.allows("gemma") && !found.allows("qwen"));
    assert!(store.lookup("sk-other").is_none());

    assert!(db.revoke_key("bob").unwrap());
    assert!(!db.revoke_key("bob").unwrap());
    let keys = db.keys().unwrap();
    assert_eq!(
        keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["alice"]
    );
    // A revoked id may be given again.
    db.add_key(&KeyRecord::new("bob", KeyHash::of("sk-bob-2")))
        .unwrap();
    assert_eq!(db.keys().unwrap().len(), 2);
}

#[test]
fn keys_live_in_the_sqlite_database_too() {
    let dir = tempfile::tempdir().unwrap();
    let usage = SqliteUsage::open(dir.path().join("usage.sqlite3")).unwrap();
    keys_round_trip(&usage);
}

/// A store rebuilt from its sources keeps the rate-limit state of unchanged keys.
#[test]
fn a_rebuilt_key_store_keeps_the_allowance_used() {
    use cortex_gateway::auth::{ApiKey, InMemoryKeyStore, KeyStore as _};
    let build = |rpm: u32| {
        let mut store = InMemoryKeyStore::new();
        store.insert_key(
            "sk-a",
            ApiKey::new("a").requests_per_minute(std::num::NonZeroU32::new(rpm).unwrap()),
        );
        store
    };
    let old = build(5);
    let key = old.lookup("sk-a").unwrap();
    let same = build(5).keeping_state_of(&old);
    assert!(
        Arc::ptr_eq(&key, &same.lookup("sk-a").unwrap()),
        "state carried over"
    );
    let changed = build(6).keeping_state_of(&old);
    assert!(
        !Arc::ptr_eq(&key, &changed.lookup("sk-a").unwrap()),
        "a changed limit starts afresh"
    );
}

/// Waits until just after the next whole second, so what follows lands in one bucket.
fn next_second() {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::thread::sleep(Duration::from_millis(
        u64::try_from(1_050 - ms % 1_000).unwrap(),
    ));
}

/// A query by time bucket (`every`, as the admin page's charts ask) through `store`'s `record`,
/// `flush` and `query`: 3 records in one second, 2 in the next, per bucket and in order.
pub(crate) fn assert_buckets(
    record: &dyn Fn(UsageRecord),
    flush: &dyn Fn(),
    query: &dyn Fn(&UsageQuery) -> Vec<cortex_gateway::meter::UsageEntry>,
) {
    next_second();
    for i in 0..3 {
        record(self::record(i, "alice", "gemma"));
    }
    flush();
    next_second();
    for i in 3..5 {
        record(self::record(i, "alice", "gemma"));
    }
    flush();
    let rows = query(&UsageQuery::default().every(Duration::from_secs(1)));
    let per_bucket: Vec<u64> = rows.iter().map(|e| e.totals.requests).collect();
    assert_eq!(per_bucket, [3, 2], "requests per 1 s bucket: {rows:?}");
    let starts: Vec<u128> = rows
        .iter()
        .map(|e| {
            e.from
                .expect("a bucketed row has its bucket's start")
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        })
        .collect();
    assert!(starts.iter().all(|ms| ms % 1_000 == 0), "{starts:?}");
    assert_eq!(starts[1] - starts[0], 1_000, "{starts:?}");
    // Without `every`: one total, no bucket.
    let all = query(&UsageQuery::default());
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].totals.requests, all[0].from), (5, None));
}

#[test]
fn sqlite_sums_by_time_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let usage = SqliteUsage::open(dir.path().join("usage.sqlite3")).unwrap();
    assert_buckets(&|r| usage.record(r), &|| usage.flush(), &|q| {
        usage.query(q).unwrap()
    });
}
