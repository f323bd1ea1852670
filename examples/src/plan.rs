//! `cortex plan MODEL`: the exact command line or container spec that would run, the engine's
//! diagnostics, and the memory estimate; nothing is started.

use std::process::ExitCode;

use cortex_core::{ModelSpec, PlanContext, PlanError, TargetKind};

use crate::config::{Config, engine_for};

/// The llama-server arguments to estimate `spec`'s memory with (host paths), for llama.cpp models.
pub fn estimate_args(spec: &ModelSpec) -> Option<Vec<String>> {
    if spec.engine != cortex_core::EngineKind::LLAMA_CPP {
        return None;
    }
    let engine = engine_for(spec)?;
    // A process plan has the model's host path, whatever runtime serves it.
    let planned = engine
        .plan(
            spec,
            &PlanContext::new(TargetKind::Process, 0, engine.default_port()),
        )
        .ok()?;
    Some(planned.plan.args)
}

/// Prints the plan of every replica of `name` in `config`.
pub fn run(config: &Config, name: &str, json: bool) -> ExitCode {
    let Some(spec) = config.model(name) else {
        let names: Vec<&str> = config.specs().map(|s| s.id.as_str()).collect();
        eprintln!(
            "cortex plan: no model `{name}` in the configuration (models: {})",
            names.join(", ")
        );
        return ExitCode::FAILURE;
    };
    let Some(engine) = engine_for(spec) else {
        eprintln!(
            "cortex plan: `{}` has no engine in this binary",
            spec.engine
        );
        return ExitCode::FAILURE;
    };
    let target = config.runtime.kind.target();
    let mut plans = Vec::new();
    for replica in 0..spec.replicas.get() {
        // The supervisor picks a free port per process replica when it starts; the plan shows
        // the engine's default port in its place.
        let cx = PlanContext::new(target, replica, engine.default_port());
        match engine.plan(spec, &cx) {
            Ok(planned) => plans.push(planned),
            Err(PlanError::Invalid { diagnostics, .. }) => {
                for d in &diagnostics {
                    eprintln!("{d}");
                }
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("cortex plan: {}", cortex_core::error_chain(&e));
                return ExitCode::FAILURE;
            }
        }
    }
    if json {
        let plans: Vec<_> = plans.iter().map(|p| &p.plan).collect();
        match serde_json::to_string_pretty(&plans) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("cortex plan: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    for planned in &plans {
        println!(
            "# {} replica {} ({})",
            spec.id,
            planned.plan.replica,
            match target {
                TargetKind::Container => "container",
                _ => "process",
            }
        );
        println!("{}", cortex_engines::preview(&planned.plan));
        for w in &planned.warnings {
            println!("{w}");
        }
    }
    if planned_diagnostics_empty(&plans) {
        println!("diagnostics: none");
    }
    if let Some(args) = estimate_args(spec) {
        println!("\n# memory estimate (per replica)");
        crate::gguf::estimate(args.into_iter());
    }
    ExitCode::SUCCESS
}

fn planned_diagnostics_empty(plans: &[cortex_core::Planned]) -> bool {
    plans.iter().all(|p| p.warnings.iter().next().is_none())
}
