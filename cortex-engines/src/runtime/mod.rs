//! [`Runtime`](cortex_core::Runtime) implementations.

#[cfg(feature = "docker")]
mod docker;
mod logs;
mod process;

#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub use docker::{
    DockerRuntime, DockerRuntimeBuilder, Placement, SwarmRuntime, SwarmRuntimeBuilder,
};
pub use process::{ProcessRuntime, ProcessRuntimeBuilder, StateDirError};

use cortex_core::{Exit, InstanceId, RuntimeError};
use tokio::sync::watch;

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
