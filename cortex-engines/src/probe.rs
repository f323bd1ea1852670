//! [`HttpProbe`]: one HTTP `GET` of an engine's health path, read by the plan's [`HealthSpec`].

use std::time::Duration;

use bytes::Bytes;
use cortex_core::{Endpoint, HealthProbe, HealthSpec, HealthStatus, Refused};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Probes engines over HTTP/1.1, applying each plan's [`HealthSpec`]: any 2xx is ready; the
/// spec's loading statuses are loading (with the engine's message, such as llama-server's
/// `Loading model`); a refused connection is loading or down as the spec says (vLLM does not
/// listen until it is ready; llama-server listens from the start); anything else is down, with
/// the status and body.
///
/// Connections are not reused between probes (an engine that restarts must not be probed over a
/// dead socket), and each probe reads at most 4 KiB of body.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

// === impl HttpProbe ===

impl HttpProbe {
    /// A probe that gives up on one answer after `timeout` (connect and response together).
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Self { client, timeout }
    }
}

impl Default for HttpProbe {
    /// A probe with a 5 s timeout.
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

impl HealthProbe for HttpProbe {
    async fn probe(&self, endpoint: &Endpoint, spec: &HealthSpec) -> HealthStatus {
        let url = format!(
            "{}{}",
            endpoint.base_url.to_string().trim_end_matches('/'),
            spec.path
        );
        let uri: http::Uri = match url.parse() {
            Ok(uri) => uri,
            Err(e) => return HealthStatus::down(format!("invalid health URL {url}: {e}")),
        };
        let answer = tokio::time::timeout(self.timeout, async {
            let response = self.client.get(uri).await?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), 4096)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, body))
        })
        .await;
        match answer {
            Err(_) => HealthStatus::down(format!(
                "no answer from {url} within {} ms",
                self.timeout.as_millis()
            )),
            Ok(Err(e)) if is_refused(&e) => match spec.refused {
                Refused::Loading => HealthStatus::Loading {
                    detail: Some("not listening yet".into()),
                },
                Refused::Down => HealthStatus::down("connection refused"),
            },
            Ok(Err(e)) => HealthStatus::down(format!("{url}: {}", cortex_core::error_chain(&e))),
            Ok(Ok((status, body))) => spec.classify_status(status, message(&body).as_deref()),
        }
    }
}

/// The engine's message: `error.message` of an OpenAI-shaped body, else the text, else nothing.
fn message(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(m) = json.pointer("/error/message").and_then(|m| m.as_str()) {
            return Some(m.to_owned());
        }
    }
    let text = String::from_utf8_lossy(body);
    Some(text.trim().chars().take(200).collect())
}

fn is_refused(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = err.source();
    }
    false
}
