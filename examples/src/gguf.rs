//! `cortex gguf inspect` and `cortex gguf estimate`: the `gguf-inspect` and `gguf-estimate`
//! examples of `cortex-gguf`, compiled into this binary from their own source files, so there is
//! one program behind both names (and `cortex-gguf`'s differential tests keep checking it).

#[allow(
    dead_code,
    unreachable_pub,
    reason = "the example's own `main` is not this binary's entry point"
)]
#[path = "../../cortex-gguf/examples/gguf-inspect/main.rs"]
mod inspect_example;

#[allow(
    dead_code,
    unreachable_pub,
    reason = "the example's own `main` is not this binary's entry point"
)]
#[path = "../../cortex-gguf/examples/gguf-estimate/main.rs"]
mod estimate_example;

use std::process::ExitCode;

/// `cortex gguf inspect [--json] [--full] FILE`.
pub fn inspect(args: impl Iterator<Item = String>) -> ExitCode {
    inspect_example::cli("cortex gguf inspect", args)
}

/// `cortex gguf estimate [--json] [--gpu NAME:TOTAL_MIB[:FREE_MIB]]... [--nvml] -m FILE [llama-server flags]`.
pub fn estimate(args: impl Iterator<Item = String>) -> ExitCode {
    estimate_example::cli("cortex gguf estimate", args)
}
