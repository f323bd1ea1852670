//! [`Runtime`](cortex_core::Runtime) implementations.

#[cfg(feature = "docker")]
mod docker;
mod process;

#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub use docker::{DockerRuntime, DockerRuntimeBuilder};
pub use process::{ProcessRuntime, ProcessRuntimeBuilder};
