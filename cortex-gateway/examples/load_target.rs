//! The processes scripts/load drives: a fast OpenAI-like upstream, the full gateway in front of
//! it, and the baselines it is compared with.
//!
//! ```text
//! load_target upstream PORT [STREAM_INTERVAL_MS]   # chat completions from memory; streams of 16 chunks
//! load_target gateway PORT UPSTREAM_PORT           # the whole stack (key sk-load) to that upstream
//! load_target proxy PORT UPSTREAM_PORT             # routing and the proxy only: the floor
//! load_target relay PORT UPSTREAM_PORT             # a byte relay, no HTTP: the cost of the hop
//! load_target affine PORT UPSTREAM_PORT            # experiment: a connection-affine HTTP proxy
//! load_target lean PORT UPSTREAM_PORT              # experiment: a lean pool of spawned connections
//! load_target streams URL TOTAL CONCURRENCY        # client: time to first byte of streams
//! ```
//!
//! `relay` copies each client connection's bytes to its own upstream connection and back
//! (`tokio::io::copy_bidirectional`): what one more process on the path costs on this machine
//! before any HTTP is parsed, the lower bound for every proxy. `affine` measures a design the
//! gateway's proxy does not use yet (docs/performance.md).
//!
//! `streams` is a client, not a server: it asks for TOTAL streamed chat completions at URL,
//! CONCURRENCY at a time on as many keep-alive connections, and prints one JSON object: the
//! median time from sending a request to its first body byte (`ttfb_us`), and the median delay
//! of every later chunk (`chunk_late_us`: the time since the one before it beyond `upstream`'s
//! `STREAM_INTERVAL_MS`, which it is told with `LOAD_INTERVAL_MS`; what the path adds per
//! chunk, over the upstream's own timer drift).
//!
//! `LOAD_WORKERS=N` sets the tokio worker threads (default: one per core).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cortex_core::{Endpoint, EngineKind, InMemoryRegistry, InstanceId, ModelId, Registry as _};
use cortex_gateway::GatewayBuilder;
use cortex_gateway::auth::{ApiKey, InMemoryKeyStore};
use cortex_gateway::meter::InMemoryUsage;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

const CHAT: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1795290870,"model":"gemma","choices":[{"index":0,"message":{"role":"assistant","content":"Red, green and blue."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":7,"total_tokens":21}}"#;

type Frame = Result<http_body::Frame<Bytes>, Infallible>;
type UpstreamBody = http_body_util::Either<Full<Bytes>, StreamBody<ReceiverStream>>;

/// A channel receiver as a stream of frames.
struct ReceiverStream(tokio::sync::mpsc::Receiver<Frame>);

impl futures_util::Stream for ReceiverStream {
    type Item = Frame;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Frame>> {
        self.0.poll_recv(cx)
    }
}

async fn upstream(
    req: Request<Incoming>,
    interval: Duration,
) -> Result<Response<UpstreamBody>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let streamed = contains(&body, b"\"stream\":true");
    let mut response = if streamed {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for i in 0..16 {
                let event = format!(
                    "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}},\"finish_reason\":null}}],\"object\":\"chat.completion.chunk\"}}\n\n"
                );
                if tx
                    .send(Ok(http_body::Frame::data(Bytes::from(event))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
            let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":16,\"total_tokens\":30}}\n\ndata: [DONE]\n\n";
            let _ = tx
                .send(Ok(http_body::Frame::data(Bytes::from_static(
                    usage.as_bytes(),
                ))))
                .await;
        });
        let mut r = Response::new(http_body_util::Either::Right(StreamBody::new(
            ReceiverStream(rx),
        )));
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        r
    } else {
        let mut r = Response::new(http_body_util::Either::Left(Full::new(Bytes::from_static(
            CHAT,
        ))));
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    };
    response
        .headers_mut()
        .insert("server", "load-upstream".parse().unwrap());
    Ok(response)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn serve<S, B>(port: u16, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    each_connection(port, move |stream| {
        let service = service.clone();
        async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await;
}

/// Listens on `port` (printing the address), and runs `handle` on its own task for each
/// connection, `TCP_NODELAY` set.
async fn each_connection<F, Fut>(port: u16, handle: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(handle(stream));
    }
}

/// Each connection's bytes to a new upstream connection and back, unparsed.
async fn relay(port: u16, upstream: u16) {
    each_connection(port, move |mut client| async move {
        let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
            return;
        };
        let _ = server.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    })
    .await;
}

/// Experiment: each client connection gets its own upstream connection (hyper's low-level
/// client, no pool), and both are driven by one task, so a request and its answer never cross a
/// channel or a thread. No routing and no layers: what a proxy built that way costs.
async fn affine(port: u16, upstream: u16) {
    each_connection(port, move |client| async move {
        let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
            return;
        };
        let _ = server.set_nodelay(true);
        let Ok((sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(server)).await
        else {
            return;
        };
        let sender = Arc::new(tokio::sync::Mutex::new(sender));
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let sender = Arc::clone(&sender);
            async move { sender.lock().await.send_request(req).await }
        });
        let serve = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(client), service);
        let _ = futures_util::future::join(serve, conn).await;
    })
    .await;
}

/// Experiment: a shared pool of hyper low-level client connections, each driven by its own task
/// (as hyper-util's pool does), but with no task spawned per request to return the connection:
/// the answer is read whole, then the connection goes back. No routing, no timers.
async fn lean(port: u16, upstream: u16) {
    type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
    let pool: Arc<std::sync::Mutex<Vec<Sender>>> = Arc::default();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let pool = Arc::clone(&pool);
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await?.to_bytes();
            let idle = pool.lock().unwrap().pop();
            let mut sender = match idle {
                Some(sender) if !sender.is_closed() => sender,
                _ => {
                    let stream = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                        .await
                        .unwrap();
                    let _ = stream.set_nodelay(true);
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                    tokio::spawn(conn);
                    sender
                }
            };
            sender.ready().await?;
            let response = sender
                .send_request(Request::from_parts(parts, Full::new(body)))
                .await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            pool.lock().unwrap().push(sender);
            Ok::<_, hyper::Error>(Response::from_parts(parts, Full::new(body)))
        }
    });
    serve(port, service).await;
}

/// The `streams` client (module docs).
async fn streams(url: &str, total: usize, concurrency: usize) {
    let uri: http::Uri = url.parse().expect("a URL");
    let authority = uri.authority().expect("a host and port").to_string();
    let interval = Duration::from_millis(
        std::env::var("LOAD_INTERVAL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
    );
    let body = r#"{"model":"gemma","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (uri, authority, next) = (uri.clone(), authority.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
                let _ = stream.set_nodelay(true);
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let (mut ttfb, mut late) = (Vec::new(), Vec::new());
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    let req = Request::post(uri.clone())
                        .header("host", &authority)
                        .header("content-type", "application/json")
                        .header("authorization", "Bearer sk-load")
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap();
                    sender.ready().await.unwrap();
                    let sent = std::time::Instant::now();
                    let response = sender.send_request(req).await.unwrap();
                    assert_eq!(response.status(), 200, "{uri}");
                    let mut body = response.into_body();
                    let mut previous: Option<Duration> = None;
                    while let Some(frame) = body.frame().await {
                        let Ok(data) = frame.unwrap().into_data() else {
                            continue;
                        };
                        let now = sent.elapsed();
                        // Chunks may coalesce on the way: the first of a frame's events is
                        // timed, the others came with it (no gap).
                        let events = data.windows(2).filter(|w| w == b"\n\n").count();
                        match previous {
                            None => ttfb.push(now),
                            Some(p) => late.push(now.saturating_sub(p).saturating_sub(interval)),
                        }
                        late.extend(std::iter::repeat_n(
                            Duration::ZERO,
                            events.saturating_sub(1),
                        ));
                        previous = Some(now);
                    }
                }
                (ttfb, late)
            })
        })
        .collect();
    let (mut ttfb, mut late) = (Vec::new(), Vec::new());
    for w in workers {
        let (t, l) = w.await.unwrap();
        ttfb.extend(t);
        late.extend(l);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).map_or(0, Duration::as_micros)
    };
    println!(
        r#"{{"streams": {}, "ttfb_us": {}, "chunk_late_us": {}}}"#,
        ttfb.len(),
        median(&mut ttfb),
        median(&mut late)
    );
}

/// A registry with model `gemma` served by one replica at `upstream`, and that replica's URL.
fn one_replica(upstream: u16) -> (Arc<InMemoryRegistry>, http::Uri) {
    let base: http::Uri = format!("http://127.0.0.1:{upstream}").parse().unwrap();
    let registry = Arc::new(InMemoryRegistry::new());
    registry.register(Endpoint::new(
        ModelId::new("gemma").unwrap(),
        "gemma",
        0,
        InstanceId::new("upstream-0"),
        EngineKind::LLAMA_CPP,
        base.clone(),
    ));
    (registry, base)
}

fn main() {
    let workers: Option<usize> = std::env::var("LOAD_WORKERS")
        .ok()
        .and_then(|n| n.parse().ok());
    // `LOAD_WORKERS=0`: one current-thread runtime (no work-stealing scheduler, no wake-ups of
    // other workers).
    let mut runtime = if workers == Some(0) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let Some(n) = workers.filter(|n| *n > 0) {
        runtime.worker_threads(n);
    }
    runtime.enable_all().build().unwrap().block_on(run());
}

async fn run() {
    let args: Vec<String> = std::env::args().collect();
    let port = |i: usize| -> u16 {
        args.get(i).and_then(|p| p.parse().ok()).unwrap_or_else(|| {
            eprintln!(
                "usage: load_target upstream PORT [STREAM_INTERVAL_MS] | gateway|proxy|relay|affine|lean PORT UPSTREAM_PORT | streams URL TOTAL CONCURRENCY"
            );
            std::process::exit(2)
        })
    };
    match args.get(1).map(String::as_str) {
        Some("upstream") => {
            let interval =
                Duration::from_millis(args.get(3).and_then(|v| v.parse().ok()).unwrap_or(0));
            let service = hyper::service::service_fn(move |req| upstream(req, interval));
            serve(port(2), service).await;
        }
        Some("gateway") => {
            let (registry, _) = one_replica(port(3));
            let mut keys = InMemoryKeyStore::new();
            keys.insert_key("sk-load", ApiKey::new("load"));
            let gateway = GatewayBuilder::new(registry)
                .keys(keys)
                .usage_sink(Arc::new(InMemoryUsage::new()))
                .slots(100_000)
                .build();
            serve(
                port(2),
                hyper_util::service::TowerToHyperService::new(gateway),
            )
            .await;
        }
        Some("proxy") => {
            // Routing reads the body (the proxy takes a whole one); nothing else.
            let (registry, base) = one_replica(port(3));
            let proxy = tower::ServiceBuilder::new()
                .layer(cortex_gateway::route::RouteLayer::new(registry))
                .service(cortex_gateway::proxy::Proxy::new().fixed(base, EngineKind::LLAMA_CPP));
            serve(
                port(2),
                hyper_util::service::TowerToHyperService::new(proxy),
            )
            .await;
        }
        Some("relay") => relay(port(2), port(3)).await,
        Some("affine") => affine(port(2), port(3)).await,
        Some("lean") => lean(port(2), port(3)).await,
        Some("streams") => {
            let count = |i: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(100);
            streams(args.get(2).map_or("", String::as_str), count(3), count(4)).await;
        }
        _ => {
            eprintln!(
                "usage: load_target upstream PORT [STREAM_INTERVAL_MS] | gateway|proxy|relay|affine|lean PORT UPSTREAM_PORT | streams URL TOTAL CONCURRENCY"
            );
            std::process::exit(2);
        }
    }
}
