//! The HTTP probe against loopback servers replaying the engines' real answers: llama-server's
//! (`testdata/llama-server-captures/01_health.txt`, the loading body of `llama-server.md`) and
//! vLLM's (`testdata/vllm-0.32.0/cpu/captures/run8_uni`: health and a completion, for the warm-up).

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

/// vLLM's captured answer `NAME` (`testdata/vllm-0.32.0/cpu/captures/run8_uni`): its head as
/// captured (CRLF) and its body.
fn vllm_answer(name: &str) -> Vec<u8> {
    let dir = facts().join("vllm-0.32.0/cpu/captures/run8_uni");
    let head = std::fs::read_to_string(dir.join(format!("{name}.headers"))).unwrap();
    let mut out = head.trim_end().to_owned().into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend(std::fs::read(dir.join(format!("{name}.body"))).unwrap());
    out
}

/// A vLLM stand-in answering `GET /health` with vLLM's 200 and `POST /v1/completions` with its
/// captured completion once `warm` is set (a 500 before, as a vLLM whose engine cannot run yet
/// answers); it records the body of every completion request.
async fn vllm_like(
    warm: std::sync::Arc<std::sync::atomic::AtomicBool>,
    posts: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (warm, posts) = (warm.clone(), posts.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let answer = if request.starts_with("GET /health") {
                    vllm_answer("health")
                } else if request.starts_with("POST /v1/completions") {
                    let body = request.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
                    posts.lock().unwrap().push(body);
                    if warm.load(std::sync::atomic::Ordering::SeqCst) {
                        vllm_answer("completions")
                    } else {
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n".to_vec()
                    }
                } else {
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec()
                };
                let _ = socket.write_all(&answer).await;
            });
        }
    });
    port
}

/// With a warm-up, a health 200 is ready only once the warm-up completion was answered 2xx
/// (until then loading, saying why); the request names the served model; an instance is warmed
/// up once. Without one, no completion is ever sent.
#[tokio::test]
async fn a_warm_up_completion_must_succeed_before_ready() {
    let warm = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let posts = std::sync::Arc::default();
    let port = vllm_like(warm.clone(), std::sync::Arc::clone(&posts)).await;
    let probe = HttpProbe::default();
    let spec = HealthSpec::new("/health").with_warmup(cortex_core::Warmup::new(
        "/v1/completions",
        serde_json::json!({"prompt": "Hello", "max_tokens": 1}),
    ));
    let ep = endpoint(port);

    let status = probe.probe(&ep, &spec).await;
    let HealthStatus::Loading {
        detail: Some(detail),
    } = &status
    else {
        panic!("{status:?}");
    };
    assert!(
        detail.contains("warm-up request to") && detail.contains("answered 500"),
        "{detail}"
    );
    warm.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(probe.probe(&ep, &spec).await, HealthStatus::Ready);
    assert_eq!(probe.probe(&ep, &spec).await, HealthStatus::Ready);
    let sent = posts.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "warmed up once, after one failure: {sent:?}");
    let body: serde_json::Value = serde_json::from_str(&sent[1]).unwrap();
    assert_eq!(body["model"], ep.served_name.to_string());
    assert_eq!(body["max_tokens"], 1);

    // Without a warm-up, the health answer alone decides.
    let cold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let none = std::sync::Arc::default();
    let port = vllm_like(cold, std::sync::Arc::clone(&none)).await;
    assert_eq!(
        probe
            .probe(&endpoint(port), &HealthSpec::new("/health"))
            .await,
        HealthStatus::Ready
    );
    assert!(none.lock().unwrap().is_empty());
}
