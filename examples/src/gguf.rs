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

/// What llama-server will allocate for the command line `args` (`-m FILE` and its flags) on
/// `gpus`: the estimate `cortex gguf estimate` prints.
///
/// # Errors
///
/// The flags, the model file or the estimate refused, with why.
pub fn estimate_for(
    args: &[String],
    gpus: &[cortex_gguf::Gpu],
) -> Result<cortex_gguf::estimate::Estimate, String> {
    let parsed = cortex_gguf::estimate::parse_llama_args(args).map_err(|e| e.to_string())?;
    let path = parsed
        .model
        .clone()
        .ok_or("no model (-m) in the command line")?;
    let mut params = parsed.params.clone();
    let model = estimate_example::load(&path)?;
    estimate_example::attach(&mut params, &parsed)?;
    cortex_gguf::estimate::estimate(&model, &params, gpus).map_err(|e| e.to_string())
}

/// The `cortex.estimate/1` document (docs/estimator.md) `cortex gguf estimate --json` prints for
/// the llama-server command line `args` (`-m FILE` and its flags) on `gpus`: the estimate per
/// device and the ladder of changes.
///
/// # Errors
///
/// The flags, the model file or the estimate refused, with why.
pub fn estimate_document(
    args: &[String],
    gpus: &[cortex_gguf::Gpu],
) -> Result<serde_json::Value, String> {
    estimate_example::json_document(args, gpus)
}
