//! [`Runtime`](cortex_core::Runtime) implementations.

mod process;

pub use process::{ProcessRuntime, ProcessRuntimeBuilder};
