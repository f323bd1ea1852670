//! Usage records in a real PostgreSQL server (feature `postgres`; Debian's server, started by the
//! test in a temporary directory on a free port, killed and removed afterwards).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cortex_gateway::meter::{PostgresUsage, UsageQuery, UsageSink as _};
use cortex_testkit::postgres::Postgres;

use super::record;

fn found(usage: &PostgresUsage) -> u64 {
    usage
        .query(&UsageQuery::default())
        .unwrap()
        .iter()
        .map(|e| e.totals.requests)
        .sum()
}

/// Two gateways write to one database under load; after the server restarts, every record is
/// there, and totals add up across gateways.
#[test]
fn records_of_two_gateways_are_all_there_after_the_server_restarts() {
    let mut pg = Postgres::start();
    let gateways: Vec<Arc<PostgresUsage>> = ["gw-a", "gw-b"]
        .iter()
        .map(|id| Arc::new(PostgresUsage::for_gateway(&pg.params(), 65_536, *id).unwrap()))
        .collect();
    // 4 threads per gateway × 5,000 records.
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let usage = Arc::clone(&gateways[usize::try_from(t % 2).unwrap()]);
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    let key = if t < 4 { "alice" } else { "bob" };
                    usage.record(record(t * 5_000 + i, key, "gemma"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for usage in gateways {
        assert_eq!(usage.dropped(), 0);
        drop(Arc::into_inner(usage).unwrap()); // flushes and closes
    }
    pg.restart();
    let reader = PostgresUsage::open(&pg.params()).unwrap();
    assert_eq!(
        found(&reader),
        40_000,
        "records written vs found after the restart"
    );
    let alice = reader.query(&UsageQuery::default().key("alice")).unwrap();
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].totals.requests, 20_000);
    assert_eq!(alice[0].totals.prompt_tokens, 200_000);
    let expected_completion: u64 = (0..4u64)
        .flat_map(|t| (0..5_000).map(move |i| (t * 5_000 + i) % 7))
        .sum();
    assert_eq!(alice[0].totals.completion_tokens, expected_completion);
}

/// The server is killed (SIGKILL, as a crash) in the middle of a steady load and started again
/// 3 s later: `record` never waits for it (the request path's cost is the same up or down), the
/// writer reconnects by itself, and every record is there — nothing was lost, the buffer held
/// them all.
#[test]
fn killing_the_server_mid_load_loses_nothing_and_record_never_waits() {
    let mut pg = Postgres::start();
    let usage = Arc::new(PostgresUsage::open(&pg.params()).unwrap());
    let down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    // 2,000 records a second from one thread, timing each `record`.
    let load = {
        let (usage, down, stop) = (Arc::clone(&usage), Arc::clone(&down), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut up_times, mut down_times) = (Vec::new(), Vec::new());
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let was_down = down.load(Ordering::Relaxed);
                let t = Instant::now();
                usage.record(record(i, "alice", "gemma"));
                let took = t.elapsed();
                if was_down {
                    down_times.push(took);
                } else {
                    up_times.push(took);
                }
                i += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            (i, up_times, down_times)
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    down.store(true, Ordering::Relaxed);
    pg.kill();
    std::thread::sleep(Duration::from_secs(3));
    pg.restart();
    down.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (written, mut up_times, mut down_times) = load.join().unwrap();
    usage.flush();
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 99 / 100])
    };
    let (up_p50, up_p99) = median(&mut up_times);
    let (down_p50, down_p99) = median(&mut down_times);
    eprintln!(
        "record() with the database up: p50 {up_p50:?}, p99 {up_p99:?} ({} calls); down: p50 {down_p50:?}, p99 {down_p99:?} ({} calls)",
        up_times.len(),
        down_times.len()
    );
    assert!(
        down_times.len() > 1_000,
        "the load ran while the server was down"
    );
    assert_eq!(usage.dropped(), 0);
    let found = found(&usage);
    eprintln!("killed mid-load: {written} records written, {found} found");
    assert_eq!(found, written, "records written vs found after the kill");
}

/// The server stays down past the buffer: what overflows is dropped and counted, `record` still
/// never waits, and once the server is back everything that was buffered lands — found plus
/// dropped is what was written.
#[test]
fn a_server_down_past_the_buffer_loses_only_what_overflows() {
    let mut pg = Postgres::start();
    let usage = PostgresUsage::with_buffer(&pg.params(), 500).unwrap();
    usage.record(record(0, "alice", "gemma"));
    usage.flush();
    pg.kill();
    let started = Instant::now();
    for i in 1..=10_000 {
        usage.record(record(i, "alice", "gemma"));
    }
    eprintln!(
        "10,000 records against a database that is down: {:?}",
        started.elapsed()
    );
    let dropped = usage.dropped();
    // The writer holds one batch it keeps retrying, and 500 wait in the channel.
    assert!(
        (10_000 - 500 - 1_024..=10_000 - 500).contains(&dropped),
        "dropped {dropped}"
    );
    pg.restart();
    usage.flush();
    let found = found(&usage);
    eprintln!(
        "down past the buffer: 10,001 written, {found} found, {dropped} dropped (buffer 500)"
    );
    assert_eq!(found + dropped, 10_001, "found {found}, dropped {dropped}");
}

/// A TCP relay to `upstream` on a free loopback port that cuts the first connection whose
/// server sent `COMMIT`'s completion (`CommandComplete "COMMIT"`), before the client sees it: the
/// transaction took effect, the client sees its connection die. A fault no real server makes on
/// demand; every other byte passes as sent. Returns the port and how many answers it swallowed.
fn relay_losing_the_first_commit_answer(upstream: u16) -> (u16, Arc<AtomicU64>) {
    use std::io::{Read as _, Write as _};
    use std::net::{Shutdown, TcpListener, TcpStream};
    // 'C', length 11 (itself and "COMMIT\0"), "COMMIT\0".
    const COMMIT_DONE: &[u8] = b"C\0\0\0\x0bCOMMIT\0";
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let swallowed = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&swallowed);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(Shutdown::Write);
            });
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                let mut buf = vec![0_u8; 64 * 1024];
                // Bytes kept from the end of the last read, so a tag split across reads is seen.
                let mut tail: Vec<u8> = Vec::new();
                loop {
                    let n = match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut seen = std::mem::take(&mut tail);
                    seen.extend_from_slice(&buf[..n]);
                    let hit = seen.windows(COMMIT_DONE.len()).any(|w| w == COMMIT_DONE);
                    if hit && count.fetch_add(1, Ordering::SeqCst) == 0 {
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = server.shutdown(Shutdown::Both);
                        return;
                    }
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    tail = seen[seen.len().saturating_sub(COMMIT_DONE.len())..].to_vec();
                }
                let _ = client.shutdown(Shutdown::Both);
            });
        }
    });
    (port, swallowed)
}

/// The server commits a batch but its answer never reaches the writer (the connection dies
/// after `COMMIT` took effect, as when the server is killed at that moment): the writer retries
/// the batch on a new connection, and the batch's number, committed with it, keeps it from being
/// written twice.
#[test]
fn a_batch_whose_commit_answer_was_lost_is_written_once() {
    let pg = Postgres::start();
    let (port, swallowed) = relay_losing_the_first_commit_answer(pg.port());
    let params = pg
        .params()
        .replace(&format!("port={}", pg.port()), &format!("port={port}"));
    let usage = PostgresUsage::open(&params).unwrap();
    for i in 0..10 {
        usage.record(record(i, "alice", "gemma"));
    }
    usage.flush();
    assert!(
        swallowed.load(Ordering::SeqCst) >= 1,
        "the relay never cut a commit's answer"
    );
    let direct = PostgresUsage::open(&pg.params()).unwrap();
    assert_eq!(found(&direct), 10, "records written vs found");
    // The writer goes on with the next batches as usual.
    for i in 10..20 {
        usage.record(record(i, "alice", "gemma"));
    }
    usage.flush();
    assert_eq!(found(&direct), 20, "records written vs found");
}

#[test]
fn an_unreachable_server_is_an_error_naming_it_without_its_password() {
    let port = cortex_testkit::free_port();
    let err = PostgresUsage::open(&format!(
        "host=127.0.0.1 port={port} user=cortex password=hunter2 dbname=usage"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}/usage")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn keys_live_in_the_postgres_database_too() {
    let pg = Postgres::start();
    let usage = PostgresUsage::open(&pg.params()).unwrap();
    super::keys_round_trip(&usage);
    // Another gateway on the same database sees them.
    let other = PostgresUsage::open(&pg.params()).unwrap();
    assert_eq!(
        cortex_gateway::auth::KeyDatabase::keys(&other)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn postgres_sums_by_time_bucket() {
    let pg = Postgres::start();
    let usage = PostgresUsage::open(&pg.params()).unwrap();
    super::assert_buckets(&|r| usage.record(r), &|| usage.flush(), &|q| {
        usage.query(q).unwrap()
    });
}
