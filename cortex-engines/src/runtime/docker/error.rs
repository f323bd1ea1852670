//! Docker API errors as [`RuntimeError`]s, with Docker's own message.

use std::time::Duration;

use bollard::errors::Error as DockerError;
use cortex_core::{InstanceId, RuntimeError};

/// A Docker call that failed or timed out.
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    #[error(transparent)]
    Docker(DockerError),
    #[error("Docker did not answer {what} within {limit:?}")]
    TimedOut { what: &'static str, limit: Duration },
}

/// Runs one Docker call, bounded by `limit`: Docker's error, or how long it was given.
pub(super) async fn within<T>(
    what: &'static str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, DockerError>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CallError::Docker(e)),
        Err(_) => Err(CallError::TimedOut { what, limit }),
    }
}

pub(super) fn status(e: &CallError) -> Option<u16> {
    match e {
        CallError::Docker(DockerError::DockerResponseServerError { status_code, .. }) => {
            Some(*status_code)
        }
        _ => None,
    }
}

/// Docker's own message, when it sent one.
pub(super) fn message(e: &CallError) -> &str {
    match e {
        CallError::Docker(DockerError::DockerResponseServerError { message, .. }) => message,
        _ => "",
    }
}

pub(super) fn call_message(e: &CallError) -> String {
    match e {
        CallError::Docker(DockerError::DockerResponseServerError { message, .. }) => {
            message.clone()
        }
        other => other.to_string(),
    }
}

pub(super) fn operation_error(
    operation: &'static str,
    id: &InstanceId,
    e: CallError,
) -> RuntimeError {
    if status(&e) == Some(404) {
        return RuntimeError::NotFound {
            instance: id.clone(),
        };
    }
    RuntimeError::Operation {
        operation,
        instance: id.clone(),
        source: Box::new(e),
    }
}
