//! The access log of `cortex serve`: one line per client request on stdout, as JSON (one object a
//! line) or logfmt (`key=value`), for log tools to parse; diagnostics go to stderr, apart.
//!
//! A line is written when the response body is done (its end, or the client going away), with
//! what the gateway's meter recorded of it: `time` (RFC 3339, UTC), `request_id`, `key` (the key's
//! id, never the key), `model`, `method`, `path`, `status`, `upstream` (the replica's instance),
//! `latency_ms`, `ttft_ms`, `prompt_tokens`, `completion_tokens`, `outcome` (`ok`, `failed`,
//! `client_gone`). Requests the gateway refused before metering (a bad key, an unknown path) have
//! no key, model or tokens.
//!
//! Lines go through a bounded channel to a writer thread, so a slow stdout never blocks a
//! request: when the channel is full a line is dropped and counted
//! (`cortex_access_log_dropped_total`). Written by hand: a few lines of formatting; the tracing
//! formatters are for diagnostics, not for one fixed record per request.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use cortex_gateway::meter::UsageRecord;
use cortex_gateway::sse::UsageSource;
use http_body::{Body, Frame, SizeHint};

use crate::config::AccessLogFormat;

/// Lines waiting for the writer at most.
const QUEUE: usize = 8192;

/// The access log: usage records waiting for their line, and the writer.
#[derive(Debug)]
pub struct AccessLog {
    format: AccessLogFormat,
    tx: Option<SyncSender<String>>,
    pending: Mutex<HashMap<String, UsageRecord>>,
}

impl AccessLog {
    /// A log in `format` to stdout (nothing for [`AccessLogFormat::Off`]).
    pub fn stdout(format: AccessLogFormat) -> Arc<Self> {
        let tx = (format != AccessLogFormat::Off).then(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<String>(QUEUE);
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || {
                    let stdout = std::io::stdout();
                    for line in rx {
                        let mut out = stdout.lock();
                        // A closed stdout loses the log, not the server.
                        let _ = out.write_all(line.as_bytes());
                        let _ = out.flush();
                    }
                })
                .map(|_| tx)
                .ok()
        });
        Arc::new(Self {
            format,
            tx: tx.flatten(),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// Keeps `record` for the line of its request (the usage sink calls this).
    pub fn stash(&self, record: UsageRecord) {
        if self.tx.is_some() {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            // Taken by each request's line; a bound in case a client reuses request ids.
            if pending.len() >= QUEUE {
                pending.clear();
            }
            pending.insert(record.request_id.clone(), record);
        }
    }

    fn write(&self, request: &Request, status: u16, latency_ms: f64) {
        let Some(tx) = &self.tx else { return };
        let record = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&request.id);
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut fields: Vec<(&str, Value)> = vec![
            ("time", Value::Text(time)),
            ("request_id", Value::Text(request.id.clone())),
            ("method", Value::Text(request.method.clone())),
            ("path", Value::Text(request.path.clone())),
            ("status", Value::Number(f64::from(status))),
            ("latency_ms", Value::Number(round(latency_ms))),
        ];
        if let Some(r) = record {
            let text = |v: Option<String>| v.map_or(Value::Null, Value::Text);
            fields.push(("key", text(r.key_id.map(|k| k.to_string()))));
            fields.push(("model", text(r.model.map(|m| m.to_string()))));
            fields.push(("upstream", text(r.instance.map(|i| i.to_string()))));
            fields.push((
                "ttft_ms",
                r.time_to_first_token
                    .map_or(Value::Null, |t| Value::Number(round(t.as_secs_f64() * 1e3))),
            ));
            let tokens = |n: u64| {
                if r.usage.source == UsageSource::Missing {
                    Value::Null
                } else {
                    #[allow(clippy::cast_precision_loss, reason = "token counts")]
                    Value::Number(n as f64)
                }
            };
            fields.push(("prompt_tokens", tokens(r.usage.prompt_tokens)));
            fields.push(("completion_tokens", tokens(r.usage.completion_tokens)));
            let outcome = if r.failed {
                "failed"
            } else if r.client_disconnected {
                "client_gone"
            } else {
                "ok"
            };
            fields.push(("outcome", Value::Text(outcome.into())));
        }
        let line = match self.format {
            AccessLogFormat::Json => json_line(&fields),
            _ => logfmt_line(&fields),
        };
        if let Err(TrySendError::Full(_)) = tx.try_send(line) {
            metrics::counter!("cortex_access_log_dropped_total").increment(1);
        }
    }
}

fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

enum Value {
    Text(String),
    Number(f64),
    Null,
}

fn json_line(fields: &[(&str, Value)]) -> String {
    let mut map = serde_json::Map::new();
    for (k, v) in fields {
        let v = match v {
            Value::Text(t) => serde_json::Value::from(t.as_str()),
            Value::Number(n) => serde_json::Value::from(*n),
            Value::Null => serde_json::Value::Null,
        };
        map.insert((*k).to_owned(), v);
    }
    let mut line = serde_json::Value::Object(map).to_string();
    line.push('\n');
    line
}

fn logfmt_line(fields: &[(&str, Value)]) -> String {
    let mut line = String::new();
    for (k, v) in fields {
        if !line.is_empty() {
            line.push(' ');
        }
        match v {
            Value::Text(t) if !t.is_empty() && !t.contains([' ', '"', '=', '\\']) => {
                let _ = write!(line, "{k}={t}");
            }
            Value::Text(t) => {
                let _ = write!(line, "{k}={t:?}");
            }
            Value::Number(n) => {
                let _ = write!(line, "{k}={n}");
            }
            Value::Null => {
                let _ = write!(line, "{k}=");
            }
        }
    }
    line.push('\n');
    line
}

/// What the line needs of the request.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) id: String,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) started: Instant,
}

pin_project_lite::pin_project! {
    /// A response body that writes its request's line when it is done.
    pub struct Logged<B> {
        // Declared first, dropped first: the meter inside records before the line is written.
        #[pin]
        inner: B,
        line: Line,
    }
}

impl<B> std::fmt::Debug for Logged<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logged").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Line {
    log: Arc<AccessLog>,
    request: Request,
    status: u16,
}

impl Drop for Line {
    fn drop(&mut self) {
        let ms = self.request.started.elapsed().as_secs_f64() * 1e3;
        self.log.write(&self.request, self.status, ms);
    }
}

impl<B> Logged<B> {
    /// `inner`, logged as `request`'s answer with `status`.
    pub(crate) fn new(inner: B, log: &Arc<AccessLog>, request: Request, status: u16) -> Self {
        Self {
            inner,
            line: Line {
                log: Arc::clone(log),
                request,
                status,
            },
        }
    }
}

impl<B> Body for Logged<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_as_json_and_logfmt() {
        let fields = [
            ("path", Value::Text("/v1/chat/completions".into())),
            ("model", Value::Text("a b".into())),
            ("status", Value::Number(200.0)),
            ("key", Value::Null),
        ];
        let json: serde_json::Value = serde_json::from_str(&json_line(&fields)).unwrap();
        assert_eq!(json["status"], 200.0);
        assert_eq!(json["key"], serde_json::Value::Null);
        assert_eq!(
            logfmt_line(&fields),
            "path=/v1/chat/completions model=\"a b\" status=200 key=\n"
        );
    }
}
