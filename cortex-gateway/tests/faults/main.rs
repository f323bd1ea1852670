//! Faults through the whole stack on real sockets: a hyper server in front, the scriptable
//! vLLM-like upstream behind.

#[path = "../support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cortex_core::{Endpoint, EngineKind, InMemoryRegistry, InstanceId, ModelId, Registry as _};
use cortex_gateway::GatewayBuilder;
use cortex_gateway::proxy::Proxy;
use cortex_gateway::sse::UsageSource;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::upstream::{Action, Upstream, chunk, vllm_error};

fn registry_for(upstream: &Upstream) -> Arc<InMemoryRegistry> {
    let registry = Arc::new(InMemoryRegistry::new());
    registry.register(Endpoint::new(
        ModelId::new("my-model").unwrap(),
        "my-model",
        0,
        InstanceId::new("vllm-0"),
        EngineKind::VLLM,
        format!("http://{}", upstream.addr).parse().unwrap(),
    ));
    registry
}

fn chat(stream: bool) -> Request<Full<Bytes>> {
    let body = serde_json::json!({
        "model": "my-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    });
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn to(addr: std::net::SocketAddr, mut req: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    *req.uri_mut() = format!("http://{addr}{}", req.uri().path())
        .parse()
        .unwrap();
    req
}

async fn json_of(response: http::Response<hyper::body::Incoming>) -> (u16, http::HeaderMap, Value) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

#[tokio::test]
async fn a_connection_reset_mid_stream_becomes_one_error_event_and_a_clean_end() {
    let upstream = Upstream::start(|_, _, _| Action::Stream {
        events: vec![chunk("Hel"), chunk("lo")],
        interval: Duration::from_millis(5),
        reset: true,
    })
    .await;
    let (records, sink) = support::records();
    let gateway = GatewayBuilder::new(registry_for(&upstream))
        .usage_sink(sink)
        .build();
    let addr = support::serve(gateway).await;
    let response = support::client()
        .request(to(addr, chat(true)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the stream ends cleanly")
        .to_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "{text}");
    let last: Value = serde_json::from_str(events[2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_failed");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the stream from replica 0 of `my-model`")
    );
    // No usage chunk leaked, and the request was injected with include_usage upstream.
    assert!(!text.contains("\"usage\""));
    let sent: Value = serde_json::from_str(&upstream.seen.lock().unwrap().requests[0].1).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    support::eventually("the usage record", || records.lock().unwrap().len() == 1).await;
    let record = records.lock().unwrap()[0].clone();
    assert!(record.failed && !record.client_disconnected && record.streamed);
    assert_eq!(record.usage.source, UsageSource::Missing);
    assert_eq!(record.engine, Some(EngineKind::VLLM));
}

#[tokio::test]
async fn a_slow_first_byte_is_504_and_the_upstream_sees_the_hang_up() {
    let upstream = Upstream::start(|_, _, _| Action::Stall {
        delay: Duration::from_secs(10),
        then: Box::new(Action::Json {
            status: 200,
            body: "{}".into(),
            headers: vec![],
        }),
    })
    .await;
    let gateway = GatewayBuilder::new(registry_for(&upstream))
        .proxy(Proxy::new().first_byte_timeout(Duration::from_millis(300)))
        .build();
    let addr = support::serve(gateway).await;
    let started = std::time::Instant::now();
    let (status, _, json) = json_of(
        support::client()
            .request(to(addr, chat(false)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 504);
    assert_eq!(json["error"]["code"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    support::eventually("the upstream sees the cancellation", || {
        upstream.cancelled() == 1
    })
    .await;
}

#[tokio::test]
async fn a_run_of_500s_trips_the_breaker_which_then_answers_at_once() {
    let upstream = Upstream::start(|_, _, _| Action::Json {
        status: 500,
        body: vllm_error(
            500,
            "Internal Server Error",
            "EngineCore encountered an issue.",
        ),
        headers: vec![],
    })
    .await;
    let gateway = GatewayBuilder::new(registry_for(&upstream)).build();
    let addr = support::serve(gateway).await;
    for _ in 0..5 {
        let (status, _, json) = json_of(
            support::client()
                .request(to(addr, chat(false)))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 500);
        // Translated to OpenAI's shape; the engine's message is kept.
        assert_eq!(json["error"]["type"], "server_error");
        assert_eq!(json["error"]["message"], "EngineCore encountered an issue.");
    }
    assert_eq!(upstream.requests(), 5);
    let (status, headers, json) = json_of(
        support::client()
            .request(to(addr, chat(false)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(json["error"]["code"], "replica_unavailable");
    // The 30 s cooldown, with its ±20% jitter.
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((24..=36).contains(&retry), "{retry}");
    assert_eq!(
        upstream.requests(),
        5,
        "an open breaker does not ask the replica"
    );
}

#[tokio::test]
async fn a_429_keeps_its_retry_after_and_gets_openai_shape() {
    let upstream = Upstream::start(|_, _, _| Action::Json {
        status: 429,
        body: vllm_error(429, "Too Many Requests", "The server is at capacity."),
        headers: vec![("retry-after".into(), "7".into())],
    })
    .await;
    let gateway = GatewayBuilder::new(registry_for(&upstream)).build();
    let addr = support::serve(gateway).await;
    let (status, headers, json) = json_of(
        support::client()
            .request(to(addr, chat(false)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(json["error"]["type"], "rate_limit_error");
    assert_eq!(json["error"]["message"], "The server is at capacity.");
    assert!(json["error"].get("param").is_some());
    // 4xx answers do not count against the replica.
    for _ in 0..6 {
        let response = support::client()
            .request(to(addr, chat(false)))
            .await
            .unwrap();
        assert_eq!(response.status(), 429);
        response.into_body().collect().await.unwrap();
    }
}

#[tokio::test]
async fn headers_are_cleaned_both_ways_and_the_upstream_key_replaces_the_clients() {
    let upstream = Upstream::start(|_, _, _| Action::Json {
        status: 200,
        body:
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#
                .into(),
        headers: vec![("keep-alive".into(), "timeout=5".into())],
    })
    .await;
    let mut keys = cortex_gateway::auth::InMemoryKeyStore::new();
    keys.insert_key("sk-client", cortex_gateway::auth::ApiKey::new("client"));
    let gateway = GatewayBuilder::new(registry_for(&upstream))
        .keys(keys)
        .proxy(Proxy::new().upstream_key(|_| Some("Bearer sk-replica".parse().unwrap())))
        .build();
    let addr = support::serve(gateway).await;
    let mut req = to(addr, chat(false));
    let headers = req.headers_mut();
    headers.insert("authorization", "Bearer sk-client".parse().unwrap());
    headers.insert("x-request-id", "abc-123".parse().unwrap());
    headers.insert("connection", "x-secret-hop".parse().unwrap());
    headers.insert("x-secret-hop", "1".parse().unwrap());
    headers.insert("te", "trailers".parse().unwrap());
    headers.insert("accept-encoding", "gzip".parse().unwrap());
    let response = support::client().request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    assert!(!response.headers().contains_key("keep-alive"));
    response.into_body().collect().await.unwrap();
    let seen = upstream.seen.lock().unwrap();
    let sent: std::collections::HashMap<_, _> = seen.headers[0].iter().cloned().collect();
    assert_eq!(sent["authorization"], "Bearer sk-replica");
    assert_eq!(sent["x-request-id"], "abc-123");
    for gone in ["x-api-key", "x-secret-hop", "te", "accept-encoding"] {
        assert!(!sent.contains_key(gone), "{gone} was forwarded: {sent:?}");
    }
    assert_eq!(sent["host"], upstream.addr.to_string());
}

// ------------------------------------------------ a client that hangs up, in every phase

#[tokio::test]
async fn hang_up_while_queued_never_reaches_the_upstream_and_is_recorded() {
    let upstream = Upstream::start(|_, _, _| Action::Endless {
        interval: Duration::from_millis(20),
    })
    .await;
    let (records, sink) = support::records();
    let gateway = GatewayBuilder::new(registry_for(&upstream))
        .usage_sink(sink)
        .slots(1)
        .build();
    let addr = support::serve(gateway).await;
    // The first request takes the only slot and keeps streaming.
    let first = support::client()
        .request(to(addr, chat(true)))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    // The second waits in the queue; its client gives up.
    let second = tokio::spawn(support::client().request(to(addr, chat(true))));
    tokio::time::sleep(Duration::from_millis(200)).await;
    second.abort();
    support::eventually("the queued request's record", || {
        records.lock().unwrap().len() == 1
    })
    .await;
    let record = records.lock().unwrap()[0].clone();
    assert!(record.client_disconnected && record.status.is_none());
    assert_eq!(upstream.requests(), 1);
    // Then the streaming client hangs up too: the upstream sees it.
    drop(first);
    support::eventually("the upstream sees the cancellation", || {
        upstream.cancelled() == 1
    })
    .await;
    support::eventually("the stream's record", || records.lock().unwrap().len() == 2).await;
    assert!(records.lock().unwrap()[1].client_disconnected);
}

#[tokio::test]
async fn hang_up_while_connecting_is_recorded_and_leaves_nothing_behind() {
    // A listener that never accepts, its backlog full: connecting hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let blackhole = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(blackhole),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let registry = Arc::new(InMemoryRegistry::new());
    registry.register(Endpoint::new(
        ModelId::new("my-model").unwrap(),
        "my-model",
        0,
        InstanceId::new("blackhole"),
        EngineKind::VLLM,
        format!("http://{blackhole}").parse().unwrap(),
    ));
    let (records, sink) = support::records();
    let gateway = GatewayBuilder::new(registry)
        .usage_sink(sink)
        .proxy(Proxy::new().connect_timeout(Duration::from_secs(30)))
        .build();
    let addr = support::serve(gateway).await;
    let request = tokio::spawn(support::client().request(to(addr, chat(false))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!request.is_finished(), "still connecting");
    request.abort();
    support::eventually("the connecting request's record", || {
        records.lock().unwrap().len() == 1
    })
    .await;
    let record = records.lock().unwrap()[0].clone();
    assert!(record.client_disconnected && record.status.is_none());
    drop(listener);
}

#[tokio::test]
async fn hang_up_while_waiting_for_the_first_byte_reaches_the_upstream() {
    let upstream = Upstream::start(|_, _, _| Action::Stall {
        delay: Duration::from_secs(30),
        then: Box::new(Action::Json {
            status: 200,
            body: "{}".into(),
            headers: vec![],
        }),
    })
    .await;
    let (records, sink) = support::records();
    let gateway = GatewayBuilder::new(registry_for(&upstream))
        .usage_sink(sink)
        .build();
    let addr = support::serve(gateway).await;
    let request = tokio::spawn(support::client().request(to(addr, chat(false))));
    support::eventually("the upstream has the request", || upstream.requests() == 1).await;
    request.abort();
    support::eventually("the upstream sees the cancellation", || {
        upstream.cancelled() == 1
    })
    .await;
    support::eventually("the record", || records.lock().unwrap().len() == 1).await;
    assert!(records.lock().unwrap()[0].client_disconnected);
}

#[tokio::test]
async fn hang_up_while_streaming_reaches_the_upstream_and_keeps_the_partial_record() {
    let upstream = Upstream::start(|_, _, _| Action::Endless {
        interval: Duration::from_millis(10),
    })
    .await;
    let (records, sink) = support::records();
    let gateway = GatewayBuilder::new(registry_for(&upstream))
        .usage_sink(sink)
        .build();
    let addr = support::serve(gateway).await;
    let response = support::client()
        .request(to(addr, chat(true)))
        .await
        .unwrap();
    let mut body = response.into_body();
    // Frames arrive one by one, as the upstream sends them.
    for _ in 0..3 {
        let frame = body.frame().await.unwrap().unwrap();
        let data = frame.into_data().unwrap();
        assert!(data.starts_with(b"data: {"), "{data:?}");
        assert!(data.ends_with(b"\n\n"));
    }
    drop(body);
    support::eventually("the upstream sees the cancellation", || {
        upstream.cancelled() == 1
    })
    .await;
    support::eventually("the record", || records.lock().unwrap().len() == 1).await;
    let record = records.lock().unwrap()[0].clone();
    assert!(record.client_disconnected && record.streamed && !record.failed);
    assert!(record.time_to_first_token.is_some());
}

fn closed_port() -> u16 {
    // Bound and dropped: nothing listens there, so a connection is refused.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn replica(i: u32, port: u16) -> Endpoint {
    Endpoint::new(
        ModelId::new("m").unwrap(),
        "m",
        i,
        InstanceId::new(format!("m-{i}")),
        EngineKind::VLLM,
        format!("http://127.0.0.1:{port}").parse().unwrap(),
    )
}

/// Failover's bounds: refused connections are retried on the other replicas, at most
/// `max_retries` times per request and only while the shared budget allows; an engine's own error
/// answer is never retried (the request reached it). Real sockets: closed ports refuse, a
/// scripted upstream answers.
#[test]
fn failover_is_bounded_by_retries_and_budget_and_never_retries_an_answer() {
    use cortex_gateway::failover::FailoverLayer;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A snapshot drains the counters: keep the running totals.
    let totals = std::cell::RefCell::new(std::collections::HashMap::<String, u64>::new());
    let counter = |name: &str| -> u64 {
        let mut totals = totals.borrow_mut();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            if let DebugValue::Counter(n) = value {
                *totals.entry(key.key().name().to_owned()).or_default() += n;
            }
        }
        totals.get(name).copied().unwrap_or(0)
    };
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let chat = || {
                Request::post("/v1/chat/completions")
                    .body(Full::new(Bytes::from_static(
                        br#"{"model":"m","messages":[]}"#,
                    )))
                    .unwrap()
            };
            // Four replicas refusing: two retries, then the third refusal is the answer.
            let registry = Arc::new(InMemoryRegistry::new());
            for i in 0..4 {
                registry.register(replica(i, closed_port()));
            }
            let gateway = GatewayBuilder::new(Arc::clone(&registry) as _)
                .failover(FailoverLayer::new().max_retries(2))
                .build();
            let response = tower::ServiceExt::oneshot(gateway, chat()).await.unwrap();
            assert_eq!(response.status(), 502);
            assert_eq!(counter("cortex_gateway_failovers_total"), 2);

            // An empty budget: no retry, counted.
            let gateway = GatewayBuilder::new(Arc::clone(&registry) as _)
                .failover(FailoverLayer::new().budget(Duration::from_secs(1), 0, 0.0))
                .build();
            let response = tower::ServiceExt::oneshot(gateway, chat()).await.unwrap();
            assert_eq!(response.status(), 502);
            assert_eq!(counter("cortex_gateway_failovers_total"), 2);
            assert_eq!(counter("cortex_gateway_failover_budget_exhausted_total"), 1);

            // A refusing replica beside one that answers 500: the refusal fails over, the
            // answer does not (it reached the engine), whatever the order.
            let upstream = Upstream::start(|_, _, _| Action::Json {
                status: 500,
                body: vllm_error(500, "Internal Server Error", "EngineCore died."),
                headers: Vec::new(),
            })
            .await;
            let registry = Arc::new(InMemoryRegistry::new());
            registry.register(replica(0, closed_port()));
            registry.register(replica(1, upstream.addr.port()));
            let gateway = GatewayBuilder::new(registry as _)
                .balance(cortex_gateway::balance::Policy::RoundRobin)
                .build();
            for _ in 0..4 {
                let response = tower::ServiceExt::oneshot(gateway.clone(), chat())
                    .await
                    .unwrap();
                assert_eq!(response.status(), 500);
            }
            assert_eq!(
                upstream.requests(),
                4,
                "each request reached the engine once"
            );
            assert_eq!(counter("cortex_gateway_failovers_total"), 4);
        });
    });
}
