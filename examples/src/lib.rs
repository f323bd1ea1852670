//! The `cortex` reference binary, as a library its tests and other programs can call, and the
//! composition examples (`examples/examples/`).
//!
//! - [`config`]: `cortex.toml`, read and checked with file, line and field in every error;
//! - [`serve`]: `cortex serve`, the gateway, the supervisor and the runtime in one process;
//! - [`access`]: the access log of `cortex serve`;
//! - [`admin`]: the admin API on the running server, and its client (`cortex models …`);
//! - [`ui`]: the admin page, over the admin API;
//! - [`plan`]: `cortex plan MODEL`;
//! - [`gguf`]: `cortex gguf inspect|estimate`;
//! - [`keys`]: `cortex keys new`.
//!
//! The binary's user guide is docs/quickstart.md; every configuration field is in
//! docs/configuration.md.

pub mod access;
pub mod admin;
pub mod config;
pub mod engine_metrics;
pub mod gguf;
pub mod keys;
pub mod ondemand;
pub mod plan;
pub mod serve;
pub mod ui;
pub mod usage;
