//! [`HttpProbe`]: one HTTP `GET` of an engine's health path, read by the plan's [`HealthSpec`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use cortex_core::{Endpoint, HealthProbe, HealthSpec, HealthStatus, InstanceId, Refused, Warmup};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Probes engines over HTTP/1.1, applying each plan's [`HealthSpec`]: any 2xx is ready; the
/// spec's loading statuses are loading (with the engine's message, such as llama-server's
/// `Loading model`); a refused connection is loading or down as the spec says (vLLM does not
/// listen until it is ready; llama-server listens from the start); anything else is down, with
/// the status and body.
///
/// Where the spec has a [`warmup`](HealthSpec::warmup), an instance whose health path answers
/// ready is ready only once the warm-up request has been answered with 2xx (until then it is
/// loading, with the reason); each instance is warmed up once.
///
/// Connections are not reused between probes (an engine that restarts must not be probed over a
/// dead socket), and each probe reads at most 4 KiB of body.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    /// Instances whose warm-up succeeded (forgotten wholesale past [`WARMED_LIMIT`]: a second
    /// warm-up is harmless).
    warmed: Arc<Mutex<HashSet<InstanceId>>>,
}

/// How many warmed-up instances a probe remembers.
const WARMED_LIMIT: usize = 4096;

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
        Self {
            client,
            timeout,
            warmed: Arc::default(),
        }
    }

    /// `POST` of the warm-up request to `endpoint`; `Err` says why it did not answer 2xx.
    async fn warm_up(&self, endpoint: &Endpoint, warmup: &Warmup) -> Result<(), String> {
        let url = format!(
            "{}{}",
            endpoint.base_url.to_string().trim_end_matches('/'),
            warmup.path
        );
        let mut body = warmup.body.clone();
        if let Some(fields) = body.as_object_mut() {
            fields.insert(
                "model".to_owned(),
                serde_json::Value::String(endpoint.served_name.to_string()),
            );
        }
        let request = http::Request::post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("invalid warm-up request {url}: {e}"))?;
        let answer = self.send(request).await;
        match answer {
            Err(_) => Err(format!("warm-up request to {url} not answered yet")),
            Ok(Err(e)) => Err(format!(
                "warm-up request to {url}: {}",
                cortex_core::error_chain(&e)
            )),
            Ok(Ok((status, _))) if (200..300).contains(&status) => Ok(()),
            Ok(Ok((status, body))) => Err(format!(
                "warm-up request to {url} answered {status}{}",
                message(&body).map(|m| format!(": {m}")).unwrap_or_default()
            )),
        }
    }

    /// Sends `request` within the probe's timeout: its status and at most 4 KiB of its body.
    async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<Result<(u16, Bytes), hyper_util::client::legacy::Error>, tokio::time::error::Elapsed>
    {
        tokio::time::timeout(self.timeout, async {
            let response = self.client.request(request).await?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), 4096)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            Ok((status, body))
        })
        .await
    }

    fn is_warm(&self, id: &InstanceId) -> bool {
        self.warmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(id)
    }

    fn mark_warm(&self, id: &InstanceId) {
        let mut warmed = self.warmed.lock().unwrap_or_else(PoisonError::into_inner);
        if warmed.len() >= WARMED_LIMIT {
            warmed.clear();
        }
        warmed.insert(id.clone());
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
        let Ok(request) = http::Request::get(uri).body(Full::default()) else {
            return HealthStatus::down(format!("invalid health URL {url}"));
        };
        let answer = self.send(request).await;
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
            Ok(Ok((status, body))) => {
                let status = spec.classify_status(status, message(&body).as_deref());
                match &spec.warmup {
                    Some(warmup) if status.is_ready() && !self.is_warm(&endpoint.instance) => {
                        match self.warm_up(endpoint, warmup).await {
                            Ok(()) => {
                                self.mark_warm(&endpoint.instance);
                                HealthStatus::Ready
                            }
                            Err(reason) => HealthStatus::Loading {
                                detail: Some(reason),
                            },
                        }
                    }
                    _ => status,
                }
            }
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
