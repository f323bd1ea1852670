//! [`Runtime`](cortex_core::Runtime) implementations.

#[cfg(feature = "docker")]
mod docker;
mod process;

#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub use docker::{DockerRuntime, DockerRuntimeBuilder};
pub use process::{ProcessRuntime, ProcessRuntimeBuilder, StateDirError};

use std::collections::VecDeque;

use cortex_core::{Exit, InstanceId, LogLine, LogStream, RuntimeError};
use tokio::sync::{broadcast, watch};

/// Waits for the exit an instance's watcher records; a watcher dropped first (the instance was
/// stopped and removed meanwhile) means the instance is gone.
pub(crate) async fn wait_exit(
    mut exit: watch::Receiver<Option<Exit>>,
    id: &InstanceId,
) -> Result<Exit, RuntimeError> {
    match exit.wait_for(Option::is_some).await.map(|e| *e) {
        Ok(Some(exit)) => Ok(exit),
        _ => Err(RuntimeError::NotFound {
            instance: id.clone(),
        }),
    }
}

/// The last `n` lines of a ring buffer, oldest first.
pub(crate) fn tail(lines: &VecDeque<LogLine>, n: usize) -> Vec<LogLine> {
    lines
        .iter()
        .skip(lines.len().saturating_sub(n))
        .cloned()
        .collect()
}

/// A live log stream from a broadcast subscription (`None`: the instance exited, nothing more
/// comes). A slow follower skips lines rather than holding the instance back.
pub(crate) fn live_stream(rx: Option<broadcast::Receiver<LogLine>>) -> LogStream {
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
