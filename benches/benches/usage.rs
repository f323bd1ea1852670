//! What a usage sink adds to a request: the whole stack but the proxy (auth, route, meter,
//! balance, breaker, queue) over an in-memory upstream, with no sink, the in-memory totals, the
//! SQLite store (`cortex_gateway::meter::SqliteUsage`: a bounded channel and a writer thread
//! committing batches beside the requests) and the PostgreSQL store (`PostgresUsage`, the same
//! writer, a real server started here by `cortex_testkit`), with the server up, then killed (the
//! buffer fills and records are dropped and counted: the cost of the request path while the
//! database is down). Report the ratios to `no_sink`, measured in the same run.
#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use cortex_core::{Endpoint, EngineKind, InMemoryRegistry, InstanceId, ModelId, Registry as _};
use cortex_gateway::ServiceBuilderExt;
use cortex_gateway::balance::Policy;
use cortex_gateway::breaker::CircuitBreakerLayer;
use cortex_gateway::meter::{InMemoryUsage, PostgresUsage, SqliteUsage, UsageRecord, UsageSink};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt};

const CHAT: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1795290870,"model":"gemma","choices":[{"index":0,"message":{"role":"assistant","content":"Red, green and blue."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":7,"total_tokens":21}}"#;
const REQUEST: &[u8] = br#"{"model":"gemma","messages":[{"role":"user","content":"Name three colours."}],"max_tokens":8}"#;

async fn upstream(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(CHAT)));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(response)
}

fn stack(
    sink: impl UsageSink,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = impl std::fmt::Debug>>,
    Error = Infallible,
> + Clone {
    let registry = Arc::new(InMemoryRegistry::new());
    registry.register(Endpoint::new(
        ModelId::new("gemma").unwrap(),
        "gemma",
        0,
        InstanceId::new("r0"),
        EngineKind::LLAMA_CPP,
        "http://127.0.0.1:1".parse().unwrap(),
    ));
    ServiceBuilder::new()
        .cortex_route(registry)
        .cortex_meter(sink)
        .cortex_balance(Policy::LeastInFlight)
        .cortex_breaker(CircuitBreakerLayer::new())
        .cortex_queue(64)
        .service_fn(upstream)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("cortex-usage-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = Arc::new(SqliteUsage::open(dir.join("usage.sqlite3")).unwrap());
    let mut pg = cortex_testkit::postgres::Postgres::start();
    let postgres = Arc::new(PostgresUsage::open(&pg.params()).unwrap());
    let stacks = [
        ("usage::no_sink_request", Sink::None),
        ("usage::memory_sink_request", Sink::Memory),
        ("usage::sqlite_sink_request", Sink::Sqlite),
        ("usage::postgres_sink_request", Sink::Postgres),
        ("usage::postgres_down_sink_request", Sink::PostgresDown),
    ];
    let mut group = c.benchmark_group("usage");
    group.throughput(Throughput::Elements(1));
    for (name, kind) in stacks {
        if kind == Sink::PostgresDown {
            pg.kill();
        }
        let memory = Arc::new(InMemoryUsage::new());
        let sqlite = Arc::clone(&sqlite);
        let postgres = Arc::clone(&postgres);
        let sink = move |record: UsageRecord| match kind {
            Sink::None => drop(record),
            Sink::Memory => memory.record(record),
            Sink::Sqlite => sqlite.record(record),
            Sink::Postgres | Sink::PostgresDown => postgres.record(record),
        };
        let service = stack(sink);
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let req = Request::post("/v1/chat/completions")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(REQUEST)))
                    .unwrap();
                let response = service.clone().oneshot(req).await.unwrap();
                black_box(response.into_body().collect().await.unwrap());
            });
        });
    }
    group.finish();
    sqlite.flush();
    eprintln!(
        "usage bench: SQLite records dropped (buffer full): {}",
        sqlite.dropped()
    );
    drop(sqlite);
    eprintln!(
        "usage bench: PostgreSQL records dropped (buffer full while the server was down): {}",
        postgres.dropped()
    );
    // The server comes back; what was buffered lands before the store closes.
    pg.restart();
    drop(postgres);
    let _ = std::fs::remove_dir_all(&dir);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    None,
    Memory,
    Sqlite,
    Postgres,
    PostgresDown,
}

criterion_group!(benches, bench);
criterion_main!(benches);
