//! Criterion benches for the Cortex crates; run them with `cargo bench -p cortex-benches`.
//!
//! - `registry`: [`Registry::resolve`](cortex_core::Registry::resolve) of the in-memory registry,
//!   the lookup the gateway makes on every request, against a `RwLock<HashMap>` baseline measured in
//!   the same run, alone and with a writer re-registering endpoints on another thread.
