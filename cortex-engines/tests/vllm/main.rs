//! vLLM plans against the pinned 0.32.0 options: exact command lines and each validation rule.

use cortex_core::{
    Diagnostic, Engine, EngineSettings, GpuRequest, HubRepo, ModelId, ModelSource, ModelSpec,
    PlanContext, PlanError, Target, TargetKind, Task,
};
use cortex_engines::VllmEngine;

fn spec(source: ModelSource, settings: &str) -> ModelSpec {
    let settings: EngineSettings = toml::from_str(settings).unwrap();
    ModelSpec::new(ModelId::new("qwen").unwrap(), "vllm".into(), source)
        .with_served_name("qwen3")
        .with_settings(settings)
}

fn local(settings: &str) -> ModelSpec {
    spec(ModelSource::Path("/srv/models/Qwen3-8B".into()), settings)
}

fn plan(spec: &ModelSpec, target: TargetKind) -> Result<cortex_core::Planned, PlanError> {
    VllmEngine::new().plan(spec, &PlanContext::new(target, 0, 8000))
}

fn errors(spec: &ModelSpec) -> Vec<Diagnostic> {
    match plan(spec, TargetKind::Process) {
        Err(PlanError::Invalid { diagnostics, .. }) => diagnostics
            .into_iter()
            .filter(Diagnostic::is_error)
            .collect(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn process_and_container_plans_are_exact() {
    let p = plan(&local(""), TargetKind::Process).unwrap().plan;
    assert_eq!(
        p.command_line(),
        "vllm serve /srv/models/Qwen3-8B --served-model-name qwen3 --host 127.0.0.1 --port 8000 --tensor-parallel-size 1 --max-num-seqs 256 --max-num-batched-tokens 2048 --enforce-eager"
    );
    assert_eq!(
        p.env["HF_HUB_OFFLINE"], "1",
        "a local directory is served offline"
    );
    assert_eq!(p.env["PYTORCH_CUDA_ALLOC_CONF"], "expandable_segments:True");
    assert_eq!(p.health.startup_timeout.as_secs(), 600);
    assert_eq!(p.stop_grace.as_secs(), 5);

    // A local model directory is mounted whole, read-only, at /models.
    let dir = std::env::temp_dir().join(format!("cortex-vllm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = plan(
        &spec(ModelSource::Path(dir.clone()), ""),
        TargetKind::Container,
    )
    .unwrap()
    .plan;
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        p.target,
        Target::Container {
            image: "vllm/vllm-openai:v0.32.0".into(),
            name: "vllm-model-qwen".into(),
        }
    );
    assert!(p.command_line().starts_with(
        "vllm/vllm-openai:v0.32.0 /models --served-model-name qwen3 --host 0.0.0.0 --port 8000"
    ));
    assert_eq!(p.mounts.len(), 1);
    assert!(p.mounts[0].read_only);
    assert_eq!(
        (p.mounts[0].source.as_path(), p.mounts[0].target.to_str()),
        (dir.as_path(), Some("/models"))
    );
    assert_eq!(p.shm_size, Some(2 << 30));
    assert_eq!(p.gpus, GpuRequest::All);

    // A hub repository: online, with the hub cache mounted and the token in the environment only.
    let hub = spec(
        ModelSource::Hub(HubRepo::new("Qwen/Qwen3-8B").unwrap().with_revision("main")),
        "hf_token = \"hf_secret\"\nhf_cache = \"/var/cache/hf\"",
    );
    let p = plan(&hub, TargetKind::Container).unwrap().plan;
    assert!(p.command_line().contains("Qwen/Qwen3-8B --revision main"));
    assert!(!p.env.contains_key("HF_HUB_OFFLINE"));
    assert_eq!(p.secrets["HF_TOKEN"].expose(), "hf_secret");
    for shown in [
        p.command_line(),
        format!("{p:?}"),
        cortex_engines::preview(&p),
        serde_json::to_string(&p).unwrap(),
        p.fingerprint(),
    ] {
        assert!(!shown.contains("hf_secret"), "{shown}");
    }
    assert!(!p.mounts[0].read_only);
    assert_eq!(
        p.mounts[0].target.to_str(),
        Some("/root/.cache/huggingface")
    );
}

#[test]
fn settings_reach_the_command_line() {
    let s = local(
        r#"
        dtype = "bfloat16"
        tensor_parallel_size = 2
        pipeline_parallel_size = 2
        gpu_memory_utilization = 0.85
        max_model_len = 32768
        kv_cache_dtype = "fp8"
        enforce_eager = false
        prefix_caching = false
        chunked_prefill = true
        cudagraph_capture_sizes = [1, 2, 4]
        quantization = "awq"
        trust_remote_code = true
        api_key = "sk-internal"
        "#,
    )
    .with_task(Task::Embed);
    let planned = plan(&s, TargetKind::Process).unwrap().plan;
    let line = planned.command_line();
    // The key reaches the engine in its environment, never on its command line or in the plan's
    // printed forms.
    assert!(!line.contains("sk-internal"), "{line}");
    assert_eq!(planned.secrets["VLLM_API_KEY"].expose(), "sk-internal");
    assert!(!format!("{planned:?}").contains("sk-internal"));
    assert!(
        !serde_json::to_string(&planned)
            .unwrap()
            .contains("sk-internal")
    );
    for expected in [
        "--dtype bfloat16",
        "--tensor-parallel-size 2",
        "--pipeline-parallel-size 2",
        "--gpu-memory-utilization 0.85",
        "--max-model-len 32768",
        "--kv-cache-dtype fp8",
        "--quantization awq",
        "--runner pooling --convert embed",
        "--cudagraph-capture-sizes 1 2 4",
        "--trust-remote-code",
        "--no-enable-prefix-caching",
        "--enable-chunked-prefill",
    ] {
        assert!(line.contains(expected), "{expected:?} missing from {line}");
    }
    assert!(!line.contains("--enforce-eager"));
}

#[test]
fn validation_rules() {
    assert_eq!(
        errors(&local("gpu_memory_utilization = 1.5"))[0].message,
        "1.5 is not in (0, 1]"
    );
    assert_eq!(
        errors(&local("tensor_parallel_size = 4\ngpus = { count = 2 }"))[0].message,
        "tensor × pipeline parallel needs 4 GPUs but only 2 are requested"
    );
    let e = errors(&local("kv_cache_dtype = \"fp4\""));
    assert_eq!(e[0].message, "`fp4` is not accepted by --kv-cache-dtype");
    assert_eq!(
        errors(&local("block_size = 0"))[0].field,
        "settings.block_size"
    );
}

#[test]
fn removed_and_unknown_options() {
    let with = |args: &[&str]| local("").with_args(args.iter().copied());
    let e = errors(&with(&["--task", "embed"]));
    assert_eq!(e[0].message, "`--task` was removed in vLLM 0.32.0");
    assert!(
        e[0].suggestion
            .as_deref()
            .unwrap()
            .contains("--runner pooling")
    );
    let e = errors(&with(&["--swap-space", "4"]));
    assert_eq!(e[0].message, "`--swap-space` was removed in vLLM 0.32.0");
    let e = errors(&with(&["--cuda-graph-sizes", "8"]));
    assert!(
        e[0].suggestion
            .as_deref()
            .unwrap()
            .contains("--cudagraph-capture-sizes")
    );
    let w = plan(&with(&["--cpu-offload-gb", "4"]), TargetKind::Process)
        .unwrap()
        .warnings;
    assert!(
        w.iter().any(|d| d.message.contains("has no effect")),
        "{w:?}"
    );
    let w = plan(&with(&["--max-num-seq", "8"]), TargetKind::Process)
        .unwrap()
        .warnings;
    assert!(
        w.is_empty(),
        "argparse accepts an unambiguous prefix: {w:?}"
    );
    let w = plan(
        &with(&["--max_model_len", "4096", "--enable-prefix-caching"]),
        TargetKind::Process,
    )
    .unwrap()
    .warnings;
    assert!(w.is_empty(), "`_` stands for `-`: {w:?}");
    // vLLM exits on an unknown flag: an error, with the closest one.
    let e = errors(&with(&["--max-modle-len", "4096"]));
    assert_eq!(
        e[0].message,
        "unknown flag `--max-modle-len`: vllm serve 0.32.0 exits on it"
    );
    assert_eq!(
        e[0].suggestion.as_deref(),
        Some("did you mean `--max-model-len`?")
    );
    // Out of the bounds vLLM checks after parsing (vllm-field-constraints.json).
    let e = errors(&with(&["--gpu-memory-utilization", "1.2"]));
    assert_eq!(
        e[0].message,
        "`--gpu-memory-utilization` takes more than 0 and at most 1, not 1.2"
    );
    let e = errors(&with(&["--block-size=0"]));
    assert_eq!(e[0].message, "`--block-size` takes more than 0, not 0");
    let e = errors(&with(&["--dtype", "fp64"]));
    assert_eq!(e[0].message, "`--dtype` does not accept `fp64`");
    let e = errors(&with(&["--served-model-name", "x"]));
    assert!(
        e[0].message
            .starts_with("`--served-model-name` is managed by Cortex")
    );
}

/// Managed flags are refused under every spelling vLLM's argparse accepts: `_` for `-`,
/// unambiguous prefixes, `--flag=value`.
#[test]
fn managed_flags_are_refused_under_every_spelling_vllm_accepts() {
    let with = |args: &[&str]| local("").with_args(args.iter().copied());
    for (args, canonical) in [
        (&["--served_model_name", "x"][..], "--served-model-name"),
        (&["--served-model", "x"], "--served-model-name"),
        (&["--served-model-name=x"], "--served-model-name"),
        (&["--por", "9"], "--port"),
        (&["--port=9"], "--port"),
        (&["--hos", "0.0.0.0"], "--host"),
        (&["--api_key", "k"], "--api-key"),
        (&["--api-k=k"], "--api-key"),
    ] {
        let e = errors(&with(args));
        assert!(
            e.iter().any(
                |d| d.message.contains("is managed by Cortex") && d.message.contains(canonical)
            ),
            "{args:?}: {e:?}"
        );
    }
    // A prefix shared by two flags is not one of them (argparse refuses it as ambiguous).
    assert!(
        plan(&with(&["--max-num", "8"]), TargetKind::Process).is_ok()
            || errors(&with(&["--max-num", "8"]))
                .iter()
                .all(|d| !d.message.contains("managed"))
    );
}

/// A directory under the test target's temporary directory, fresh.
fn fresh(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("vllm")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A model directory with (or without) a chat template and a `max_new_tokens`.
fn model_dir(name: &str, template: bool, max_new_tokens: Option<u64>) -> std::path::PathBuf {
    let dir = fresh(name);
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    let mut tokenizer = serde_json::json!({"tokenizer_class": "PreTrainedTokenizerFast"});
    if template {
        tokenizer["chat_template"] = "{% for m in messages %}{{ m.content }}{% endfor %}".into();
    }
    std::fs::write(dir.join("tokenizer_config.json"), tokenizer.to_string()).unwrap();
    if let Some(n) = max_new_tokens {
        std::fs::write(
            dir.join("generation_config.json"),
            serde_json::json!({"max_new_tokens": n}).to_string(),
        )
        .unwrap();
    }
    dir
}

/// An adapter directory vLLM would load.
fn adapter(name: &str) -> std::path::PathBuf {
    let dir = fresh(name);
    std::fs::write(dir.join("adapter_config.json"), "{\"r\": 8}").unwrap();
    dir
}

#[test]
fn typed_features_reach_the_command_line() {
    let sql = adapter("lora-sql");
    let template = fresh("template").join("chat.jinja");
    std::fs::write(
        &template,
        "{% for m in messages %}{{ m.content }}{% endfor %}",
    )
    .unwrap();
    let settings = format!(
        r#"
        data_parallel_size = 2
        gpus = {{ count = 2 }}
        chat_template = "{}"
        tool_call_parser = "hermes"
        reasoning_parser = "qwen3"
        lora_adapters = [{{ name = "sql", path = "{}" }}]
        max_lora_rank = 16
        max_loras = 2
        speculative = {{ method = "ngram", num_speculative_tokens = 3, prompt_lookup_max = 4 }}
        generation_config = "vllm"
        "#,
        template.display(),
        sql.display()
    );
    let spec = local(&settings);
    let planned = plan(&spec, TargetKind::Process).unwrap();
    let line = planned.plan.args.join(" ");
    for expected in [
        "--data-parallel-size 2",
        &format!("--chat-template {}", template.display()),
        "--enable-auto-tool-choice --tool-call-parser hermes",
        "--reasoning-parser qwen3",
        &format!(
            "--enable-lora --lora-modules sql={} --max-lora-rank 16 --max-loras 2",
            sql.display()
        ),
        r#"--speculative-config {"method":"ngram","num_speculative_tokens":3,"prompt_lookup_max":4}"#,
        "--generation-config vllm",
    ] {
        assert!(line.contains(expected), "{expected:?} missing from {line}");
    }
    // The adapter is a name the gateway routes to this model.
    assert_eq!(planned.plan.aliases, ["sql"]);

    // A container sees the files where Cortex mounts them.
    let planned = plan(&spec, TargetKind::Container).unwrap();
    let line = planned.plan.args.join(" ");
    assert!(
        line.contains("--chat-template /cortex/chat-template/chat.jinja"),
        "{line}"
    );
    assert!(
        line.contains("--lora-modules sql=/cortex/lora/sql"),
        "{line}"
    );
    let mounts: Vec<(String, String, bool)> = planned
        .plan
        .mounts
        .iter()
        .map(|m| {
            (
                m.source.display().to_string(),
                m.target.display().to_string(),
                m.read_only,
            )
        })
        .collect();
    assert!(
        mounts.contains(&(
            template.display().to_string(),
            "/cortex/chat-template/chat.jinja".into(),
            true
        )),
        "{mounts:?}"
    );
    assert!(
        mounts.contains(&(sql.display().to_string(), "/cortex/lora/sql".into(), true)),
        "{mounts:?}"
    );
}

#[test]
fn typed_features_are_checked_against_the_pinned_version() {
    let no_config = fresh("lora-empty");
    let sql = adapter("lora-sql-2");
    for (settings, field, message, suggestion) in [
        (
            "tool_call_parser = \"hermess\"".to_owned(),
            "settings.tool_call_parser",
            "`hermess` is not a tool-call parser vLLM 0.32.0 has",
            Some("did you mean `hermes`?"),
        ),
        (
            "reasoning_parser = \"deepseek-r1\"".to_owned(),
            "settings.reasoning_parser",
            "`deepseek-r1` is not a reasoning parser vLLM 0.32.0 has",
            Some("did you mean `deepseek_r1`?"),
        ),
        (
            "quantization = \"awq-marlin\"".to_owned(),
            "settings.quantization",
            "`awq-marlin` is not a quantization method vLLM 0.32.0 has",
            Some("did you mean `awq_marlin`?"),
        ),
        (
            "max_lora_rank = 7".to_owned(),
            "settings.max_lora_rank",
            "`7` is not accepted by --max-lora-rank",
            None,
        ),
        (
            format!(
                "lora_adapters = [{{ name = \"x\", path = \"{}\" }}]",
                no_config.display()
            ),
            "settings.lora_adapters[0].path",
            "holds no adapter_config.json",
            None,
        ),
        (
            format!(
                "lora_adapters = [{{ name = \"qwen3\", path = \"{}\" }}]",
                sql.display()
            ),
            "settings.lora_adapters[0].name",
            "`qwen3` is already a name of this model",
            None,
        ),
        (
            "speculative = { method = \"ngram\", num_speculative_token = 3 }".to_owned(),
            "settings.speculative",
            "SpeculativeConfig has no field `num_speculative_token` (did you mean `num_speculative_tokens`?)",
            None,
        ),
        (
            "speculative = { method = \"bogus\" }".to_owned(),
            "settings.speculative",
            "SpeculativeConfig.method takes one of ngram",
            None,
        ),
        (
            "generation_config = \"/no/such/dir\"".to_owned(),
            "settings.generation_config",
            "`/no/such/dir` is neither `auto`, `vllm` nor a directory",
            None,
        ),
        (
            "chat_template = \"/no/such/template.jinja\"".to_owned(),
            "settings.chat_template",
            "chat template `/no/such/template.jinja` is neither a file nor a template vLLM ships",
            None,
        ),
        (
            "data_parallel_size = 2\ntensor_parallel_size = 2\ngpus = { count = 2 }".to_owned(),
            "settings.tensor_parallel_size",
            "tensor × pipeline × data parallel needs 4 GPUs but only 2 are requested",
            None,
        ),
    ] {
        let e = errors(&local(&settings));
        let d = e
            .iter()
            .find(|d| d.field == field)
            .unwrap_or_else(|| panic!("{settings}: no error on {field}: {e:?}"));
        assert!(d.message.contains(message), "{settings}: {}", d.message);
        if let Some(s) = suggestion {
            assert_eq!(d.suggestion.as_deref(), Some(s), "{settings}");
        }
    }
}

/// A local model without a chat template gets vLLM's ChatML template (said as a warning), unless
/// the fallback is off; a model's `max_new_tokens` cap is pointed out.
#[test]
fn chat_fallback_and_generation_config_follow_the_model_directory() {
    let with = |dir: &std::path::Path, settings: &str| {
        plan(
            &spec(ModelSource::Path(dir.to_owned()), settings),
            TargetKind::Process,
        )
        .unwrap()
    };
    let bare = model_dir("bare", false, Some(16));
    let planned = with(&bare, "");
    let line = planned.plan.args.join(" ");
    assert!(
        line.contains("--chat-template template_chatml.jinja"),
        "{line}"
    );
    let w: Vec<String> = planned.warnings.iter().map(|d| d.message.clone()).collect();
    assert!(
        w.iter()
            .any(|m| m.contains("chat requests use vLLM's ChatML template")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|m| m.contains("sets max_new_tokens = 16: vLLM caps every answer at 16 tokens")),
        "{w:?}"
    );
    // Off: no template flag, a warning that chat will be refused; `vllm` silences the cap.
    let planned = with(
        &bare,
        "chat_fallback = \"none\"\ngeneration_config = \"vllm\"",
    );
    assert!(!planned.plan.args.iter().any(|a| a == "--chat-template"));
    let w: Vec<String> = planned.warnings.iter().map(|d| d.message.clone()).collect();
    assert!(
        w.iter()
            .any(|m| m.contains("vLLM refuses chat requests with a 400")),
        "{w:?}"
    );
    assert!(!w.iter().any(|m| m.contains("max_new_tokens")), "{w:?}");
    // A model with a template: nothing added, nothing said.
    let templated = model_dir("templated", true, None);
    let planned = with(&templated, "");
    assert!(!planned.plan.args.iter().any(|a| a == "--chat-template"));
    assert!(planned.warnings.is_empty(), "{:?}", planned.warnings);
    // Embeddings need no chat template.
    let planned = plan(
        &spec(
            ModelSource::Path(bare.clone()),
            "generation_config = \"vllm\"",
        )
        .with_task(Task::Embed),
        TargetKind::Process,
    )
    .unwrap();
    assert!(!planned.plan.args.iter().any(|a| a == "--chat-template"));
}
