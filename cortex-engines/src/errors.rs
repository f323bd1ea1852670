//! Engine error bodies translated to `OpenAI`'s shape, `{"error":{"message","type","param","code"}}`.
//!
//! llama-server answers `{"error":{"code":400,"message":..,"type":"exceed_context_size_error",..}}`;
//! vLLM answers in two shapes, `{"error":{"message","type":"Bad Request","param","code":400}}`
//! (the type is the HTTP reason phrase) and `FastAPI`'s `{"detail": ..}`, and `{"error":"Unauthorized"}`
//! behind its API key. `OpenAI` SDKs read the status and `error.type`/`error.code`; the engine's own
//! message is always kept.

use cortex_core::EngineKind;
use serde_json::{Value, json};

/// An error in `OpenAI`'s shape, with the status to answer and, for "try again" errors, how long
/// to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenAiError {
    /// The HTTP status.
    pub status: u16,
    /// The engine's message.
    pub message: String,
    /// `OpenAI`'s error type: `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error` or `server_error`.
    pub kind: &'static str,
    /// The request field at fault, when known.
    pub param: Option<String>,
    /// A machine-readable code: `context_length_exceeded`, `model_loading`, `no_free_slot`, ….
    pub code: Option<String>,
    /// Seconds to wait before retrying (the `Retry-After` header), for 503s that pass.
    pub retry_after: Option<u32>,
}

// === impl OpenAiError ===

impl OpenAiError {
    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// `OpenAI`'s error type for an HTTP status.
pub fn kind_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// Translates an engine's error answer (`status`, `body`) to `OpenAI`'s shape.
pub fn translate(engine: &EngineKind, status: u16, body: &[u8]) -> OpenAiError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let (message, engine_type, param) = match json.as_ref() {
        Some(v) => match (v.get("error"), v.get("detail")) {
            (Some(Value::Object(e)), _) => (
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                e.get("type").and_then(Value::as_str).map(str::to_owned),
                e.get("param").and_then(Value::as_str).map(str::to_owned),
            ),
            (Some(Value::String(e)), _) => (e.clone(), None, None),
            (_, Some(Value::String(d))) => (d.clone(), None, None),
            (_, Some(d)) => (d.to_string(), None, None),
            _ => (String::from_utf8_lossy(body).into_owned(), None, None),
        },
        None => (String::from_utf8_lossy(body).trim().to_owned(), None, None),
    };
    let message = if message.is_empty() {
        format!("{engine} answered {status}")
    } else {
        message
    };
    let lower = message.to_lowercase();
    let mut out = OpenAiError {
        status,
        kind: kind_for_status(status),
        param,
        code: None,
        retry_after: None,
        message,
    };
    if engine_type.as_deref() == Some("exceed_context_size_error")
        || lower.contains("maximum context length")
        || lower.contains("exceeds the available context size")
    {
        out.status = 400;
        out.kind = "invalid_request_error";
        out.code = Some("context_length_exceeded".into());
        out.param.get_or_insert_with(|| "messages".into());
    } else if status == 503 && lower.contains("loading model") {
        out.code = Some("model_loading".into());
        out.retry_after = Some(5);
    } else if status == 503 && lower.contains("slot") {
        out.code = Some("no_free_slot".into());
        out.retry_after = Some(1);
    } else if let Some(t) = engine_type.filter(|t| t.ends_with("_error") && !t.contains(' ')) {
        // llama-server's types are already OpenAI-like; keep them as the code.
        out.code = Some(t);
    }
    out
}
