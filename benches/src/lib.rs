//! Criterion benches for the Cortex crates; run them with `cargo bench -p cortex-benches`.
//!
//! - `registry`: [`Registry::resolve`](cortex_core::Registry::resolve) of the in-memory registry,
//!   the lookup the gateway makes on every request, against a `RwLock<HashMap>` baseline measured in
//!   the same run: alone (`registry::resolve`), while a second thread resolves too
//!   (`registry::resolve_with_reader`), and while a second thread replaces endpoints as fast as it
//!   can (`registry::resolve_under_writes`). Each registry gets its own background thread doing the
//!   same logical work during its own measurement.
