//! A scriptable upstream on a raw socket that answers like vLLM 0.32: its routes, its status
//! codes, its error bodies (`{"error":{"message","type","param","code"}}` with the reason phrase or
//! the exception name as `type`, `FastAPI`'s `{"detail": ..}` for unknown routes, both captured in
//! testdata/vllm-0.32.0/vllm-http-probe.json) and its SSE framing (`data: {json}\n\n` per
//! event, `data: [DONE]\n\n` last, `text/event-stream; charset=utf-8`, chunked). Written on a raw
//! socket so that it can do what a real server does only by accident: reset a stream, stall before
//! the first byte, and notice when the gateway hangs up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream does with one request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answers `status` with a JSON body.
    Json {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Streams `events` (each sent as `data: ..\n\n` in its own chunk, `interval` apart), then
    /// `[DONE]` and the end of the body, or (with `reset`) closes the socket instead.
    Stream {
        events: Vec<String>,
        interval: Duration,
        reset: bool,
    },
    /// Streams `events`, then the first bytes of one more event (`data: ` and `partial`, no blank
    /// line), then closes the socket without the terminating chunk: a crash in the middle of an
    /// event.
    BreakMidEvent {
        events: Vec<String>,
        partial: String,
    },
    /// Streams chunks forever, `interval` apart, until the peer goes away.
    Endless { interval: Duration },
    /// Waits `delay` before answering `then`.
    Stall { delay: Duration, then: Box<Action> },
}

/// What the upstream saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Request lines and bodies, in arrival order.
    pub requests: Vec<(String, String)>,
    /// Request headers of each request (lower-cased names).
    pub headers: Vec<Vec<(String, String)>>,
    /// Requests whose peer hung up before the answer was complete.
    pub cancelled: usize,
}

/// A running upstream.
pub struct Upstream {
    pub addr: std::net::SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
}

type Script = Arc<dyn Fn(usize, &str, &str) -> Action + Send + Sync>;

impl Upstream {
    /// Starts an upstream whose answer to the `n`th request (from 0; request line, body) is
    /// `script(n, line, body)`.
    pub async fn start(
        script: impl Fn(usize, &str, &str) -> Action + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let script: Script = Arc::new(script);
        let seen2 = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let (seen, script) = (Arc::clone(&seen2), Arc::clone(&script));
                tokio::spawn(handle(stream, seen, script));
            }
        });
        Self { addr, seen }
    }

    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().requests.len()
    }

    pub fn cancelled(&self) -> usize {
        self.seen.lock().unwrap().cancelled
    }
}

pub async fn read_request(
    stream: &mut TcpStream,
) -> Option<(String, Vec<(String, String)>, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    Some((line, headers, body))
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

async fn handle(mut stream: TcpStream, seen: Arc<Mutex<Seen>>, script: Script) {
    let Some((line, headers, body)) = read_request(&mut stream).await else {
        return;
    };
    let n = {
        let mut seen = seen.lock().unwrap();
        seen.requests.push((line.clone(), body.clone()));
        seen.headers.push(headers);
        seen.requests.len() - 1
    };
    let action = script(n, &line, &body);
    if !answer(&mut stream, action).await {
        seen.lock().unwrap().cancelled += 1;
    }
}

/// Whether the peer hung up while it was waiting: a read of 0 bytes.
async fn hung_up(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Answers; false when the peer hung up first.
async fn answer(stream: &mut TcpStream, action: Action) -> bool {
    match action {
        Action::Json {
            status,
            body,
            headers,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\ndate: Sat, 21 Nov 2026 10:00:00 GMT\r\nserver: uvicorn\r\ncontent-length: {}\r\ncontent-type: application/json\r\nconnection: close\r\n",
                reason(status),
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&k);
                head.push_str(": ");
                head.push_str(&v);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            head.push_str(&body);
            stream.write_all(head.as_bytes()).await.is_ok()
        }
        Action::Stall { delay, then } => {
            if hung_up(stream, delay).await {
                return false;
            }
            Box::pin(answer(stream, *then)).await
        }
        Action::Stream {
            events,
            interval,
            reset,
        } => {
            if !write_stream_head(stream).await {
                return false;
            }
            for event in events {
                if !write_event(stream, &event).await {
                    return false;
                }
                tokio::time::sleep(interval).await;
            }
            if reset {
                // Gone without the terminating chunk, as a crashed engine would be.
                return true;
            }
            write_event(stream, "[DONE]").await && stream.write_all(b"0\r\n\r\n").await.is_ok()
        }
        Action::BreakMidEvent { events, partial } => {
            if !write_stream_head(stream).await {
                return false;
            }
            for event in events {
                if !write_event(stream, &event).await {
                    return false;
                }
            }
            let bytes = format!("data: {partial}");
            let chunk = format!("{:x}\r\n{bytes}\r\n", bytes.len());
            let _ = stream.write_all(chunk.as_bytes()).await;
            let _ = stream.flush().await;
            // Let the partial event reach the gateway before the connection goes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            true
        }
        Action::Endless { interval } => {
            if !write_stream_head(stream).await {
                return false;
            }
            for i in 0.. {
                let event = format!(
                    r#"{{"id":"cmpl-1","object":"chat.completion.chunk","created":1795291745,"model":"my-model","choices":[{{"index":0,"delta":{{"content":"t{i}"}},"logprobs":null,"finish_reason":null}}]}}"#
                );
                if !write_event(stream, &event).await || hung_up(stream, interval).await {
                    return false;
                }
            }
            true
        }
    }
}

async fn write_stream_head(stream: &mut TcpStream) -> bool {
    let head = "HTTP/1.1 200 OK\r\ndate: Sat, 21 Nov 2026 10:00:00 GMT\r\nserver: uvicorn\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.is_ok()
}

async fn write_event(stream: &mut TcpStream, data: &str) -> bool {
    let event = format!("data: {data}\n\n");
    let chunk = format!("{:x}\r\n{event}\r\n", event.len());
    stream.write_all(chunk.as_bytes()).await.is_ok() && stream.flush().await.is_ok()
}

/// A vLLM chat chunk with `content`.
pub fn chunk(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_795_291_745_u64,
        "model": "my-model",
        "choices": [{"index": 0, "delta": {"content": content}, "logprobs": null, "finish_reason": null}]
    })
    .to_string()
}

/// vLLM's error body.
pub fn vllm_error(status: u16, kind: &str, message: &str) -> String {
    serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": status}})
        .to_string()
}

/// An upstream that keeps connections open between requests, as llama-server's cpp-httplib does
/// (HTTP/1.1, `content-length`, no `connection: close`), and counts the connections it accepted.
pub struct KeepAlive {
    pub addr: std::net::SocketAddr,
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    pub requests: Arc<std::sync::atomic::AtomicUsize>,
}

/// How a [`KeepAlive`] upstream answers.
#[derive(Debug, Clone, Copy)]
pub enum KeepAliveMode {
    /// Every request on the connection, the connection kept.
    Keep,
    /// One request, then the socket is closed without saying so (a keep-alive timeout).
    CloseAfterOne,
    /// A stream of 50 events, 20 ms apart, then the connection is kept.
    SlowStream,
}

impl KeepAlive {
    pub async fn start(mode: KeepAliveMode) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                c.fetch_add(1, Relaxed);
                let r = Arc::clone(&r);
                tokio::spawn(async move {
                    while read_request(&mut stream).await.is_some() {
                        let n = r.fetch_add(1, Relaxed);
                        let ok = if let KeepAliveMode::SlowStream = mode {
                            let mut ok = write_stream_head_kept(&mut stream).await;
                            for i in 0..50 {
                                ok = ok && write_event(&mut stream, &chunk(&format!("t{i}"))).await;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            ok && write_event(&mut stream, "[DONE]").await
                                && stream.write_all(b"0\r\n\r\n").await.is_ok()
                        } else {
                            let body = format!(r#"{{"object":"chat.completion","n":{n}}}"#);
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nserver: llama.cpp\r\ncontent-type: application/json\r\ncontent-length: {}\r\nkeep-alive: timeout=5, max=100\r\n\r\n{body}",
                                body.len()
                            );
                            stream.write_all(head.as_bytes()).await.is_ok()
                        };
                        if !ok || matches!(mode, KeepAliveMode::CloseAfterOne) {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            requests,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn write_stream_head_kept(stream: &mut TcpStream) -> bool {
    let head = "HTTP/1.1 200 OK\r\nserver: llama.cpp\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.is_ok()
}
