//! The proxy's connection pooling against keep-alive upstreams on real sockets: connections are
//! reused, idle ones expire, one the engine closed is never used, and one whose answer was not
//! read to its end is closed, not reused; unreachable and https upstreams get clear 502s.

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use cortex_gateway::proxy::Proxy;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::upstream::{KeepAlive, KeepAliveMode};
use tower::ServiceExt as _;

fn chat() -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap()
}

fn proxy_to(upstream: &KeepAlive) -> Proxy {
    Proxy::to(format!("http://{}", upstream.addr).parse().unwrap())
}

/// One request through `proxy`, its body read to the end: status and body.
async fn send(proxy: &Proxy) -> (u16, String) {
    let response = proxy.clone().oneshot(chat()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let upstream = KeepAlive::start(KeepAliveMode::Keep).await;
    let proxy = proxy_to(&upstream);
    for n in 0..20 {
        let (status, body) = send(&proxy).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!(r#""n":{n}"#)), "{body}");
    }
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn concurrent_requests_open_at_most_one_connection_each_and_reuse_them() {
    let upstream = KeepAlive::start(KeepAliveMode::Keep).await;
    let proxy = proxy_to(&upstream);
    for _ in 0..3 {
        let all = futures_util::future::join_all((0..8).map(|_| send(&proxy))).await;
        assert!(all.iter().all(|(s, _)| *s == 200), "{all:?}");
    }
    assert_eq!(upstream.requests(), 24);
    let opened = upstream.connections();
    assert!(
        (1..=8).contains(&opened),
        "{opened} connections for 8 at a time"
    );
}

#[tokio::test]
async fn an_idle_connection_expires_after_the_pool_idle_timeout() {
    let upstream = KeepAlive::start(KeepAliveMode::Keep).await;
    let proxy = proxy_to(&upstream).pool_idle_timeout(Duration::from_millis(100));
    assert_eq!(send(&proxy).await.0, 200);
    assert_eq!(send(&proxy).await.0, 200);
    assert_eq!(upstream.connections(), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(send(&proxy).await.0, 200);
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn a_connection_the_engine_closed_while_idle_is_never_used() {
    let upstream = KeepAlive::start(KeepAliveMode::CloseAfterOne).await;
    let proxy = proxy_to(&upstream);
    for _ in 0..10 {
        let (status, body) = send(&proxy).await;
        assert_eq!(status, 200, "{body}");
        // The engine's close reaches the pool's connection task in well under this.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(upstream.connections(), 10);
    assert_eq!(upstream.requests(), 10);
}

#[tokio::test]
async fn a_stream_dropped_before_its_end_closes_its_connection() {
    let upstream = KeepAlive::start(KeepAliveMode::SlowStream).await;
    let proxy = proxy_to(&upstream);
    let response = proxy.clone().oneshot(chat()).await.unwrap();
    let mut body = Box::pin(response.into_body());
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    drop(body);
    // A whole stream, on a new connection; then one more on that same connection.
    let (status, text) = send(&proxy).await;
    assert_eq!(status, 200);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(upstream.connections(), 2);
    let (status, _) = send(&proxy).await;
    assert_eq!(status, 200);
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_and_an_https_one_is_refused() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let proxy = Proxy::to(format!("http://{addr}").parse().unwrap());
    let response = proxy.oneshot(chat()).await.unwrap();
    assert_eq!(response.status(), 502);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"]["code"], "upstream_unavailable");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{json}"
    );
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{json}"
    );

    let proxy = Proxy::to("https://127.0.0.1:1".parse().unwrap());
    let response = proxy.oneshot(chat()).await.unwrap();
    assert_eq!(response.status(), 502);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scheme `https` is not supported"),
        "{json}"
    );
}
