//! The gateway's own cost, in process: the same trivial upstream service called directly and
//! through every layer but the proxy (auth, route, meter, balance, breaker, queue), per request
//! and per streamed chunk, and through the stack built up one layer at a time (`gateway::layers::…`:
//! each bench's time less the one before it is that layer's cost). Before any timing, the bench
//! checks that every layer it names acted on the request and fails loudly if one did not (a
//! layer left out of the stack would make the figures flatter). The load script (scripts/load)
//! measures the same over real sockets.
#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use cortex_core::{Endpoint, EngineKind, InMemoryRegistry, InstanceId, ModelId, Registry};
use cortex_gateway::ServiceBuilderExt;
use cortex_gateway::auth::{ApiKey, InMemoryKeyStore};
use cortex_gateway::balance::{Picked, Policy};
use cortex_gateway::breaker::CircuitBreakerLayer;
use cortex_gateway::meter::InMemoryUsage;
use cortex_gateway::route::Routed;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use std::sync::atomic::{AtomicU64, Ordering};
use tower::{ServiceBuilder, ServiceExt};

const CHAT: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1795290870,"model":"gemma","choices":[{"index":0,"message":{"role":"assistant","content":"Red, green and blue."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":7,"total_tokens":21}}"#;
const REQUEST: &[u8] = br#"{"model":"gemma","messages":[{"role":"user","content":"Name three colours."}],"max_tokens":8}"#;
const STREAM_REQUEST: &[u8] = br#"{"model":"gemma","messages":[{"role":"user","content":"Name three colours."}],"stream":true}"#;
const CHUNKS: usize = 64;

fn chunk(i: usize) -> Bytes {
    Bytes::from(format!(
        "data: {{\"choices\":[{{\"finish_reason\":null,\"index\":0,\"delta\":{{\"content\":\"t{i}\"}}}}],\"created\":1795290870,\"id\":\"chatcmpl-1\",\"model\":\"gemma\",\"object\":\"chat.completion.chunk\"}}\n\n"
    ))
}

type Frames = Vec<Result<http_body::Frame<Bytes>, Infallible>>;

fn stream_frames() -> Frames {
    let mut frames: Frames = (0..CHUNKS)
        .map(|i| Ok(http_body::Frame::data(chunk(i))))
        .collect();
    frames.push(Ok(http_body::Frame::data(Bytes::from_static(
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":64,\"total_tokens\":78}}\n\n",
    ))));
    frames.push(Ok(http_body::Frame::data(Bytes::from_static(
        b"data: [DONE]\n\n",
    ))));
    frames
}

/// Requests the upstream saw routed (`Routed`) and with a replica picked (`Picked`).
static ROUTED: AtomicU64 = AtomicU64::new(0);
static PICKED: AtomicU64 = AtomicU64::new(0);

/// The upstream: a chat completion, or a 64-chunk stream, from memory.
async fn upstream(
    req: Request<Full<Bytes>>,
) -> Result<Response<http_body_util::Either<Full<Bytes>, StreamBody<futures_iter::Iter>>>, Infallible>
{
    if req.extensions().get::<Routed>().is_some() {
        ROUTED.fetch_add(1, Ordering::Relaxed);
    }
    if req.extensions().get::<Picked>().is_some() {
        PICKED.fetch_add(1, Ordering::Relaxed);
    }
    // A stream when asked for one by a header: the request itself is the OpenAI path every
    // layer routes (a path of its own would be refused by the route layer, and skip the rest).
    let streamed = req.headers().contains_key("x-bench-stream");
    let mut response = if streamed {
        Response::new(http_body_util::Either::Right(StreamBody::new(
            futures_iter::Iter(stream_frames().into_iter()),
        )))
    } else {
        Response::new(http_body_util::Either::Left(Full::new(Bytes::from_static(
            CHAT,
        ))))
    };
    let content_type = if streamed {
        "text/event-stream"
    } else {
        "application/json"
    };
    response
        .headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    Ok(response)
}

#[allow(unreachable_pub, reason = "a bench-local helper")]
mod futures_iter {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;

    /// An iterator of frames as a stream (always ready).
    pub struct Iter(pub std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>);

    impl futures_core::Stream for Iter {
        type Item = Result<http_body::Frame<Bytes>, Infallible>;

        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.next())
        }
    }
}

fn request(path: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
    let streamed = path == "/stream";
    let path = if streamed {
        "/v1/chat/completions"
    } else {
        path
    };
    let mut builder = Request::post(path);
    if streamed {
        builder = builder.header("x-bench-stream", "1");
    }
    builder
        .header("authorization", "Bearer sk-bench")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

/// Fails unless every layer of `$stack` acted: auth refuses a wrong key, route a model nobody
/// serves, the upstream sees the request routed and a replica picked, the meter records it.
macro_rules! assert_every_layer_acts {
    ($runtime:expr, $stack:expr, $usage:expr) => {
        $runtime.block_on(async {
            let mut wrong_key = request("/v1/chat/completions", REQUEST);
            wrong_key
                .headers_mut()
                .insert("authorization", "Bearer sk-wrong".parse().unwrap());
            let status = $stack.clone().oneshot(wrong_key).await.unwrap().status();
            assert_eq!(status, 401, "auth is not in the benched stack");
            let unknown = request(
                "/v1/chat/completions",
                br#"{"model":"nobody","messages":[]}"#,
            );
            let status = $stack.clone().oneshot(unknown).await.unwrap().status();
            assert_eq!(status, 404, "route is not in the benched stack");
            let (routed, picked) = (
                ROUTED.load(Ordering::Relaxed),
                PICKED.load(Ordering::Relaxed),
            );
            let response = $stack
                .clone()
                .oneshot(request("/v1/chat/completions", REQUEST))
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            black_box(response.into_body().collect().await.unwrap());
            assert_eq!(
                ROUTED.load(Ordering::Relaxed),
                routed + 1,
                "route did not act"
            );
            assert_eq!(
                PICKED.load(Ordering::Relaxed),
                picked + 1,
                "balance did not act"
            );
            let metered: u64 = $usage.totals().iter().map(|e| e.totals.requests).sum();
            assert!(metered >= 1, "the meter recorded nothing");
        })
    };
}

/// 17 keys, the bench's among them: the auth layer finds it by digest among others.
fn keys() -> InMemoryKeyStore {
    let mut keys = InMemoryKeyStore::new();
    for i in 0..16 {
        keys.insert_key(&format!("sk-other-{i}"), ApiKey::new(format!("other-{i}")));
    }
    keys.insert_key("sk-bench", ApiKey::new("bench"));
    keys
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let in_memory = Arc::new(InMemoryRegistry::new());
    for replica in 0..2 {
        in_memory.register(Endpoint::new(
            ModelId::new("gemma").unwrap(),
            "gemma",
            replica,
            InstanceId::new(format!("r{replica}")),
            EngineKind::LLAMA_CPP,
            "http://127.0.0.1:1".parse().unwrap(),
        ));
    }
    let registry: Arc<dyn Registry> = in_memory;
    let usage = Arc::new(InMemoryUsage::new());
    let stack = ServiceBuilder::new()
        .cortex_auth(keys())
        .cortex_route(Arc::clone(&registry))
        .cortex_meter(Arc::clone(&usage))
        .cortex_balance(Policy::LeastInFlight)
        .cortex_breaker(CircuitBreakerLayer::new())
        .cortex_queue(64)
        .service_fn(upstream);
    let direct = tower::service_fn(upstream);
    assert_every_layer_acts!(runtime, stack, usage);

    let mut group = c.benchmark_group("gateway");
    group.throughput(Throughput::Elements(1));
    group.bench_function("gateway::direct_request", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = direct
                .oneshot(request("/v1/chat/completions", REQUEST))
                .await
                .unwrap();
            black_box(response.into_body().collect().await.unwrap());
        });
    });
    group.bench_function("gateway::full_stack_request", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = stack
                .clone()
                .oneshot(request("/v1/chat/completions", REQUEST))
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            black_box(response.into_body().collect().await.unwrap());
        });
    });
    // One stream of 64 token chunks (+ the usage chunk the gateway injects and cuts, + [DONE]).
    group.throughput(Throughput::Elements(CHUNKS as u64));
    group.bench_function("gateway::direct_stream_64_chunks", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = direct
                .oneshot(request("/stream", STREAM_REQUEST))
                .await
                .unwrap();
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                black_box(frame.unwrap());
            }
        });
    });
    group.bench_function("gateway::full_stack_stream_64_chunks", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = stack
                .clone()
                .oneshot(request("/stream", STREAM_REQUEST))
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "the stream was refused");
            let mut body = response.into_body();
            let mut frames = 0;
            while let Some(frame) = body.frame().await {
                black_box(frame.unwrap());
                frames += 1;
            }
            assert!(
                frames >= CHUNKS,
                "{frames} frames: the stream did not go through"
            );
        });
    });
    group.finish();
    layers(c, &runtime, &registry);
}

/// The stack built up one layer at a time, each a bench: auth; + route; + meter; + balance;
/// + breaker; + queue (the full stack but the proxy).
fn layers(c: &mut Criterion, runtime: &tokio::runtime::Runtime, registry: &Arc<dyn Registry>) {
    let usage = || Arc::new(InMemoryUsage::new());
    let mut group = c.benchmark_group("gateway::layers");
    group.throughput(Throughput::Elements(1));
    macro_rules! bench_stack {
        ($name:literal, $stack:expr) => {
            let stack = $stack;
            group.bench_function($name, |b| {
                b.to_async(runtime).iter(|| async {
                    let response = stack
                        .clone()
                        .oneshot(request("/v1/chat/completions", REQUEST))
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200, $name);
                    black_box(response.into_body().collect().await.unwrap());
                });
            });
        };
    }
    bench_stack!(
        "1_auth",
        ServiceBuilder::new()
            .cortex_auth(keys())
            .service_fn(upstream)
    );
    bench_stack!(
        "2_route",
        ServiceBuilder::new()
            .cortex_auth(keys())
            .cortex_route(Arc::clone(registry))
            .service_fn(upstream)
    );
    bench_stack!(
        "3_meter",
        ServiceBuilder::new()
            .cortex_auth(keys())
            .cortex_route(Arc::clone(registry))
            .cortex_meter(usage())
            .service_fn(upstream)
    );
    bench_stack!(
        "4_balance",
        ServiceBuilder::new()
            .cortex_auth(keys())
            .cortex_route(Arc::clone(registry))
            .cortex_meter(usage())
            .cortex_balance(Policy::LeastInFlight)
            .service_fn(upstream)
    );
    bench_stack!(
        "5_breaker",
        ServiceBuilder::new()
            .cortex_auth(keys())
            .cortex_route(Arc::clone(registry))
            .cortex_meter(usage())
            .cortex_balance(Policy::LeastInFlight)
            .cortex_breaker(CircuitBreakerLayer::new())
            .service_fn(upstream)
    );
    bench_stack!(
        "6_queue",
        ServiceBuilder::new()
            .cortex_auth(keys())
            .cortex_route(Arc::clone(registry))
            .cortex_meter(usage())
            .cortex_balance(Policy::LeastInFlight)
            .cortex_breaker(CircuitBreakerLayer::new())
            .cortex_queue(64)
            .service_fn(upstream)
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
