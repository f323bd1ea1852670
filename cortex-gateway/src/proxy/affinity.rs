//! Upstream connections of one client connection, driven on its task.
//!
//! With hyper-util's pool, every proxied request crosses tasks twice: the request goes through a
//! channel to the task that drives the pooled connection, the answer comes back through another,
//! and a task is spawned per request to put the connection back. On a small machine those
//! wake-ups, not the parsing, are most of the proxy's cost (docs/performance.md). An
//! [`Affinity`] belongs to one client connection instead: the upstream connections it opens are
//! polled by its [`AffinityDriver`], which the server polls beside the client connection on the
//! same task, so a request and its answer never leave that task.
//!
//! It keeps the pool's guarantees: a connection is reused only once its answer was read to the
//! end (hyper's `SendRequest` is ready again only then) and only to the same upstream, never
//! after `pool_idle_timeout` of idleness, never once the engine closed it (the driver sees the
//! close as it happens); a request a reused connection refused before writing any of it is sent
//! once more on a new connection. When the client connection ends the driver is dropped, and
//! with it every upstream connection: a client that hangs up mid-stream closes its engine
//! connection, as with the pool. Hand-written: no crate offers client connections driven on the
//! caller's task.
//!
//! Use: [`Affinity::new`] per accepted connection, the `Affinity` put in each request's
//! extensions (the [`Proxy`](super::Proxy) finds it there; requests without one use the pool),
//! and the driver polled beside the connection:
//!
//! ```no_run
//! # async fn run(stream: tokio::net::TcpStream, gateway: cortex_gateway::Gateway) {
//! use cortex_gateway::proxy::Affinity;
//! use tower::ServiceExt as _;
//!
//! let (affinity, driver) = Affinity::new();
//! let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
//!     req.extensions_mut().insert(affinity.clone());
//!     gateway.clone().oneshot(req)
//! });
//! let connection = hyper::server::conn::http1::Builder::new()
//!     .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
//! // The driver never ends by itself: the connection's end ends both.
//! tokio::select! {
//!     _ = connection => {}
//!     () = driver => {}
//! }
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use http::uri::Authority;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

type Conn = Connection<TokioIo<TcpStream>, Full<Bytes>>;
type Sender = SendRequest<Full<Bytes>>;

/// The most idle connections kept per upstream for one client connection (HTTP/1 clients send
/// one request at a time, so one is the usual number).
const IDLE_PER_UPSTREAM: usize = 2;

/// Upstream connections of one client connection. See the [module docs](self).
#[derive(Clone)]
pub struct Affinity {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Mutex<Vec<Idle>>,
    new: mpsc::UnboundedSender<Conn>,
}

struct Idle {
    authority: Authority,
    sender: Sender,
    since: Instant,
}

impl fmt::Debug for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let idle = self.lock().len();
        f.debug_struct("Affinity")
            .field("idle", &idle)
            .finish_non_exhaustive()
    }
}

/// Drives the connections of an [`Affinity`]; never completes. Dropping it closes them.
#[must_use = "the connections make no progress unless the driver is polled"]
pub struct AffinityDriver {
    conns: FuturesUnordered<Conn>,
    new: mpsc::UnboundedReceiver<Conn>,
}

impl fmt::Debug for AffinityDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AffinityDriver")
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Future for AffinityDriver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        while let Poll::Ready(Some(conn)) = this.new.poll_recv(cx) {
            this.conns.push(conn);
        }
        // A connection's end (closed by the engine, or after `Connection: close`) is its
        // sender's `is_closed`; nothing else to do with it.
        while let Poll::Ready(Some(_)) = this.conns.poll_next_unpin(cx) {}
        Poll::Pending
    }
}

/// Why a request could not be sent.
#[derive(Debug)]
pub(super) enum SendError {
    /// No connection could be opened: nothing reached the engine.
    Connect(String),
    /// The connection failed after the request was (or may have been) written.
    Failed(hyper::Error),
}

impl Affinity {
    /// A new, empty set and its driver.
    pub fn new() -> (Self, AffinityDriver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let affinity = Self {
            inner: Arc::new(Inner {
                idle: Mutex::new(Vec::new()),
                new: tx,
            }),
        };
        (
            affinity,
            AffinityDriver {
                conns: FuturesUnordered::new(),
                new: rx,
            },
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle connection to `authority` that is ready for a request, idle for less than
    /// `expiry`; expired and closed ones are dropped on the way.
    fn checkout(
        &self,
        authority: &Authority,
        expiry: Duration,
        cx: &mut Context<'_>,
    ) -> Option<Sender> {
        let mut idle = self.lock();
        let now = Instant::now();
        idle.retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < expiry);
        let mut i = 0;
        while i < idle.len() {
            if idle[i].authority == *authority {
                match idle[i].sender.poll_ready(cx) {
                    Poll::Ready(Ok(())) => return Some(idle.swap_remove(i).sender),
                    Poll::Ready(Err(_)) => {
                        idle.swap_remove(i);
                        continue;
                    }
                    // Still reading an earlier answer: not this one.
                    Poll::Pending => {}
                }
            }
            i += 1;
        }
        None
    }

    /// Gives `sender` back for the next request to `authority`.
    fn checkin(&self, authority: Authority, sender: Sender) {
        let mut idle = self.lock();
        if idle.iter().filter(|i| i.authority == authority).count() < IDLE_PER_UPSTREAM {
            idle.push(Idle {
                authority,
                sender,
                since: Instant::now(),
            });
        }
    }

    /// A new connection to `authority`, handed to the driver.
    async fn connect(&self, authority: &Authority, timeout: Duration) -> Result<Sender, SendError> {
        let addr = authority.as_str();
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(SendError::Connect(e.to_string())),
            Err(_) => {
                return Err(SendError::Connect(format!(
                    "no connection within {} s",
                    timeout.as_secs()
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        // The driver is gone only with the client connection, and so is this request.
        let _ = self.inner.new.send(conn);
        Ok(sender)
    }

    /// Sends `req` (its URI absolute, to `authority`) on an idle connection or a new one; the
    /// connection is kept for the next request when `reuse`.
    pub(super) async fn send(
        self,
        authority: Authority,
        mut req: Request<Full<Bytes>>,
        connect_timeout: Duration,
        expiry: Duration,
        reuse: bool,
    ) -> Result<Response<Incoming>, SendError> {
        // HTTP/1 requests carry the path only, and `Host`.
        if let Some(path) = req.uri().path_and_query().cloned() {
            *req.uri_mut() = http::Uri::from(path);
        }
        if let Ok(host) = http::HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(http::header::HOST, host);
        }
        let idle =
            std::future::poll_fn(|cx| Poll::Ready(self.checkout(&authority, expiry, cx))).await;
        let (mut sender, mut reused) = match idle {
            Some(sender) => (sender, true),
            None => (self.connect(&authority, connect_timeout).await?, false),
        };
        loop {
            if !reused {
                // A new connection is ready once the driver polled it.
                if let Err(e) = sender.ready().await {
                    return Err(SendError::Failed(e));
                }
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    if reuse {
                        self.checkin(authority, sender);
                    }
                    return Ok(response);
                }
                Err(mut e) => match e.take_message() {
                    // A reused connection the engine closed as the request went out: nothing
                    // of it was written, so once more on a new one.
                    Some(again) if reused => {
                        req = again;
                        sender = self.connect(&authority, connect_timeout).await?;
                        reused = false;
                    }
                    _ => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
    }
}
