//! What both engines' planning shares.

use cortex_core::{Diagnostic, Diagnostics, GpuRequest, LaunchPlan, ModelSpec, PlanError};
use serde::de::DeserializeOwned;

use crate::flags::{FlagTable, ValueKind};

/// The spec's settings decoded into the engine's type; a decoding error refuses the plan, naming
/// the field as `settings.<path>`.
pub(crate) fn decode_settings<T: DeserializeOwned>(spec: &ModelSpec) -> Result<T, PlanError> {
    spec.settings.decode().map_err(|e| PlanError::Invalid {
        model: spec.id.clone(),
        diagnostics: std::iter::once(Diagnostic::error(
            format!("settings.{}", e.path()),
            e.message(),
        ))
        .collect(),
    })
}

/// Refuses custom arguments that set what Cortex sets itself: `(spellings, why)`.
/// The flag a custom argument names: `--flag` of `--flag=value`, the argument itself otherwise.
pub(crate) fn arg_name(arg: &str) -> &str {
    arg.split('=').next().unwrap_or(arg)
}

pub(crate) fn check_managed(
    spec: &ModelSpec,
    managed: &[(&[&str], &str)],
    table: &FlagTable,
    d: &mut Diagnostics,
) {
    for (i, arg) in spec.args.iter().enumerate() {
        if !arg.starts_with('-') {
            continue;
        }
        let name = arg_name(arg);
        // Every spelling the engine's parser takes for the same flag: its other names, and for
        // vLLM `_` for `-` and unambiguous prefixes (`--served_model_name`, `--served-model`).
        let spellings: Vec<&str> = match table.resolve(name) {
            Some(flag) => flag.names.iter().map(String::as_str).collect(),
            None => vec![name],
        };
        if let Some((names, why)) = managed
            .iter()
            .find(|(names, _)| names.iter().any(|n| spellings.contains(n) || *n == name))
        {
            let canonical = names
                .iter()
                .copied()
                .find(|n| spellings.contains(n))
                .unwrap_or(name);
            let spelled = if canonical == name {
                format!("`{name}`")
            } else {
                format!("`{name}` (`{canonical}`)")
            };
            d.push(Diagnostic::error(
                format!("args[{i}]"),
                format!("{spelled} is managed by Cortex: {why}"),
            ));
        }
    }
}

/// A settings value checked against the choices the flag table lists for `flag`.
pub(crate) fn check_choice(
    table: &FlagTable,
    d: &mut Diagnostics,
    field: &str,
    value: Option<&str>,
    flag: &str,
) {
    let (Some(value), Some(f)) = (value, table.get(flag)) else {
        return;
    };
    if let ValueKind::Choices(choices) = &f.value {
        if !choices.iter().any(|c| c == value) {
            d.push(
                Diagnostic::error(field, format!("`{value}` is not accepted by {flag}"))
                    .with_suggestion(format!("one of {}", choices.join(", "))),
            );
        }
    }
}

/// Container-only settings: shared memory, the network to join, the GPU request (all GPUs
/// unless given), and the driver capabilities the NVIDIA runtime needs. What a runtime makes of
/// them is its own business: the plan only says what the engine needs.
pub(crate) fn finish_container(
    plan: &mut LaunchPlan,
    shm: u64,
    network: Option<&String>,
    gpus: Option<&GpuRequest>,
) {
    plan.shm_size = Some(shm);
    plan.network = network.cloned();
    plan.gpus = gpus.cloned().unwrap_or(GpuRequest::All);
    plan.env
        .entry("NVIDIA_DRIVER_CAPABILITIES".into())
        .or_insert_with(|| "compute,utility".into());
}
