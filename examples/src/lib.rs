//! The home of the `cortex` reference binary (`cortex serve`, `cortex models`, `cortex inspect`)
//! and of small programs that compose the Cortex crates.
//!
//! # Status
//!
//! The reference binary does not exist yet; it arrives with the reference-binary issue, once the
//! engines, runtimes and gateway it composes exist. Until then this package only depends on every
//! crate, so the workspace checks that they compose.
