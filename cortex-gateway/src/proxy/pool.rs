//! The pool of HTTP/1 connections to the replicas.
//!
//! Written by hand, on hyper's own low-level client (`hyper::client::conn::http1`), because
//! hyper-util's pooled client cost more than the rest of the proxy: for every request it spawns a
//! task that waits for the connection to become ready again and only then returns it to the pool.
//! Measured with `scripts/load` on a 2-core machine (docs/performance.md): the same routing in
//! front of hyper-util's pool served 39–40k requests/s, in front of this design 50–51k.
//!
//! - A connection is checked out for one request and given back when its response body ends
//!   ([`Lease`]); a body dropped early (the client went away) or broken drops the connection, so
//!   hyper closes it and the engine sees the disconnect.
//! - Each connection is driven by its own task, so an idle connection that the engine closes is
//!   noticed (`is_closed`) and never handed out.
//! - Idle connections older than the idle timeout are dropped (keep it below the engines'
//!   keep-alive), as are those beyond [`MAX_IDLE_PER_UPSTREAM`].
//! - A request that a reused connection refused before writing any of it (the engine closed the
//!   connection between two requests) is sent again on a new connection, once.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

/// Idle connections kept per upstream; more are closed when they come back.
pub(super) const MAX_IDLE_PER_UPSTREAM: usize = 256;

type Sender = SendRequest<Full<Bytes>>;

/// Why a request got no response.
#[derive(Debug)]
pub(super) enum SendError {
    /// No connection could be made.
    Connect(std::io::Error),
    /// The connection failed before the response headers.
    Request(hyper::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => e.fmt(f),
            Self::Request(e) => e.fmt(f),
        }
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

struct Shared {
    idle: Mutex<HashMap<Authority, Vec<Idle>>>,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

/// The pool, shared by every clone of the proxy.
#[derive(Clone)]
pub(super) struct Pool {
    shared: Arc<Shared>,
}

/// A connection checked out for one request; given back by [`Lease::release`].
pub(crate) struct Lease {
    pool: Pool,
    upstream: Authority,
    sender: Sender,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

// === impl Pool ===

impl Pool {
    pub(super) fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                idle: Mutex::new(HashMap::new()),
                idle_timeout,
                connect_timeout,
            }),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `upstream` on a pooled or new connection.
    pub(super) async fn send(
        self,
        upstream: Authority,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let mut retried = false;
        loop {
            let (mut sender, reused) = match self.take(&upstream) {
                Some(sender) => (sender, true),
                None => (self.connect(&upstream).await?, false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(SendError::Connect(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the connection closed before the request was sent",
                )));
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let lease = Lease {
                        pool: self,
                        upstream,
                        sender,
                    };
                    return Ok((response, lease));
                }
                Err(mut e) => match e.take_message() {
                    Some(again) if reused && !retried => {
                        retried = true;
                        req = again;
                    }
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// An idle, open connection to `upstream`, dropping the closed and expired ones on the way.
    fn take(&self, upstream: &Authority) -> Option<Sender> {
        let mut idle = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(upstream)?;
        while let Some(entry) = list.pop() {
            if !entry.sender.is_closed() && entry.since.elapsed() < self.shared.idle_timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put(&self, upstream: Authority, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let list = idle.entry(upstream).or_default();
        list.retain(|e| !e.sender.is_closed() && now - e.since < self.shared.idle_timeout);
        if list.len() < MAX_IDLE_PER_UPSTREAM {
            list.push(Idle { sender, since: now });
        }
    }

    async fn connect(&self, upstream: &Authority) -> Result<Sender, SendError> {
        let host = upstream.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = upstream.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(
            self.shared.connect_timeout,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| {
            SendError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no connection within {} ms",
                    self.shared.connect_timeout.as_millis()
                ),
            ))
        })?
        .map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

// === impl Lease ===

impl Lease {
    /// The response was read to its end: the connection can serve another request.
    pub(super) fn release(self) {
        self.pool.put(self.upstream, self.sender);
    }
}
