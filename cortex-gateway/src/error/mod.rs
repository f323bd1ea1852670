//! Refusals in OpenAI's shape, `{"error":{"message","type","param","code"}}`.
//!
//! Every layer that turns a request away (401, 403, 404 `model_not_found`, 413, 429, 503, 504)
//! answers with a [`Refusal`] rendered as a response, so `Error = S::Error` stays what the inner
//! service says and the layers drop into axum. The response carries a [`Refused`] extension: a
//! circuit breaker outside the layer that refused knows the replica was never asked and does not
//! count it. Upstream errors are translated by [`cortex_engines::errors::translate`] and keep the
//! engine's message.
//!
//! # Example
//!
//! ```
//! use cortex_gateway::error::{Refusal, RefusalOr};
//! use http_body_util::{BodyExt, Empty};
//!
//! # tokio_test::block_on(async {
//! let response = Refusal::model_not_found("gpt-9").into_response::<Empty<bytes::Bytes>>();
//! assert_eq!(response.status(), 404);
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(json["error"]["code"], "model_not_found");
//! # });
//! ```

mod body;
mod future;

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use cortex_engines::errors::{OpenAiError, kind_for_status};
use http::{HeaderValue, Response, StatusCode, header};

pub use self::body::RefusalOr;
pub use self::future::RefuseOr;

/// Marks a response the gateway produced itself, without asking any replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

/// A refusal in OpenAI's error shape, with its status and, for "try again" answers, a
/// `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    status: StatusCode,
    kind: Cow<'static, str>,
    message: String,
    param: Option<Cow<'static, str>>,
    code: Option<Cow<'static, str>>,
    retry_after: Option<u64>,
}

// === impl Refusal ===

impl Refusal {
    /// A refusal with `status` and `message`; the type follows the status as `OpenAI` uses it.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: Cow::Borrowed(kind_for_status(status.as_u16())),
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// Sets `error.code`.
    pub fn code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets `error.param`.
    pub fn param(mut self, param: impl Into<Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Sets `error.type`.
    pub fn kind(mut self, kind: impl Into<Cow<'static, str>>) -> Self {
        self.kind = kind.into();
        self
    }

    /// Sets `Retry-After`, rounded up to whole seconds (at least 1).
    pub fn retry_after(mut self, wait: Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.retry_after = Some(secs.max(1));
        self
    }

    /// 401: no key was presented.
    pub fn missing_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. Provide it as 'Authorization: Bearer YOUR_KEY' or 'X-Api-Key: YOUR_KEY'.",
        )
        .kind("invalid_request_error")
        .code("missing_api_key")
    }

    /// 401: the key presented is not known.
    pub fn invalid_key() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Incorrect API key provided.")
            .kind("invalid_request_error")
            .code("invalid_api_key")
    }

    /// 403: the key may not use `model`.
    pub fn model_not_allowed(model: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            format!("This API key is not allowed to use the model `{model}`."),
        )
        .param("model")
        .code("model_not_allowed")
    }

    /// 404: no healthy endpoint serves `model`.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .kind("invalid_request_error")
        .param("model")
        .code("model_not_found")
    }

    /// 413: the request body is over `limit` bytes.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is larger than the limit of {limit} bytes."),
        )
        .kind("invalid_request_error")
        .code("request_too_large")
    }

    /// 404: no model may be reached at `method path` (`OpenAI`'s answer to an unknown URL).
    pub fn unknown_url(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("Invalid URL ({method} {path})"),
        )
        .kind("invalid_request_error")
    }

    /// 503: the bytes of the request bodies held now would exceed `budget`.
    pub fn body_budget(budget: &crate::route::BodyBudget) -> Self {
        Self::unavailable(
            format!(
                "The server is holding as many request bytes as it may ({} bytes); try again shortly.",
                budget.limit()
            ),
            "server_overloaded",
            Duration::from_secs(1),
        )
    }

    /// 400: the request body could not be read as JSON.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 429: the key's request rate is used up.
    pub fn rate_limited(wait: Duration) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit reached for requests on this API key.",
        )
        .code("rate_limit_exceeded")
        .retry_after(wait)
    }

    /// 503: the gateway is overloaded or the replicas are unavailable.
    pub fn unavailable(message: impl Into<String>, code: &'static str, wait: Duration) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
            .code(code)
            .retry_after(wait)
    }

    /// The translation of an engine's error answer.
    pub fn from_engine(error: &OpenAiError) -> Self {
        let mut out = Self::new(
            StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_GATEWAY),
            error.message.clone(),
        )
        .kind(error.kind);
        out.param = error.param.clone().map(Cow::Owned);
        out.code = error.code.clone().map(Cow::Owned);
        out.retry_after = error.retry_after.map(u64::from);
        out
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `error.code`, when set.
    pub fn error_code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The JSON body.
    pub fn to_bytes(&self) -> Bytes {
        let body = serde_json::json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        Bytes::from(body.to_string())
    }

    /// The refusal as one server-sent event, `data: {"error": ..}` and a blank line: how a failure
    /// in the middle of a stream reaches the client.
    pub fn to_event(&self) -> Bytes {
        let json = self.to_bytes();
        let mut out = Vec::with_capacity(json.len() + 8);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }

    /// The response, marked [`Refused`].
    pub fn into_response<B>(self) -> Response<RefusalOr<B>> {
        let mut response = self.to_response(RefusalOr::refusal);
        response.extensions_mut().insert(Refused);
        response
    }

    /// The response with the body `wrap` makes of the JSON bytes, not marked [`Refused`] (for
    /// answers that stand for an upstream failure).
    pub fn to_response<T>(&self, wrap: impl FnOnce(Bytes) -> T) -> Response<T> {
        let mut response = Response::new(wrap(self.to_bytes()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}
