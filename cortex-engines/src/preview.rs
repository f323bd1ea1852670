//! [`preview`]: a plan as a person would type it in a shell.

use cortex_core::plan::shell_quote as quote;
use cortex_core::{GpuRequest, LaunchPlan, Target};

/// Renders `plan` as a command line a person could run: for a process, its environment and command;
/// for a container, the equivalent `docker run`. Values are quoted for a POSIX shell, and
/// secrets in the environment (`*TOKEN*`, `*KEY*`) are masked.
///
/// ```
/// # use cortex_core::{LaunchPlan, Target, HealthSpec, Mount};
/// let mut plan = LaunchPlan::new(
///     "gemma".parse().unwrap(),
///     "llamacpp".into(),
///     Target::Container { image: "cortex/llama-server:b11434".into(), name: "llamacpp-model-gemma".into() },
///     8080,
///     HealthSpec::new("/health"),
/// );
/// plan.args = vec!["-m".into(), "/models/g.gguf".into()];
/// plan.mounts.push(Mount::read_only("/srv/models", "/models"));
/// plan.shm_size = Some(8 << 30);
/// assert_eq!(
///     cortex_engines::preview(&plan),
///     "docker run --rm --name llamacpp-model-gemma --shm-size 8589934592 -p 127.0.0.1::8080 -v /srv/models:/models:ro cortex/llama-server:b11434 -m /models/g.gguf"
/// );
/// ```
pub fn preview(plan: &LaunchPlan) -> String {
    let env: Vec<String> = plan
        .env
        .iter()
        .map(|(k, v)| {
            let secret = ["TOKEN", "KEY", "SECRET", "PASSWORD"]
                .iter()
                .any(|s| k.to_uppercase().contains(s));
            format!("{k}={}", quote(if secret { "***" } else { v }))
        })
        .chain(plan.secrets.keys().map(|k| format!("{k}=***")))
        .collect();
    let args = plan
        .args
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    match &plan.target {
        Target::Container { image, name } => {
            let mut parts = vec![
                "docker run --rm".to_owned(),
                format!("--name {}", quote(name)),
            ];
            if let Some(shm) = plan.shm_size {
                parts.push(format!("--shm-size {shm}"));
            }
            match &plan.gpus {
                GpuRequest::All => parts.push("--gpus all".into()),
                GpuRequest::Count(n) => parts.push(format!("--gpus {n}")),
                GpuRequest::Devices(d) => parts.push(format!(
                    "--gpus {}",
                    quote(&format!("\"device={}\"", d.join(",")))
                )),
                _ => {}
            }
            if let Some(n) = &plan.network {
                parts.push(format!("--network {}", quote(n)));
            }
            parts.push(format!("-p 127.0.0.1::{}", plan.port));
            for m in &plan.mounts {
                let ro = if m.read_only { ":ro" } else { "" };
                parts.push(format!(
                    "-v {}",
                    quote(&format!(
                        "{}:{}{ro}",
                        m.source.display(),
                        m.target.display()
                    ))
                ));
            }
            for e in env {
                parts.push(format!("-e {e}"));
            }
            parts.push(quote(image));
            if !args.is_empty() {
                parts.push(args);
            }
            parts.join(" ")
        }
        Target::Process { program } => {
            let mut parts = env;
            parts.push(quote(&program.display().to_string()));
            if !args.is_empty() {
                parts.push(args);
            }
            parts.join(" ")
        }
        _ => plan.command_line(),
    }
}
