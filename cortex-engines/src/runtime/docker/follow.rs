//! Following a container: its output framed into lines with Docker's timestamps (so a follower
//! started late skips what it already has), then its exit.

use std::sync::Arc;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{LogsOptionsBuilder, WaitContainerOptionsBuilder};
use cortex_core::{Exit, InstanceId, LogLine, LogSource};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::runtime::logs::{Lines, LogRing, line};

/// Follows a container's output into `logs` until it ends, then records how it exited.
pub(super) async fn follow_container(
    docker: Docker,
    id: InstanceId,
    logs: Arc<LogRing>,
    mut last: Option<String>,
    exit_tx: watch::Sender<Option<Exit>>,
) {
    // Lines already loaded come again (the tail overlaps); their timestamps skip them.
    let options = follow_options(logs.capacity());
    let seen = last.clone();
    let mut stream = docker.logs(id.as_str(), Some(options));
    let mut framer = Framer::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(output) => framer.feed(output, |line| {
                if seen.as_ref().is_none_or(|s| line.0 > *s) {
                    push(&logs, line, &mut last);
                }
            }),
            Err(e) => {
                tracing::debug!(instance = %id, error = %e, "log stream ended");
                break;
            }
        }
    }
    framer.finish(|line| push(&logs, line, &mut last));

    let wait = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let exit = match docker.wait_container(id.as_str(), Some(wait)).next().await {
        Some(Ok(response)) => Exit::code(i32::try_from(response.status_code).unwrap_or(i32::MAX)),
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => {
            Exit::code(i32::try_from(code).unwrap_or(i32::MAX))
        }
        _ => Exit::unknown(),
    };
    let oom = docker
        .inspect_container(
            id.as_str(),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .ok()
        .and_then(|i| i.state)
        .and_then(|s| s.oom_killed)
        .unwrap_or(false);
    if oom {
        logs.push(LogLine::new(
            LogSource::Stderr,
            "[cortex] the container was killed for lack of memory (Docker reports OOMKilled)",
        ));
    }
    logs.close();
    let _ = exit_tx.send(Some(exit));
}

/// Following stdout and stderr with Docker's timestamps, from the last `tail` lines on: for a
/// container's logs and a service's alike.
pub(super) fn follow_options(tail: usize) -> bollard::query_parameters::LogsOptions {
    LogsOptionsBuilder::new()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .tail(&tail.to_string())
        .build()
}

/// Keeps a `(timestamp, line)`, remembering the timestamp of the last line kept.
pub(super) fn push(logs: &LogRing, (stamp, line): (String, LogLine), last: &mut Option<String>) {
    if !stamp.is_empty() {
        *last = Some(stamp);
    }
    logs.push(line);
}

/// Turns Docker's log frames into whole lines, each with the timestamp Docker put before it (fixed
/// width RFC 3339 with nanoseconds, so timestamps order as strings). A frame usually holds one
/// line; a long line may come in several frames, and a last line may lack its newline.
#[derive(Default)]
pub(super) struct Framer {
    streams: [Lines; 2],
}

impl Framer {
    pub(super) fn feed(&mut self, output: LogOutput, mut emit: impl FnMut((String, LogLine))) {
        let (source, message) = match output {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (LogSource::Stdout, message)
            }
            LogOutput::StdErr { message } => (LogSource::Stderr, message),
            LogOutput::StdIn { .. } => return,
        };
        self.streams[usize::from(source == LogSource::Stderr)]
            .feed(&message, |l| emit(split_stamp(source, l)));
    }

    pub(super) fn finish(&mut self, mut emit: impl FnMut((String, LogLine))) {
        for (source, lines) in [LogSource::Stdout, LogSource::Stderr]
            .into_iter()
            .zip(&mut self.streams)
        {
            lines.finish(|l| emit(split_stamp(source, l)));
        }
    }
}

/// Splits `2026-11-21T22:07:33.123456789Z text` into the timestamp and the line.
pub(super) fn split_stamp(source: LogSource, raw: &[u8]) -> (String, LogLine) {
    let whole = line(source, raw);
    match whole.line.split_once(' ') {
        Some((stamp, rest)) if stamp.len() >= 20 && stamp.as_bytes()[4] == b'-' => {
            (stamp.to_owned(), LogLine::new(source, rest))
        }
        _ => (String::new(), whole),
    }
}
