//! An axum application that serves its own routes beside the gateway: every gateway layer (API
//! keys, routing, metering, balancing, circuit breaking, queueing, the proxy) on `/v1/*`, and the
//! application's own handlers, which share the gateway's registry and usage, on the other paths.
//!
//! ```text
//! CORTEX_API_KEY=sk-mine cargo run -p cortex-examples --example axum_gateway -- UPSTREAM_URL [PORT]
//! ```
//!
//! `UPSTREAM_URL` is any OpenAI-compatible server (a `llama-server`, say), registered as model
//! `local`; `CORTEX_API_KEY` (default `sk-axum-example`) is the one key the gateway accepts.
//!
//! - `GET /` — the application's own page (no key).
//! - `GET /app/usage` — the application's view of the gateway's usage totals, as JSON (no key here;
//!   put your own auth in front of it).
//! - `POST /v1/chat/completions`, `GET /v1/models`, … — the gateway. `route_service` keeps the
//!   whole path (`nest_service` would strip `/v1`, which the upstream needs).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use cortex_core::{Endpoint, EngineKind, InMemoryRegistry, InstanceId, ModelId, Registry as _};
use cortex_gateway::auth::{ApiKey, InMemoryKeyStore};
use cortex_gateway::builder::GatewayBuilder;
use cortex_gateway::meter::InMemoryUsage;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let upstream = args
        .next()
        .ok_or("usage: axum_gateway UPSTREAM_URL [PORT]")?;
    let port: u16 = args.next().map_or(Ok(8082), |p| p.parse())?;
    let key = std::env::var("CORTEX_API_KEY").unwrap_or_else(|_| "sk-axum-example".to_owned());

    let registry = Arc::new(InMemoryRegistry::new());
    registry.register(Endpoint::new(
        ModelId::new("local")?,
        "local",
        0,
        InstanceId::new("upstream"),
        EngineKind::LLAMA_CPP,
        upstream.parse()?,
    ));
    let mut keys = InMemoryKeyStore::new();
    keys.insert_key(&key, ApiKey::new("axum-user"));
    let usage = Arc::new(InMemoryUsage::new());
    let gateway = GatewayBuilder::new(registry)
        .keys(keys)
        .usage_sink(Arc::clone(&usage))
        .slots(4)
        .build();

    let app = Router::new()
        .route(
            "/",
            get(|| async { "my application, with an LLM gateway under /v1\n" }),
        )
        .route("/app/usage", get(usage_totals))
        .with_state(usage)
        .route_service("/v1/{*path}", gateway);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// The application's own handler, reading what the gateway metered.
async fn usage_totals(State(usage): State<Arc<InMemoryUsage>>) -> axum::Json<serde_json::Value> {
    let rows: Vec<_> = usage
        .totals()
        .into_iter()
        .map(|entry| {
            serde_json::json!({
                "key": entry.key_id.as_deref(),
                "model": entry.model.as_deref(),
                "requests": entry.totals.requests,
                "prompt_tokens": entry.totals.prompt_tokens,
                "completion_tokens": entry.totals.completion_tokens,
            })
        })
        .collect();
    axum::Json(serde_json::Value::Array(rows))
}
