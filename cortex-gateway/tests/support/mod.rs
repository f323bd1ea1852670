//! Shared by the gateway's integration tests: serving a gateway on a real socket, a client, and a
//! scriptable upstream that answers like vLLM.
#![allow(dead_code, unreachable_pub)]

pub mod upstream;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cortex_gateway::meter::UsageRecord;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;

/// Serves `service` on 127.0.0.1 (HTTP/1.1, one task per connection); returns the address.
pub async fn serve<S>(service: S) -> SocketAddr
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<cortex_gateway::GatewayBody>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            stream.set_nodelay(true).unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A usage sink that keeps every record.
pub fn records() -> (
    Arc<Mutex<Vec<UsageRecord>>>,
    impl Fn(UsageRecord) + Send + Sync + 'static,
) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let records = Arc::clone(&records);
        move |r: UsageRecord| records.lock().unwrap().push(r)
    };
    (records, sink)
}

/// Waits (up to 5 s) until `check` holds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The process's resident memory, in bytes (Linux).
pub fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}
