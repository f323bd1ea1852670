//! The gateway's own cost, in process: the same trivial upstream service called directly and
//! through every layer but the proxy (auth, route, meter, balance, breaker, queue), per request
//! and per streamed chunk. The load script (scripts/load) measures the same over real sockets.
#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use cortex_core::{Endpoint, EngineKind, InMemoryRegistry, InstanceId, ModelId, Registry as _};
use cortex_gateway::ServiceBuilderExt;
use cortex_gateway::auth::{ApiKey, InMemoryKeyStore};
use cortex_gateway::balance::Policy;
use cortex_gateway::breaker::CircuitBreakerLayer;
use cortex_gateway::meter::InMemoryUsage;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
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

/// The upstream: a chat completion, or a 64-chunk stream, from memory.
async fn upstream(
    req: Request<Full<Bytes>>,
) -> Result<Response<http_body_util::Either<Full<Bytes>, StreamBody<futures_iter::Iter>>>, Infallible>
{
    let streamed = req.uri().path() == "/stream";
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
    Request::post(path)
        .header("authorization", "Bearer sk-bench")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = Arc::new(InMemoryRegistry::new());
    for replica in 0..2 {
        registry.register(Endpoint::new(
            ModelId::new("gemma").unwrap(),
            "gemma",
            replica,
            InstanceId::new(format!("r{replica}")),
            EngineKind::LLAMA_CPP,
            "http://127.0.0.1:1".parse().unwrap(),
        ));
    }
    let mut keys = InMemoryKeyStore::new();
    for i in 0..16 {
        keys.insert_key(&format!("sk-other-{i}"), ApiKey::new(format!("other-{i}")));
    }
    keys.insert_key("sk-bench", ApiKey::new("bench"));
    let stack = ServiceBuilder::new()
        .cortex_auth(keys)
        .cortex_route(registry)
        .cortex_meter(Arc::new(InMemoryUsage::new()))
        .cortex_balance(Policy::LeastInFlight)
        .cortex_breaker(CircuitBreakerLayer::new())
        .cortex_queue(64)
        .service_fn(upstream);
    let direct = tower::service_fn(upstream);

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
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                black_box(frame.unwrap());
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
