//! Each layer alone over plain services; time-driven ones under paused time.

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cortex_core::{Endpoint, EngineKind, InMemoryRegistry, InstanceId, ModelId, Registry as _};
use cortex_gateway::auth::{ApiKey, InMemoryKeyStore, KeyHash, RequireApiKeyLayer};
use cortex_gateway::balance::{BalanceLayer, Picked, Policy};
use cortex_gateway::breaker::{Breakers, CircuitBreakerLayer, CircuitState};
use cortex_gateway::error::Refusal;
use cortex_gateway::meter::{InMemoryUsage, MeterUsageLayer, UsageRecord};
use cortex_gateway::queue::QueueLayer;
use cortex_gateway::route::{RouteLayer, Routed};
use cortex_gateway::sse::UsageSource;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::Value;
use tower::{Service, ServiceBuilder, ServiceExt};

type Body = Full<Bytes>;

fn ok() -> Response<Body> {
    Response::new(Full::new(Bytes::from_static(b"{}")))
}

async fn body_json<B>(response: Response<B>) -> (StatusCode, http::HeaderMap, Value)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

fn endpoint(served: &str, replica: u32) -> Endpoint {
    Endpoint::new(
        ModelId::new("m").unwrap(),
        served,
        replica,
        InstanceId::new(format!("{served}-{replica}")),
        EngineKind::LLAMA_CPP,
        format!("http://127.0.0.1:{}", 40000 + replica)
            .parse()
            .unwrap(),
    )
}

fn assert_openai_error(json: &Value, code: &str) {
    let error = &json["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
    assert!(error["type"].is_string(), "{json}");
    assert!(error.get("param").is_some(), "{json}");
    assert_eq!(error["code"], code, "{json}");
}

// ---------------------------------------------------------------- auth

fn keys() -> InMemoryKeyStore {
    let mut keys = InMemoryKeyStore::new();
    keys.insert_key("sk-alice", ApiKey::new("alice"));
    keys.insert(
        KeyHash::parse(&KeyHash::of("sk-bob").to_string()).unwrap(),
        ApiKey::new("bob")
            .allow_models(["small"])
            .requests_per_minute(NonZeroU32::new(2).unwrap()),
    );
    keys
}

#[tokio::test]
async fn auth_accepts_bearer_and_x_api_key_and_never_forwards_the_key() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let service = ServiceBuilder::new()
        .layer(RequireApiKeyLayer::new(keys()))
        .service_fn(move |req: Request<Body>| {
            let seen = Arc::clone(&seen2);
            async move {
                assert!(req.headers().get("authorization").is_none());
                assert!(req.headers().get("x-api-key").is_none());
                let key = req.extensions().get::<Arc<ApiKey>>().unwrap();
                seen.lock().unwrap().push(key.id().to_owned());
                Ok::<_, Infallible>(ok())
            }
        });
    for (name, value) in [
        ("authorization", "Bearer sk-alice"),
        ("authorization", "bearer  sk-alice"),
        ("x-api-key", "sk-alice"),
    ] {
        let req = Request::builder()
            .header(name, value)
            .body(Body::default())
            .unwrap();
        assert_eq!(
            service.clone().oneshot(req).await.unwrap().status(),
            200,
            "{name}: {value}"
        );
    }
    assert_eq!(*seen.lock().unwrap(), ["alice", "alice", "alice"]);
}

#[tokio::test]
async fn auth_refuses_missing_and_wrong_keys_in_openai_shape() {
    let service = ServiceBuilder::new()
        .layer(RequireApiKeyLayer::new(keys()))
        .service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(ok()) });
    let (status, _, json) = body_json(
        service
            .clone()
            .oneshot(Request::new(Body::default()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_openai_error(&json, "missing_api_key");
    for (name, value) in [
        ("authorization", "Bearer sk-alicE"),
        ("authorization", "Basic c2stYWxpY2U="),
        ("x-api-key", "sk-alice "),
    ] {
        let req = Request::builder()
            .header(name, value)
            .body(Body::default())
            .unwrap();
        let (status, _, json) = body_json(service.clone().oneshot(req).await.unwrap()).await;
        if value == "sk-alice " {
            // Surrounding whitespace is trimmed, like every HTTP header value.
            assert_eq!(status, 200);
            continue;
        }
        assert_eq!(status, 401, "{value}");
        assert_openai_error(&json, "invalid_api_key");
    }
}

#[tokio::test]
async fn auth_rate_limit_answers_429_with_retry_after() {
    let service = ServiceBuilder::new()
        .layer(RequireApiKeyLayer::new(keys()))
        .service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(ok()) });
    let req = || {
        Request::builder()
            .header("authorization", "Bearer sk-bob")
            .body(Body::default())
            .unwrap()
    };
    assert_eq!(service.clone().oneshot(req()).await.unwrap().status(), 200);
    assert_eq!(service.clone().oneshot(req()).await.unwrap().status(), 200);
    let (status, headers, json) = body_json(service.clone().oneshot(req()).await.unwrap()).await;
    assert_eq!(status, 429);
    assert_openai_error(&json, "rate_limit_exceeded");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    // Two per minute: the next one in about 30 s.
    assert!((1..=30).contains(&retry), "{retry}");
}

#[test]
fn key_hashes_round_trip_and_refuse_bad_text() {
    let hash = KeyHash::of("sk-x");
    assert_eq!(KeyHash::parse(&hash.to_string()).unwrap(), hash);
    assert!(KeyHash::parse("md5:00").unwrap_err().contains("sha256:"));
    assert!(KeyHash::parse("sha256:00").unwrap_err().contains("64"));
    let bad = format!("sha256:{}", "g".repeat(64));
    assert!(KeyHash::parse(&bad).unwrap_err().contains("non-hex"));
    // Debug never shows a key, only the digest.
    assert!(format!("{hash:?}").starts_with("KeyHash(sha256:"));
}

// ---------------------------------------------------------------- route

fn registry() -> Arc<InMemoryRegistry> {
    let registry = Arc::new(InMemoryRegistry::new());
    registry.register(endpoint("small", 0));
    registry.register(endpoint("small", 1));
    registry.register(endpoint("large", 0));
    registry
}

fn routed_echo()
-> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = impl Send> + Clone
{
    tower::service_fn(|req: Request<Body>| async move {
        let routed = req.extensions().get::<Routed>().cloned().unwrap();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::json!({
            "model": &*routed.model,
            "endpoints": routed.endpoints.len(),
            "stream": routed.stream,
            "injected": routed.usage_injected,
            "body": String::from_utf8(body.to_vec()).unwrap(),
        });
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(json.to_string()))))
    })
}

fn post(body: &str) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

#[tokio::test]
async fn route_resolves_and_forwards_the_original_bytes() {
    let service = ServiceBuilder::new()
        .layer(RouteLayer::new(registry()))
        .service(routed_echo());
    let body = r#"{ "messages": [], "model" : "small", "x": 1 }"#;
    let (status, _, json) = body_json(service.clone().oneshot(post(body)).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(json["model"], "small");
    assert_eq!(json["endpoints"], 2);
    assert_eq!(json["body"], body);
    assert_eq!(json["injected"], false);

    // A stream without include_usage gets it spliced in; one with it is left alone.
    let body = r#"{"model":"small","stream":true}"#;
    let (_, _, json) = body_json(service.clone().oneshot(post(body)).await.unwrap()).await;
    assert_eq!(json["injected"], true);
    let sent: Value = serde_json::from_str(json["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let body = r#"{"model":"small","stream":true,"stream_options":{"include_usage":true}}"#;
    let (_, _, json) = body_json(service.oneshot(post(body)).await.unwrap()).await;
    assert_eq!(json["injected"], false);
    assert_eq!(json["body"], body);
}

#[tokio::test]
async fn include_usage_is_spliced_only_into_chat_and_completion_streams() {
    let service = ServiceBuilder::new()
        .layer(RouteLayer::new(registry()))
        .service(routed_echo());
    let body = r#"{"model":"small","stream":true,"input":"hi"}"#;
    for (path, spliced) in [
        ("/v1/chat/completions", true),
        ("/v1/completions", true),
        ("/v1/responses", false),
        ("/v1/embeddings", false),
        ("/v1/rerank", false),
    ] {
        let request = Request::post(path)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let (status, _, json) = body_json(service.clone().oneshot(request).await.unwrap()).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(json["injected"], spliced, "{path}");
        assert_eq!(json["body"] == body, !spliced, "{path}: {}", json["body"]);
    }
}

#[tokio::test]
async fn route_refuses_paths_outside_the_surface_before_reading_the_body() {
    let service = ServiceBuilder::new()
        .layer(RouteLayer::new(registry()))
        .service(routed_echo());
    // A body that never ends: a refusal that waited for it would hang.
    let body = StreamBody::new(futures_util::stream::pending::<
        Result<http_body::Frame<Bytes>, Infallible>,
    >());
    let request = Request::post("/slots/0?action=erase").body(body).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), service.oneshot(request))
        .await
        .expect("refused without reading the body")
        .unwrap();
    let (status, _, json) = body_json(response).await;
    assert_eq!(status, 404);
    assert_eq!(json["error"]["message"], "Invalid URL (POST /slots/0)");
}

#[tokio::test]
async fn route_forwards_a_body_in_many_frames_whole() {
    let body = r#"{"messages":[{"role":"user","content":"hi"}],"model":"small","max_tokens":4}"#;
    // Frames of 1, 0, 7, 3, ... bytes: the first one alone, an empty one, then the rest.
    let mut frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = Vec::new();
    let (first, rest) = body.as_bytes().split_at(1);
    frames.push(Ok(http_body::Frame::data(Bytes::copy_from_slice(first))));
    frames.push(Ok(http_body::Frame::data(Bytes::new())));
    for (i, c) in rest.chunks(7).enumerate() {
        let (a, b) = c.split_at(c.len().min(i % 4));
        frames.push(Ok(http_body::Frame::data(Bytes::copy_from_slice(a))));
        frames.push(Ok(http_body::Frame::data(Bytes::copy_from_slice(b))));
    }
    let req = Request::post("/v1/chat/completions")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(RouteLayer::new(registry()))
        .service(routed_echo());
    let (status, _, json) = body_json(service.oneshot(req).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(json["model"], "small");
    assert_eq!(json["body"], body);
}

#[tokio::test]
async fn route_refusals() {
    let service = ServiceBuilder::new()
        .layer(RouteLayer::new(registry()).body_limit(64))
        .service(routed_echo());
    let (status, _, json) = body_json(
        service
            .clone()
            .oneshot(post(r#"{"model":"gpt-9"}"#))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_openai_error(&json, "model_not_found");
    assert!(json["error"]["message"].as_str().unwrap().contains("gpt-9"));

    let (status, _, json) = body_json(
        service
            .clone()
            .oneshot(post(r#"{"messages":[]}"#))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(json["error"]["param"], "model");

    let (status, _, json) = body_json(
        service
            .clone()
            .oneshot(post(r#"{"model": "small""#))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(json["error"]["type"], "invalid_request_error");

    // Over the limit by Content-Length, and by bytes when no length is declared.
    let big = format!(r#"{{"model":"small","pad":"{}"}}"#, "x".repeat(100));
    let mut req = post(&big);
    req.headers_mut().insert("content-length", big.len().into());
    let (status, _, json) = body_json(service.clone().oneshot(req).await.unwrap()).await;
    assert_eq!(status, 413);
    assert_openai_error(&json, "request_too_large");
    let chunks: Vec<Result<http_body::Frame<Bytes>, Infallible>> = big
        .as_bytes()
        .chunks(10)
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let streamed = StreamBody::new(futures_util::stream::iter(chunks));
    let req = Request::post("/v1/chat/completions")
        .body(streamed)
        .unwrap();
    let service2 = ServiceBuilder::new()
        .layer(RouteLayer::new(registry()).body_limit(64))
        .service(routed_echo());
    let (status, _, _) = body_json(service2.oneshot(req).await.unwrap()).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn route_asks_why_a_model_has_no_endpoints() {
    let service = ServiceBuilder::new()
        .layer(RouteLayer::new(registry()).unrouted(|model: &str| {
            (model == "resting").then(|| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The model `resting` is stopped.",
                )
                .code("model_stopped")
            })
        }))
        .service(routed_echo());
    // Known but not running: the hook's refusal, nothing forwarded.
    let (status, _, json) = body_json(
        service
            .clone()
            .oneshot(post(r#"{"model":"resting"}"#))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    assert_openai_error(&json, "model_stopped");
    assert_eq!(json["error"]["message"], "The model `resting` is stopped.");
    // Unknown to the hook: still 404; and a running model is not asked about.
    let (status, _, json) = body_json(
        service
            .clone()
            .oneshot(post(r#"{"model":"gpt-9"}"#))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_openai_error(&json, "model_not_found");
    let (status, _, _) =
        body_json(service.oneshot(post(r#"{"model":"small"}"#)).await.unwrap()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn route_checks_the_keys_models_and_lists_only_those() {
    let service = ServiceBuilder::new()
        .layer(RequireApiKeyLayer::new(keys()))
        .layer(RouteLayer::new(registry()))
        .service(routed_echo());
    let with_key = |key: &str, req: Request<Body>| {
        let mut req = req;
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        req
    };
    let (status, _, json) = body_json(
        service
            .clone()
            .oneshot(with_key("sk-bob", post(r#"{"model":"large"}"#)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert_openai_error(&json, "model_not_allowed");

    let list = |key: &str| {
        with_key(
            key,
            Request::get("/v1/models").body(Body::default()).unwrap(),
        )
    };
    let (status, _, json) = body_json(service.clone().oneshot(list("sk-bob")).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(json["object"], "list");
    let ids: Vec<&str> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["small"]);
    let (_, _, json) = body_json(service.oneshot(list("sk-alice")).await.unwrap()).await;
    let ids: Vec<&str> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["large", "small"]);
}

/// Aliases and fallbacks (`route::Names`): an alias reaches its model with the body's `model`
/// rewritten; a model with no usable replica — none registered, or every circuit open — goes to
/// its first usable fallback the key may use; `/v1/models` shows both.
#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one story: the same names from routing to the listing"
)]
async fn aliases_and_fallbacks_route_rewrite_and_list() {
    use cortex_gateway::route::Names;
    let registry = registry();
    registry.register(endpoint("tiny", 0));
    let breakers = Breakers::new();
    let names = Names::new()
        .alias("chat", "small")
        .alias("ghost", "gone")
        .fallback("gone", ["large", "small"])
        .fallback("large", ["tiny"]);
    let mut keys = keys();
    keys.insert_key("sk-carol", ApiKey::new("carol").allow_models(["chat"]));
    keys.insert_key(
        "sk-dave",
        ApiKey::new("dave").allow_models(["gone", "small"]),
    );
    let service = ServiceBuilder::new()
        .layer(RequireApiKeyLayer::new(keys))
        .layer(
            RouteLayer::new(Arc::clone(&registry) as _)
                .names(names)
                .breakers(breakers.clone()),
        )
        .service(routed_echo());
    let ask = |key: &str, body: &str| {
        let mut req = post(body);
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        service.clone().oneshot(req)
    };
    let sent_model = |json: &Value| -> String {
        let sent: Value = serde_json::from_str(json["body"].as_str().unwrap()).unwrap();
        sent["model"].as_str().unwrap().to_owned()
    };

    // The alias: routed to `small`, the body says `small` (its last `model` member).
    let (status, _, json) = body_json(
        ask(
            "sk-alice",
            r#"{"model":"chat","messages":[],"stream":true}"#,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json["model"], "small");
    assert_eq!(json["endpoints"], 2);
    assert_eq!(sent_model(&json), "small");
    assert_eq!(json["injected"], true, "the usage splice still happens");
    // Keys: bob may use `small`, so its alias too; carol may use the alias only; carol may
    // not name `small` itself.
    for (key, model, status) in [
        ("sk-bob", "chat", 200),
        ("sk-carol", "chat", 200),
        ("sk-carol", "small", 403),
    ] {
        let response = ask(key, &format!(r#"{{"model":"{model}"}}"#))
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{key} {model}");
    }
    // `gone` has no replica: the first fallback the key may use (alice: `large`; dave may not
    // use `large`, so `small`).
    let (_, _, json) = body_json(ask("sk-alice", r#"{"model":"gone"}"#).await.unwrap()).await;
    assert_eq!(json["model"], "large");
    assert_eq!(sent_model(&json), "large");
    let (_, _, json) = body_json(ask("sk-dave", r#"{"model":"gone"}"#).await.unwrap()).await;
    assert_eq!(json["model"], "small");
    // Through an alias of a model without replicas too.
    let (_, _, json) = body_json(ask("sk-alice", r#"{"model":"ghost"}"#).await.unwrap()).await;
    assert_eq!(json["model"], "large");

    // `large` is registered but its one circuit is open: its fallback `tiny` takes the request.
    let failing = ServiceBuilder::new()
        .layer(
            CircuitBreakerLayer::new()
                .breakers(breakers.clone())
                .failures(NonZeroU32::new(1).unwrap()),
        )
        .service_fn(|_req: Request<Body>| async {
            let mut response = ok();
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            Ok::<_, Infallible>(response)
        });
    let mut req = post(r#"{"model":"large"}"#);
    req.extensions_mut().insert(Picked(endpoint("large", 0)));
    let response = failing.oneshot(req).await.unwrap();
    response.into_body().collect().await.unwrap();
    let (_, _, json) = body_json(ask("sk-alice", r#"{"model":"large"}"#).await.unwrap()).await;
    assert_eq!(json["model"], "tiny");
    assert_eq!(sent_model(&json), "tiny");

    // The listing: aliases of served models (not `ghost`: its model is not served), with what
    // they name; fallbacks the key may use.
    let list = |key: &str| {
        let mut req = Request::get("/v1/models").body(Body::default()).unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        service.clone().oneshot(req)
    };
    let (_, _, json) = body_json(list("sk-alice").await.unwrap()).await;
    let data = json["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["chat", "large", "small", "tiny"]);
    assert_eq!(data[0]["alias_of"], "small");
    assert_eq!(data[1]["fallbacks"], serde_json::json!(["tiny"]));
    let (_, _, json) = body_json(list("sk-carol").await.unwrap()).await;
    let ids: Vec<&str> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat"]);
}

// ---------------------------------------------------------------- balance

fn picked_echo(
    log: Arc<Mutex<Vec<u32>>>,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = impl Send> + Clone
{
    tower::service_fn(move |req: Request<Body>| {
        let log = Arc::clone(&log);
        async move {
            log.lock()
                .unwrap()
                .push(req.extensions().get::<Picked>().unwrap().0.replica);
            Ok::<_, Infallible>(ok())
        }
    })
}

fn routed(endpoints: Vec<Endpoint>) -> Request<Body> {
    let mut req = post("{}");
    let routed_json = Routed::clone(&make_routed(endpoints));
    req.extensions_mut().insert(routed_json);
    req
}

fn make_routed(endpoints: Vec<Endpoint>) -> Routed {
    // Routed is non-exhaustive: build it through the route layer.
    let registry = InMemoryRegistry::new();
    for e in endpoints {
        registry.register(e);
    }
    let out = Arc::new(Mutex::new(None));
    let out2 = Arc::clone(&out);
    let service = ServiceBuilder::new()
        .layer(RouteLayer::new(Arc::new(registry)))
        .service_fn(move |req: Request<Body>| {
            *out2.lock().unwrap() = req.extensions().get::<Routed>().cloned();
            async { Ok::<_, Infallible>(ok()) }
        });
    futures_util::FutureExt::now_or_never(service.oneshot(post(r#"{"model":"small"}"#)))
        .unwrap()
        .unwrap();
    out.lock().unwrap().take().unwrap()
}

#[tokio::test]
async fn round_robin_takes_each_replica_in_turn() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let service = ServiceBuilder::new()
        .layer(BalanceLayer::new(Policy::RoundRobin))
        .service(picked_echo(Arc::clone(&log)));
    let replicas = vec![
        endpoint("small", 0),
        endpoint("small", 1),
        endpoint("small", 2),
    ];
    for _ in 0..6 {
        service
            .clone()
            .oneshot(routed(replicas.clone()))
            .await
            .unwrap();
    }
    let log = log.lock().unwrap().clone();
    let mut first = log[..3].to_vec();
    first.sort_unstable();
    assert_eq!(first, [0, 1, 2]);
    assert_eq!(log[..3], log[3..]);
}

#[tokio::test]
async fn least_in_flight_avoids_the_busy_replica_until_its_body_ends() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let service = ServiceBuilder::new()
        .layer(BalanceLayer::new(Policy::LeastInFlight))
        .service(picked_echo(Arc::clone(&log)));
    let replicas = vec![endpoint("small", 0), endpoint("small", 1)];
    // Hold the bodies of 3 answers; whichever replicas they went to, the next picks go to the
    // replica with fewer held bodies.
    let mut held = Vec::new();
    assert_eq!(service.in_flight(&InstanceId::new("small-0")), 0);
    for _ in 0..3 {
        held.push(
            service
                .clone()
                .oneshot(routed(replicas.clone()))
                .await
                .unwrap(),
        );
    }
    let counts = |log: &[u32]| {
        (
            log.iter().filter(|r| **r == 0).count(),
            log.iter().filter(|r| **r == 1).count(),
        )
    };
    let (a, b) = counts(&log.lock().unwrap());
    assert!(
        a.abs_diff(b) <= 1,
        "p2c over two replicas alternates: {a} vs {b}"
    );
    let lighter = u32::from(a > b);
    assert_eq!(
        service.in_flight(&InstanceId::new("small-0"))
            + service.in_flight(&InstanceId::new("small-1")),
        3
    );
    log.lock().unwrap().clear();
    held.push(
        service
            .clone()
            .oneshot(routed(replicas.clone()))
            .await
            .unwrap(),
    );
    assert_eq!(log.lock().unwrap()[0], lighter);
    // Ending every body releases the counts.
    for response in held {
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(service.in_flight(&InstanceId::new("small-0")), 0);
    assert_eq!(service.in_flight(&InstanceId::new("small-1")), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn balance_skips_replicas_whose_circuit_is_open() {
    let breakers = Breakers::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let fail_on_0 = {
        let log = Arc::clone(&log);
        tower::service_fn(move |req: Request<Body>| {
            let log = Arc::clone(&log);
            async move {
                let replica = req.extensions().get::<Picked>().unwrap().0.replica;
                log.lock().unwrap().push(replica);
                let mut response = ok();
                if replica == 0 {
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    let service = ServiceBuilder::new()
        .layer(BalanceLayer::new(Policy::RoundRobin).skip_open(breakers.clone()))
        .layer(
            CircuitBreakerLayer::new()
                .breakers(breakers.clone())
                .failures(NonZeroU32::new(2).unwrap()),
        )
        .service(fail_on_0);
    let replicas = vec![endpoint("small", 0), endpoint("small", 1)];
    for _ in 0..4 {
        let response = service
            .clone()
            .oneshot(routed(replicas.clone()))
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
    }
    assert!(matches!(
        breakers.state(&InstanceId::new("small-0")),
        CircuitState::Open { .. }
    ));
    log.lock().unwrap().clear();
    for _ in 0..4 {
        let response = service
            .clone()
            .oneshot(routed(replicas.clone()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(*log.lock().unwrap(), [1, 1, 1, 1]);
}

// ---------------------------------------------------------------- breaker

#[derive(Clone)]
struct Scripted {
    statuses: Arc<Mutex<Vec<u16>>>,
    calls: Arc<AtomicUsize>,
}

impl Scripted {
    fn new(statuses: &[u16]) -> Self {
        Self {
            statuses: Arc::new(Mutex::new(statuses.iter().rev().copied().collect())),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Service<Request<Body>> for Scripted {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let status = self.statuses.lock().unwrap().pop().unwrap_or(200);
        let mut response = ok();
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        std::future::ready(Ok(response))
    }
}

async fn status_of<S>(service: &mut S) -> u16
where
    S: Service<
            Request<Body>,
            Response = Response<cortex_gateway::breaker::ResponseBody<Body>>,
            Error = Infallible,
        >,
{
    let response = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::default()))
        .await
        .unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn breaker_opens_after_consecutive_failures_probes_and_backs_off() {
    let upstream = Scripted::new(&[
        500, 500, 404, 500, 500, 500, 500, 500, /* probe */ 502, /* probe */ 200,
    ]);
    let calls = Arc::clone(&upstream.calls);
    let mut service = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new())
        .service(upstream);
    // A 4xx in between resets the count: 500 500 404 then five 500s open it.
    for expected in [500, 500, 404, 500, 500, 500, 500, 500] {
        assert_eq!(status_of(&mut service).await, expected);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    // Open: answered at once, the upstream is not asked, Retry-After is the cooldown.
    let response = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::default()))
        .await
        .unwrap();
    let (status, headers, json) = body_json(response).await;
    assert_eq!(status, 503);
    assert_openai_error(&json, "replica_unavailable");
    // The 30 s cooldown with its ±20% jitter.
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((24..=36).contains(&retry), "{retry}");
    assert_eq!(calls.load(Ordering::SeqCst), 8);

    // After the cooldown one probe goes through; it fails (502): open again for 60 s ± 20%.
    tokio::time::advance(Duration::from_secs(36)).await;
    assert_eq!(status_of(&mut service).await, 502);
    assert_eq!(calls.load(Ordering::SeqCst), 9);
    tokio::time::advance(Duration::from_secs(47)).await;
    assert_eq!(status_of(&mut service).await, 503);
    assert_eq!(calls.load(Ordering::SeqCst), 9);
    tokio::time::advance(Duration::from_secs(26)).await;
    // The second probe succeeds: closed.
    assert_eq!(status_of(&mut service).await, 200);
    assert_eq!(status_of(&mut service).await, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 11);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn breaker_allows_one_probe_at_a_time_and_counts_error_events_and_ignores_hang_ups() {
    // A stream that ends with an error event is a failure: the tap (the proxy's, here one over a
    // service of the test's own) says so.
    let sse = tower::service_fn(|_req: Request<Body>| async {
        let mut response = Response::new(Full::new(Bytes::from_static(
            b"data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"lost\"}}\n\n",
        )));
        response
            .headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        Ok::<_, Infallible>(cortex_gateway::outcome::tap_response(response, "test"))
    });
    let breakers = Breakers::new();
    let mut service = ServiceBuilder::new()
        .layer(
            CircuitBreakerLayer::new()
                .failures(NonZeroU32::new(2).unwrap())
                .breakers(breakers.clone()),
        )
        .service(sse);
    for _ in 0..2 {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(Request::new(Body::default()))
            .await
            .unwrap();
        // Dropped before its end: the hang-up is not counted.
        drop(response);
    }
    let response = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::default()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let response = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::default()))
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
    let response = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::default()))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    drop(response);

    // Half-open: until the probe's stream sends its first byte, others are refused; then the
    // replica is taken as answering and the circuit closes, however long the stream runs.
    tokio::time::advance(Duration::from_secs(36)).await;
    let probe = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::default()))
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
    let other = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::default()))
        .await
        .unwrap();
    assert_eq!(other.status(), 503);
    let mut probe = probe.into_body();
    probe.frame().await.unwrap().unwrap();
    let other = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::default()))
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

// ---------------------------------------------------------------- queue

type FrameTx = tokio::sync::mpsc::Sender<Result<http_body::Frame<Bytes>, Infallible>>;

fn held_stream() -> (FrameTx, Response<StreamBody<tokio_stream_like::Rx>>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (
        tx,
        Response::new(StreamBody::new(tokio_stream_like::Rx(rx))),
    )
}

#[allow(unreachable_pub)]
mod tokio_stream_like {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;

    /// A receiver as a stream of frames.
    pub struct Rx(pub tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, Infallible>>);

    impl futures_util::Stream for Rx {
        type Item = Result<http_body::Frame<Bytes>, Infallible>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queue_holds_the_permit_until_the_body_ends_and_times_out_waiters() {
    let senders = Arc::new(Mutex::new(Vec::new()));
    let upstream = {
        let senders = Arc::clone(&senders);
        tower::service_fn(move |_req: Request<Body>| {
            let (tx, response) = held_stream();
            senders.lock().unwrap().push(tx);
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let layer = QueueLayer::new(1)
        .max_waiting(1)
        .timeout(Duration::from_secs(5));
    let queues = layer.queues().clone();
    let service = ServiceBuilder::new().layer(layer).service(upstream);

    let first = service
        .clone()
        .oneshot(Request::new(Body::default()))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    // The second waits: its slot is taken by the first's open body.
    let second = tokio::spawn(service.clone().oneshot(Request::new(Body::default())));
    tokio::task::yield_now().await;
    // A third finds the queue full and is refused at once.
    let (status, headers, json) = body_json(
        service
            .clone()
            .oneshot(Request::new(Body::default()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    assert_openai_error(&json, "queue_full");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(senders.lock().unwrap().len(), 1);
    // Ending the first body lets the second through.
    senders.lock().unwrap().clear();
    first.into_body().collect().await.unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(senders.lock().unwrap().len(), 1);

    // While the second's body is open, a waiter times out after 5 s.
    let waiter = tokio::spawn(service.clone().oneshot(Request::new(Body::default())));
    tokio::time::advance(Duration::from_secs(6)).await;
    let (status, _, json) = body_json(waiter.await.unwrap().unwrap()).await;
    assert_eq!(status, 503);
    assert_openai_error(&json, "queue_timeout");
    drop(second);
    drop(queues);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_waiter_whose_client_left_leaves_the_queue_at_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let senders = Arc::new(Mutex::new(Vec::new()));
    let upstream = {
        let senders = Arc::clone(&senders);
        let calls = Arc::clone(&calls);
        tower::service_fn(move |_req: Request<Body>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let (tx, response) = held_stream();
            senders.lock().unwrap().push(tx);
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let service = ServiceBuilder::new()
        .layer(QueueLayer::new(1).max_waiting(1))
        .service(upstream);
    let first = service
        .clone()
        .oneshot(Request::new(Body::default()))
        .await
        .unwrap();
    let waiter = tokio::spawn(service.clone().oneshot(Request::new(Body::default())));
    tokio::task::yield_now().await;
    // The client goes away: the waiting future is dropped.
    waiter.abort();
    let _ = waiter.await;
    // Its place is free again: a new waiter is accepted (max_waiting is 1) ...
    let next = tokio::spawn(service.clone().oneshot(Request::new(Body::default())));
    tokio::task::yield_now().await;
    assert!(!next.is_finished());
    // ... and gets the slot when the first ends; the one that left never reached the upstream.
    drop(first);
    let next = next.await.unwrap().unwrap();
    assert_eq!(next.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------- meter

fn recording() -> (Arc<Mutex<Vec<UsageRecord>>>, MeterUsageLayer) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let records = Arc::clone(&records);
        move |r: UsageRecord| records.lock().unwrap().push(r)
    };
    (records, MeterUsageLayer::new(sink))
}

fn sse_response(body: &'static [u8]) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body)));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

const STREAM_WITH_USAGE: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"timings\":{\"cache_n\":0,\"prompt_n\":9,\"predicted_n\":2}}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n\
data: [DONE]\n\n";

#[tokio::test]
async fn meter_strips_the_injected_usage_chunk_and_records_once() {
    let (records, layer) = recording();
    let service = ServiceBuilder::new()
        .layer(RouteLayer::new(registry()))
        .layer(layer)
        .service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(sse_response(STREAM_WITH_USAGE))
        });
    let response = service
        .clone()
        .oneshot(post(r#"{"model":"small","stream":true}"#))
        .await
        .unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(!text.contains("\"usage\""), "{text}");
    assert!(
        text.contains("timings") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    // Asked for: kept.
    let response = service
        .oneshot(post(
            r#"{"model":"small","stream":true,"stream_options":{"include_usage":true}}"#,
        ))
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], STREAM_WITH_USAGE);

    let records = records.lock().unwrap();
    assert_eq!(records.len(), 2);
    for r in records.iter() {
        assert_eq!(r.usage.total_tokens, 11);
        assert_eq!(r.usage.source, UsageSource::Reported);
        assert!(r.streamed && !r.client_disconnected && !r.failed);
        assert_eq!(r.model.as_deref(), Some("small"));
        assert_eq!(r.status, Some(200));
    }
}

#[tokio::test]
async fn meter_falls_back_to_timings_and_records_hang_ups_and_failures_once() {
    let (records, layer) = recording();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Request<Body>| async move {
            Ok::<_, Infallible>(match req.uri().path() {
                "/timings" => sse_response(
                    b"data: {\"choices\":[],\"timings\":{\"cache_n\":3,\"prompt_n\":4,\"predicted_n\":5}}\n\ndata: [DONE]\n\n",
                ),
                "/error" => sse_response(b"data: {\"error\":{\"message\":\"boom\"}}\n\n"),
                _ => sse_response(b"data: {\"choices\":[]}\n\n"),
            })
        });
    let get = |path: &str| Request::get(path).body(Body::default()).unwrap();
    let response = service.clone().oneshot(get("/timings")).await.unwrap();
    response.into_body().collect().await.unwrap();
    let response = service.clone().oneshot(get("/error")).await.unwrap();
    response.into_body().collect().await.unwrap();
    let response = service.clone().oneshot(get("/hangup")).await.unwrap();
    drop(response);
    // A future dropped before its response is also recorded.
    let mut svc = service.clone();
    let future = svc.ready().await.unwrap().call(get("/never"));
    drop(future);

    let records = records.lock().unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(
        (
            records[0].usage.prompt_tokens,
            records[0].usage.completion_tokens
        ),
        (7, 5)
    );
    assert_eq!(records[0].usage.source, UsageSource::Timings);
    assert!(records[1].failed && !records[1].client_disconnected);
    assert!(records[2].client_disconnected && records[2].usage.source == UsageSource::Missing);
    assert!(records[3].client_disconnected && records[3].status.is_none());
    let ids: std::collections::HashSet<_> = records.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(ids.len(), 4);
}

#[tokio::test]
async fn in_memory_usage_aggregates_by_key_and_model() {
    let usage = Arc::new(InMemoryUsage::new());
    let service = ServiceBuilder::new()
        .layer(RequireApiKeyLayer::new(keys()))
        .layer(RouteLayer::new(registry()))
        .layer(MeterUsageLayer::new(Arc::clone(&usage)))
        .service_fn(|_req: Request<Body>| async {
            let mut response = Response::new(Full::new(Bytes::from_static(
                br#"{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}"#,
            )));
            response.headers_mut().insert("content-type", "application/json".parse().unwrap());
            Ok::<_, Infallible>(response)
        });
    for (key, model) in [
        ("sk-alice", "small"),
        ("sk-alice", "small"),
        ("sk-alice", "large"),
        ("sk-bob", "small"),
    ] {
        let mut req = post(&format!(r#"{{"model":"{model}"}}"#));
        req.headers_mut().insert("x-api-key", key.parse().unwrap());
        let response = service.clone().oneshot(req).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    let totals = usage.totals();
    let rows: Vec<(&str, &str, u64, u64)> = totals
        .iter()
        .map(|e| {
            (
                e.key_id.as_deref().unwrap(),
                e.model.as_deref().unwrap(),
                e.totals.requests,
                e.totals.total_tokens,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("alice", "large", 1, 5),
            ("alice", "small", 2, 10),
            ("bob", "small", 1, 5)
        ]
    );
}

#[test]
fn metrics_are_emitted_under_their_documented_names() {
    use metrics_util::debugging::DebuggingRecorder;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (_records, layer) = recording();
            let service = ServiceBuilder::new()
                .layer(RouteLayer::new(registry()))
                .layer(layer)
                .service_fn(|_req: Request<Body>| async {
                    Ok::<_, Infallible>(sse_response(STREAM_WITH_USAGE))
                });
            let response = service
                .oneshot(post(r#"{"model":"small","stream":true}"#))
                .await
                .unwrap();
            response.into_body().collect().await.unwrap();
        });
    });
    let names: std::collections::BTreeSet<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, ..)| key.key().name().to_owned())
        .collect();
    for name in [
        "cortex_gateway_requests_total",
        "cortex_gateway_request_duration_seconds",
        "cortex_gateway_time_to_first_token_seconds",
        "cortex_gateway_tokens_total",
        "cortex_gateway_in_flight_requests",
        "cortex_gateway_overhead_seconds",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
}

#[tokio::test]
async fn meter_keeps_what_a_stream_showed_when_it_is_dropped_early() {
    let senders = Arc::new(Mutex::new(Vec::new()));
    let upstream = {
        let senders = Arc::clone(&senders);
        tower::service_fn(move |_req: Request<Body>| {
            let (tx, mut response) = held_stream();
            response
                .headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            senders.lock().unwrap().push(tx);
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let (records, layer) = recording();
    let service = ServiceBuilder::new().layer(layer).service(upstream);
    let send = |i: usize, data: &'static [u8]| {
        let tx = senders.lock().unwrap()[i].clone();
        async move {
            tx.send(Ok(http_body::Frame::data(Bytes::from_static(data))))
                .await
                .unwrap();
        }
    };
    let usage: &[u8] = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n";
    // 1. The client read `[DONE]` and closed before the body's end: done, not disconnected.
    let mut body = service
        .clone()
        .oneshot(post("{}"))
        .await
        .unwrap()
        .into_body();
    send(0, usage).await;
    send(0, b"data: [DONE]\n\n").await;
    body.frame().await.unwrap().unwrap();
    body.frame().await.unwrap().unwrap();
    drop(body);
    // 2. The client left after the usage chunk, before `[DONE]`: disconnected, usage kept.
    let mut body = service.oneshot(post("{}")).await.unwrap().into_body();
    send(1, usage).await;
    body.frame().await.unwrap().unwrap();
    drop(body);

    let records = records.lock().unwrap();
    assert_eq!(records.len(), 2);
    assert!(!records[0].client_disconnected && !records[0].failed);
    assert!(records[1].client_disconnected);
    for r in records.iter() {
        assert_eq!(r.usage.total_tokens, 11);
        assert_eq!(r.usage.source, UsageSource::Reported);
    }
}

#[tokio::test]
async fn meter_reads_responses_streams_and_json_bodies_of_any_size() {
    // The Responses API's stream: usage only in `response.completed`, named input/output.
    const RESPONSES: &[u8] = b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"usage\":null}}\n\n\
event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"output\":[],\"usage\":{\"input_tokens\":9,\"output_tokens\":4,\"total_tokens\":13}}}\n\n";
    let (records, layer) = recording();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Request<Body>| async move {
            if req.uri().path() == "/v1/responses" {
                return Ok::<_, Infallible>(sse_response(RESPONSES));
            }
            // A JSON answer of 3 MiB (embeddings of a large batch), usage at the end.
            let mut body = br#"{"object":"list","data":[{"embedding":["#.to_vec();
            body.extend(std::iter::repeat_n(b"0.1,".as_slice(), 3 << 18).flatten());
            body.extend_from_slice(
                br#"0.1]}],"usage":{"prompt_tokens":70000,"total_tokens":70000}}"#,
            );
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok(response)
        });
    for path in ["/v1/responses", "/v1/embeddings"] {
        let response = service
            .clone()
            .oneshot(Request::post(path).body(Body::default()).unwrap())
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
    }
    let records = records.lock().unwrap();
    assert_eq!(records.len(), 2);
    let counts = |r: &UsageRecord| {
        (
            r.usage.prompt_tokens,
            r.usage.completion_tokens,
            r.usage.source,
        )
    };
    assert_eq!(counts(&records[0]), (9, 4, UsageSource::Reported));
    assert!(records[0].streamed && !records[0].failed);
    assert_eq!(counts(&records[1]), (70_000, 0, UsageSource::Reported));
}
