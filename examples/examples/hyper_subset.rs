//! A plain hyper server with a subset of the gateway's layers: routing, metering and balancing in
//! front of the proxy, no API keys (a trusted network), usage printed per request.
//!
//! ```text
//! cargo run -p cortex-examples --example hyper_subset -- UPSTREAM_URL [PORT]
//! ```
//!
//! `UPSTREAM_URL` is any OpenAI-compatible server (a `llama-server`, say), registered as model
//! `local`. Ctrl-C stops accepting and exits.

use std::sync::Arc;

use cortex_core::{Endpoint, EngineKind, InMemoryRegistry, InstanceId, ModelId, Registry as _};
use cortex_gateway::ServiceBuilderExt as _;
use cortex_gateway::balance::Policy;
use cortex_gateway::meter::UsageRecord;
use cortex_gateway::proxy::Proxy;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let upstream = args
        .next()
        .ok_or("usage: hyper_subset UPSTREAM_URL [PORT]")?;
    let port: u16 = args.next().map_or(Ok(8081), |p| p.parse())?;

    let registry = Arc::new(InMemoryRegistry::new());
    registry.register(Endpoint::new(
        ModelId::new("local")?,
        "local",
        0,
        InstanceId::new("upstream"),
        EngineKind::LLAMA_CPP,
        upstream.parse()?,
    ));
    let service = tower::ServiceBuilder::new()
        .cortex_route(registry)
        .cortex_meter(|record: UsageRecord| {
            println!(
                "{} {} {:?} tokens={:?} latency={:?}",
                record.request_id,
                record.model.as_deref().unwrap_or("-"),
                record.status,
                record.usage.total_tokens,
                record.latency
            );
        })
        .cortex_balance(Policy::RoundRobin)
        .service(Proxy::new());

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        tokio::spawn(connection);
    }
}
