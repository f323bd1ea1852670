//! The HTTP probe against a loopback server replaying llama-server's real answers
//! (`testdata/llama-server-captures/01_health.txt` and the loading body of `llama-server.md`).

use std::path::Path;
use std::time::Duration;

use cortex_core::{
    Endpoint, EngineKind, HealthProbe, HealthSpec, HealthStatus, InstanceId, ModelId, Refused,
};
use cortex_engines::HttpProbe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn facts() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// The raw ready answer, as captured.
fn ready_response() -> Vec<u8> {
    // The capture holds the raw bytes of the answer (CRLF head, then the body).
    std::fs::read(facts().join("llama-server-captures/01_health.txt")).unwrap()
}

/// The loading body, as the facts record it.
fn loading_body() -> String {
    let md = std::fs::read_to_string(facts().join("llama-server.md")).unwrap();
    let line = md
        .lines()
        .find(|l| l.contains("GET /health while loading"))
        .unwrap();
    line.split('`').nth(1).unwrap().to_owned()
}

/// Serves `response` to every connection on a loopback port; `None` accepts and never answers.
async fn serve(response: Option<Vec<u8>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                match response {
                    Some(r) => {
                        let _ = socket.write_all(&r).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    port
}

fn endpoint(port: u16) -> Endpoint {
    Endpoint::new(
        ModelId::new("m").unwrap(),
        "m",
        0,
        InstanceId::new("i"),
        EngineKind::LLAMA_CPP,
        format!("http://127.0.0.1:{port}").parse().unwrap(),
    )
}

fn llama_spec() -> HealthSpec {
    HealthSpec::new("/health")
        .with_loading_statuses([503])
        .with_refused(Refused::Down)
}

#[tokio::test]
async fn ready_loading_down_refused_and_silent() {
    let probe = HttpProbe::new(Duration::from_millis(500));

    let port = serve(Some(ready_response())).await;
    assert_eq!(
        probe.probe(&endpoint(port), &llama_spec()).await,
        HealthStatus::Ready
    );

    let body = loading_body();
    let loading = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let port = serve(Some(loading.into_bytes())).await;
    assert_eq!(
        probe.probe(&endpoint(port), &llama_spec()).await,
        HealthStatus::Loading {
            detail: Some("Loading model".into())
        }
    );

    let port = serve(Some(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom".to_vec(),
    ))
    .await;
    assert_eq!(
        probe.probe(&endpoint(port), &llama_spec()).await,
        HealthStatus::down("/health answered 500: boom")
    );

    // Nothing listening: llama-server's spec says down, vLLM's says loading.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_eq!(
        probe.probe(&endpoint(free), &llama_spec()).await,
        HealthStatus::down("connection refused")
    );
    let vllm = HealthSpec::new("/health").with_refused(Refused::Loading);
    assert!(matches!(
        probe.probe(&endpoint(free), &vllm).await,
        HealthStatus::Loading { .. }
    ));

    let port = serve(None).await;
    let status = probe.probe(&endpoint(port), &llama_spec()).await;
    assert_eq!(
        status,
        HealthStatus::down(format!(
            "no answer from http://127.0.0.1:{port}/health within 500 ms"
        ))
    );
}
