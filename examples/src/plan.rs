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
    let engine = engine_for(spec, &[])?;
    // A process plan has the model's host path, whatever runtime serves it. The port does not
    // matter to memory: the one it will really get is unknown until start.
    let mut planned = engine
        .plan(spec, &PlanContext::new(TargetKind::Process, 0, 0))
        .ok()?;
    show_port_chosen_at_start(&mut planned.plan.args);
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
    let Some(engine) = engine_for(spec, &config.gpu) else {
        eprintln!(
            "cortex plan: `{}` has no engine in this binary",
            spec.engine
        );
        return ExitCode::FAILURE;
    };
    let target = config.runtime.kind.target();
    let mut plans = Vec::new();
    // A container's engine listens on the engine's own port inside it (published on an ephemeral
    // host port); a process replica gets a free port when it starts, unknown until then.
    let process = target == TargetKind::Process;
    let port = if process { 0 } else { engine.default_port() };
    for replica in 0..spec.replicas.get() {
        let cx = PlanContext::new(target, replica, port);
        match engine.plan(spec, &cx) {
            Ok(mut planned) => {
                if process {
                    show_port_chosen_at_start(&mut planned.plan.args);
                }
                plans.push(planned);
            }
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
        if process {
            println!(
                "{PORT_PLACEHOLDER}: a free port on 127.0.0.1, chosen when the replica starts (`cortex models status` shows it)"
            );
        }
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

/// What `cortex plan` shows for the port of a process replica.
const PORT_PLACEHOLDER: &str = "PORT";

/// Replaces the value of `--port` with [`PORT_PLACEHOLDER`].
fn show_port_chosen_at_start(args: &mut [String]) {
    if let Some(at) = args.iter().position(|a| a == "--port") {
        if let Some(value) = args.get_mut(at + 1) {
            PORT_PLACEHOLDER.clone_into(value);
        }
    }
}

fn planned_diagnostics_empty(plans: &[cortex_core::Planned]) -> bool {
    plans.iter().all(|p| p.warnings.iter().next().is_none())
}
