//! What both runtimes keep of an instance's output: the last lines, a live stream of new ones,
//! and the framing of raw bytes into lines.
//!
//! Written by hand: a bounded deque and a broadcast channel under one type.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use cortex_core::{LogLine, LogSource, LogStream};
use tokio::sync::broadcast;

/// The last `capacity` lines of one instance and the live stream of new ones. Once
/// [`close`](Self::close)d (the instance exited), followers' streams end and the lines stay.
#[derive(Debug)]
pub(crate) struct LogRing {
    lines: Mutex<VecDeque<LogLine>>,
    live: Mutex<Option<broadcast::Sender<LogLine>>>,
    capacity: usize,
}

impl LogRing {
    /// An empty ring keeping `capacity` lines (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            lines: Mutex::new(VecDeque::new()),
            live: Mutex::new(Some(broadcast::channel(1024).0)),
            capacity: capacity.max(1),
        }
    }

    /// How many lines it keeps.
    #[cfg(feature = "docker")]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keeps `line` (dropping the oldest when full) and sends it to live followers.
    pub(crate) fn push(&self, line: LogLine) {
        {
            let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
            if lines.len() == self.capacity {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        if let Some(live) = &*self.live.lock().unwrap_or_else(PoisonError::into_inner) {
            let _ = live.send(line);
        }
    }

    /// The last `n` lines, oldest first.
    pub(crate) fn tail(&self, n: usize) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The lines from now on, until the ring is closed. A slow follower skips lines rather than
    /// holding the instance back.
    pub(crate) fn follow(&self) -> LogStream {
        let rx = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(broadcast::Sender::subscribe);
        let Some(rx) = rx else {
            return Box::pin(futures_util::stream::empty());
        };
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(line) => return Some((line, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }

    /// Ends every follower's stream: nothing more comes.
    pub(crate) fn close(&self) {
        *self.live.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether the source ended ([`close`](Self::close) was called).
    pub(crate) fn is_closed(&self) -> bool {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }
}

/// Bytes of one stream framed into lines: a line may arrive in pieces, and the last may lack
/// its newline ([`finish`](Self::finish) gives it).
#[derive(Debug, Default)]
pub(crate) struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Adds `bytes`; calls `emit` with each line completed (without its `\n`).
    pub(crate) fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            emit(line.get(..end).unwrap_or_default());
        }
    }

    /// Gives what is left as a last line, if anything.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }
}

/// A line of output from its bytes: lossy UTF-8, without a trailing `\r`.
pub(crate) fn line(source: LogSource, bytes: &[u8]) -> LogLine {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    LogLine::new(source, String::from_utf8_lossy(bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    #[tokio::test]
    async fn a_ring_keeps_the_last_lines_and_streams_until_closed() {
        let ring = LogRing::new(2);
        let mut live = ring.follow();
        for text in ["a", "b", "c"] {
            ring.push(LogLine::new(LogSource::Stdout, text));
        }
        let kept: Vec<String> = ring.tail(10).into_iter().map(|l| l.line).collect();
        assert_eq!(kept, ["b", "c"]);
        ring.close();
        let streamed: Vec<String> = live.by_ref().map(|l| l.line).collect().await;
        assert_eq!(streamed, ["a", "b", "c"]);
        assert!(ring.follow().next().await.is_none(), "closed: nothing more");
    }

    #[test]
    fn lines_arrive_in_pieces_and_the_last_without_a_newline() {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        lines.feed(b"he", |l| out.push(line(LogSource::Stdout, l).line));
        lines.feed(b"llo\r\nwor", |l| out.push(line(LogSource::Stdout, l).line));
        lines.feed(b"ld\n\xffx", |l| out.push(line(LogSource::Stdout, l).line));
        lines.finish(|l| out.push(line(LogSource::Stdout, l).line));
        assert_eq!(out, ["hello", "world", "\u{fffd}x"]);
    }
}
