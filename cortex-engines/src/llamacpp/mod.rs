//! llama.cpp's `llama-server` (pinned build 11434): settings, flag table, validation, plans.

mod settings;
mod template;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use cortex_core::plan::Secret;
use cortex_core::{
    Diagnostic, Diagnostics, Engine, EngineKind, GpuRequest, HealthSpec, LaunchPlan, ModelSource,
    ModelSpec, Mount, PlanContext, PlanError, Planned, Refused, Target, TargetKind, Task,
};

pub use settings::{
    Draft, GpuLayers, LlamaCppSettings, Lora, NamedLayers, OnOffAuto, RequestDefaults,
};
pub use template::{BUILTIN_CHAT_TEMPLATES, builtin_template_for, is_builtin_template};

use crate::common::{check_choice, check_managed, decode_settings, finish_container};
use crate::flags::{FlagTable, Retired};
use crate::resolve::resolve_gguf;

/// The pinned llama-server build.
pub const LLAMA_SERVER_BUILD: &str = "b11434";
/// The port llama-server listens on inside a container.
pub const CONTAINER_PORT: u16 = 8080;
/// Shared memory of a llama.cpp container: 8 GiB.
pub const SHM_SIZE: u64 = 8 << 30;

/// The flag table of the pinned build, generated from its `--help` (see [`crate::flags`]).
pub static FLAGS: LazyLock<FlagTable> =
    LazyLock::new(|| FlagTable::from_tsv(include_str!("flags-b11434.tsv")));

/// Flags the pinned build no longer has or ignores, with what to use instead.
const RETIRED: &[Retired] = &[
    Retired {
        names: &["--mlock"],
        error: false,
        message: "`--mlock` is deprecated in build 11434",
        suggestion: "use `--load-mode mlock` (settings.load_mode = \"mlock\")",
    },
    Retired {
        names: &["--no-mmap"],
        error: false,
        message: "`--no-mmap` is deprecated in build 11434",
        suggestion: "use `--load-mode none` (settings.load_mode = \"none\")",
    },
    Retired {
        names: &["--mmap"],
        error: false,
        message: "`--mmap` is deprecated in build 11434",
        suggestion: "use `--load-mode mmap`",
    },
    Retired {
        names: &["-dio", "--direct-io"],
        error: false,
        message: "`--direct-io` is deprecated in build 11434",
        suggestion: "use `--load-mode dio`",
    },
    Retired {
        names: &["-dt", "--defrag-thold"],
        error: false,
        message: "`--defrag-thold` does nothing: KV cache defragmentation was removed",
        suggestion: "drop it",
    },
    Retired {
        names: &["--draft", "--draft-n", "--draft-max"],
        error: true,
        message: "`--draft-max` was removed",
        suggestion: "use `--spec-draft-n-max` (settings.draft.max)",
    },
    Retired {
        names: &["--draft-min", "--draft-n-min"],
        error: true,
        message: "`--draft-min` was removed",
        suggestion: "use `--spec-draft-n-min` (settings.draft.min)",
    },
];

/// Flags Cortex sets itself; giving them as custom arguments would fight the plan.
const MANAGED: &[(&[&str], &str)] = &[
    (&["-m", "--model"], "the model comes from the spec's source"),
    (&["--port"], "the port is chosen by the supervisor"),
    (&["--host"], "the address is chosen by the runtime"),
    (&["-a", "--alias"], "the alias is the spec's served_name"),
    (
        &["--api-key", "--api-key-file"],
        "a key on the command line is visible to every user in `ps`; set `settings.api_key`, which reaches llama-server in its environment (LLAMA_API_KEY)",
    ),
    (
        &["-hft", "--hf-token"],
        "a token on the command line is visible to every user in `ps`; set `settings.hf_token`, which reaches llama-server in its environment (HF_TOKEN)",
    ),
];

/// Plans `llama-server` launches; see [`LlamaCppSettings`] for what can be set.
#[derive(Debug, Clone, Default)]
pub struct LlamaCppEngine {
    _private: (),
}

// === impl LlamaCppEngine ===

impl LlamaCppEngine {
    /// The engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks `spec` without planning: the settings, the model path and the custom arguments.
    pub fn validate(&self, spec: &ModelSpec) -> Diagnostics {
        match spec.settings.decode::<LlamaCppSettings>() {
            Ok(settings) => Self::check(spec, &settings).diagnostics,
            Err(e) => std::iter::once(Diagnostic::error(
                format!("settings.{}", e.path()),
                e.message(),
            ))
            .collect(),
        }
    }

    /// Validation shared by `validate` and `plan`: the model file (if it resolves) and findings.
    // Each rule is a few lines; one list of rules reads better than many small functions.
    #[allow(clippy::too_many_lines)]
    fn check(spec: &ModelSpec, s: &LlamaCppSettings) -> Checked {
        let mut d = Diagnostics::new();
        let model = match &spec.source {
            ModelSource::Path(path) => {
                if path.exists() {
                    match resolve_gguf(
                        path,
                        s.model_file.as_deref(),
                        s.quant.as_deref(),
                        "source.path",
                    ) {
                        Ok(r) => Some(ModelFile::Local(r.file)),
                        Err(e) => {
                            d.push(e);
                            None
                        }
                    }
                } else {
                    // llama-server reports a missing file itself, in the log tail of a failed start.
                    d.push(Diagnostic::warning(
                        "source.path",
                        format!("{} does not exist (yet)", path.display()),
                    ));
                    Some(ModelFile::Local(path.clone()))
                }
            }
            ModelSource::Hub(hub) => Some(ModelFile::Hub {
                repo: match &s.quant {
                    Some(q) => format!("{}:{q}", hub.repo),
                    None => hub.repo.clone(),
                },
                file: hub.file.clone(),
            }),
            _ => None,
        };
        if s.hf_token.is_some() && !matches!(spec.source, ModelSource::Hub(_)) {
            d.push(Diagnostic::warning(
                "settings.hf_token",
                "a token is used only to download a hub source; this model is a local file",
            ));
        }
        let quantized = |t: &Option<String>| {
            t.as_deref()
                .is_some_and(|t| !matches!(t, "f32" | "f16" | "bf16"))
        };
        if quantized(&s.cache_type_v) && s.flash_attn == OnOffAuto::Off {
            d.push(
                Diagnostic::error(
                    "settings.cache_type_v",
                    "quantized V cache requires flash_attn to be enabled",
                )
                .with_suggestion("set flash_attn = \"on\" or use an f16 V cache"),
            );
        }
        for (field, value) in [
            ("settings.cache_type_k", &s.cache_type_k),
            ("settings.cache_type_v", &s.cache_type_v),
        ] {
            check_choice(
                &FLAGS,
                &mut d,
                field,
                value.as_deref(),
                if field.ends_with('k') { "-ctk" } else { "-ctv" },
            );
        }
        check_choice(
            &FLAGS,
            &mut d,
            "settings.split_mode",
            s.split_mode.as_deref(),
            "-sm",
        );
        check_choice(&FLAGS, &mut d, "settings.numa", s.numa.as_deref(), "--numa");
        check_choice(
            &FLAGS,
            &mut d,
            "settings.rope_scaling",
            s.rope_scaling.as_deref(),
            "--rope-scaling",
        );
        check_choice(
            &FLAGS,
            &mut d,
            "settings.pooling",
            s.pooling.as_deref(),
            "--pooling",
        );
        if let Some(mode) = &s.load_mode {
            if !["auto", "none", "mmap", "mlock", "mmap+mlock", "dio"].contains(&mode.as_str()) {
                d.push(
                    Diagnostic::error("settings.load_mode", format!("unknown load mode `{mode}`"))
                        .with_suggestion("one of auto, none, mmap, mlock, mmap+mlock, dio"),
                );
            }
        }
        if !s.tensor_split.is_empty() {
            if s.tensor_split.iter().any(|&f| f < 0.0 || !f.is_finite()) {
                d.push(Diagnostic::error(
                    "settings.tensor_split",
                    "tensor split entries must be zero or positive",
                ));
            } else if s.tensor_split.iter().sum::<f32>() <= 0.0 {
                d.push(Diagnostic::error(
                    "settings.tensor_split",
                    "tensor split entries sum to zero: no GPU gets any layer",
                ));
            }
            let requested = match &s.gpus {
                Some(GpuRequest::Count(n)) => Some(*n as usize),
                Some(GpuRequest::Devices(v)) => Some(v.len()),
                Some(GpuRequest::None) => Some(0),
                _ => None,
            };
            if let Some(n) = requested.filter(|&n| s.tensor_split.len() > n) {
                d.push(
                    Diagnostic::error(
                        "settings.tensor_split",
                        format!(
                            "the split names {} GPUs but only {n} are requested",
                            s.tensor_split.len()
                        ),
                    )
                    .with_suggestion("request as many GPUs as the split has entries"),
                );
            }
        }
        if s.system_prompt.is_some() {
            d.push(
                Diagnostic::error("settings.system_prompt", "llama-server b11434 has no system prompt option")
                    .with_suggestion("put it in the requests' messages or in a chat template (settings.chat_template_file)"),
            );
        }
        if spec.task == Task::Rerank && s.pooling.as_deref().is_some_and(|p| p != "rank") {
            d.push(Diagnostic::error(
                "settings.pooling",
                "reranking needs pooling `rank`",
            ));
        }
        let local = match &model {
            Some(ModelFile::Local(path)) => Some(path.as_path()),
            _ => None,
        };
        let no_jinja = template::check(spec, s, local, &mut d);
        check_managed(spec, MANAGED, &FLAGS, &mut d);
        d.extend(FLAGS.check_args("llama-server", &spec.args, RETIRED));
        Checked {
            model,
            diagnostics: d,
            no_jinja,
        }
    }
}

/// What [`LlamaCppEngine::check`] found.
struct Checked {
    model: Option<ModelFile>,
    diagnostics: Diagnostics,
    /// A built-in chat template name needs the legacy template engine.
    no_jinja: bool,
}

enum ModelFile {
    Local(PathBuf),
    Hub { repo: String, file: Option<String> },
}

impl Engine for LlamaCppEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::LLAMA_CPP
    }

    fn default_port(&self) -> u16 {
        CONTAINER_PORT
    }

    /// llama-server b11434 checks its port before loading the model and exits 1 with
    /// `start: couldn't bind HTTP server socket, hostname: …, port: …` (captured in
    /// `testdata/llama-server/port-taken.txt`).
    fn port_taken(&self, log_tail: &[cortex_core::LogLine]) -> bool {
        log_tail
            .iter()
            .any(|l| l.line.contains("couldn't bind HTTP server socket"))
    }

    // The command line, flag by flag in llama-server's order: long, but one straight list.
    #[allow(clippy::too_many_lines)]
    fn plan(&self, spec: &ModelSpec, cx: &PlanContext) -> Result<Planned, PlanError> {
        let s: LlamaCppSettings = decode_settings(spec)?;
        let Checked {
            model,
            diagnostics,
            no_jinja,
        } = Self::check(spec, &s);
        if diagnostics.has_errors() {
            return Err(PlanError::Invalid {
                model: spec.id.clone(),
                diagnostics,
            });
        }
        let Some(model) = model else {
            return Err(PlanError::Invalid {
                model: spec.id.clone(),
                diagnostics,
            });
        };
        let container = cx.target == TargetKind::Container;
        if container && s.hf_token.is_some() && s.image == LlamaCppSettings::default().image {
            // Secrets reach a container as files; llama-server reads only the API key's itself,
            // and this image has no shell to export the token from its file.
            return Err(PlanError::Invalid {
                model: spec.id.clone(),
                diagnostics: std::iter::once(
                    Diagnostic::error(
                        "settings.hf_token",
                        "the default image has no shell to pass the token to llama-server from its secret file",
                    )
                    .with_suggestion(
                        "download the model on the host and give its path, or use an image with /bin/sh (settings.image)",
                    ),
                )
                .collect(),
            });
        }
        let mut mounts = Mounts::new(container);
        let mut args: Vec<String> = Vec::new();
        let mut arg = |a: &str, v: String| {
            args.push(a.to_owned());
            args.push(v);
        };
        match &model {
            ModelFile::Local(path) => {
                let p = mounts.model(path);
                arg("-m", p);
            }
            ModelFile::Hub { repo, file } => {
                arg("-hf", repo.clone());
                if let Some(f) = file {
                    arg("-hff", f.clone());
                }
            }
        }
        arg("--alias", spec.served_name().to_owned());
        arg(
            "--host",
            if container {
                "0.0.0.0".into()
            } else {
                "127.0.0.1".into()
            },
        );
        arg("--port", cx.port.to_string());
        arg("-c", s.ctx_size.to_string());
        arg("-ngl", s.gpu_layers.arg());
        if !s.tensor_split.is_empty() {
            arg(
                "-ts",
                s.tensor_split
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        if let Some(v) = &s.split_mode {
            arg("-sm", v.clone());
        }
        if let Some(v) = s.main_gpu {
            arg("-mg", v.to_string());
        }
        arg("-b", s.batch_size.to_string());
        if let Some(v) = s.ubatch_size {
            arg("-ub", v.to_string());
        }
        arg("-t", s.threads.unwrap_or_else(default_threads).to_string());
        arg("-fa", s.flash_attn.arg().to_owned());
        if let Some(v) = &s.load_mode {
            arg("-lm", v.clone());
        }
        if let Some(v) = &s.numa {
            arg("--numa", v.clone());
        }
        if let Some(v) = &s.rope_scaling {
            arg("--rope-scaling", v.clone());
        }
        if let Some(v) = s.rope_freq_base {
            arg("--rope-freq-base", v.to_string());
        }
        if let Some(v) = s.rope_freq_scale {
            arg("--rope-freq-scale", v.to_string());
        }
        if let Some(v) = &s.cache_type_k {
            arg("-ctk", v.clone());
        }
        if let Some(v) = &s.cache_type_v {
            arg("-ctv", v.clone());
        }
        if let Some(v) = s.parallel {
            arg("-np", v.to_string());
        }
        if let Some(v) = s.verbosity {
            arg("-lv", v.to_string());
        }
        if let Some(v) = &s.chat_template {
            arg("--chat-template", v.clone());
        }
        if let Some(v) = &s.chat_template_file {
            let p = mounts.extra(v);
            arg("--chat-template-file", p);
        }
        if let Some(v) = &s.grammar_file {
            let p = mounts.extra(v);
            arg("--grammar-file", p);
        }
        if let Some(v) = &s.pooling {
            arg("--pooling", v.clone());
        }
        if !s.lora.is_empty() {
            let scaled: Vec<String> = s
                .lora
                .iter()
                .map(|l| format!("{}:{}", mounts.extra(&l.path), l.scale.unwrap_or(1.0)))
                .collect();
            arg("--lora-scaled", scaled.join(","));
        }
        if let Some(draft) = &s.draft {
            arg("--spec-type", "draft-simple".into());
            let p = mounts.extra(&draft.model);
            arg("-md", p);
            if let Some(v) = draft.max {
                arg("--spec-draft-n-max", v.to_string());
            }
            if let Some(v) = draft.min {
                arg("--spec-draft-n-min", v.to_string());
            }
            if let Some(v) = draft.gpu_layers {
                arg("-ngld", v.arg());
            }
        }
        let d = &s.defaults;
        if let Some(v) = d.temperature {
            arg("--temp", v.to_string());
        }
        if let Some(v) = d.top_p {
            arg("--top-p", v.to_string());
        }
        if let Some(v) = d.top_k {
            arg("--top-k", v.to_string());
        }
        if let Some(v) = d.max_tokens {
            arg("-n", v.to_string());
        }
        if let Some(v) = d.seed {
            arg("--seed", v.to_string());
        }
        if let Some(v) = s.timeout {
            arg("-to", v.to_string());
        }
        let mut switch = |on: bool, flag: &str| {
            if on {
                args.push(flag.to_owned());
            }
        };
        match s.kv_unified {
            Some(true) => switch(true, "-kvu"),
            Some(false) => switch(true, "-no-kvu"),
            None => {}
        }
        switch(s.swa_full, "--swa-full");
        switch(!s.cont_batching, "-nocb");
        switch(s.metrics, "--metrics");
        switch(!s.slots, "--no-slots");
        switch(s.log_timestamps, "--log-timestamps");
        switch(!s.warmup, "--no-warmup");
        switch(s.check_tensors, "--check-tensors");
        match s.jinja {
            Some(true) => switch(true, "--jinja"),
            Some(false) => switch(true, "--no-jinja"),
            // A built-in template name works only without Jinja (see `template`).
            None => switch(no_jinja, "--no-jinja"),
        }
        switch(spec.task == Task::Embed, "--embeddings");
        switch(spec.task == Task::Rerank, "--reranking");
        args.extend(spec.args.iter().cloned());

        let target = if container {
            Target::Container {
                image: s.image.clone(),
                name: container_name("llamacpp", spec, cx.replica),
            }
        } else {
            Target::Process {
                program: s.program.clone(),
            }
        };
        let mut health = HealthSpec::new("/health")
            .with_loading_statuses([503])
            .with_refused(Refused::Down)
            .with_startup_timeout(Duration::from_secs(300))
            .with_poll_interval(Duration::from_millis(50), Duration::from_millis(250));
        if container {
            // Both Cortex's image (scripts/build-llama-image) and llama.cpp's published server
            // images carry curl; -f fails on the 503 of a loading model.
            health = health.with_command([
                "curl".to_owned(),
                "-fsS".to_owned(),
                "-o".to_owned(),
                "/dev/null".to_owned(),
                format!("http://127.0.0.1:{}/health", cx.port),
            ]);
        }
        let mut plan = LaunchPlan::new(
            spec.id.clone(),
            EngineKind::LLAMA_CPP,
            target,
            cx.port,
            health,
        );
        plan.replica = cx.replica;
        plan.args = args;
        plan.env = spec.env.clone();
        if let Some(token) = &s.hf_token {
            plan.secrets
                .insert("HF_TOKEN".to_owned(), Secret::new(token.as_str()));
        }
        if let Some(key) = &s.api_key {
            plan.secrets
                .insert("LLAMA_API_KEY".to_owned(), Secret::new(key.as_str()));
            if container {
                // The image has no shell: llama-server reads the file itself.
                plan.env.insert(
                    "LLAMA_ARG_API_KEY_FILE".to_owned(),
                    format!("{}/LLAMA_API_KEY", cortex_core::plan::SECRETS_DIR),
                );
            }
        }
        plan.mounts = mounts.into_vec();
        plan.stop_grace = Duration::from_secs(10);
        if container {
            finish_container(&mut plan, SHM_SIZE, s.network.as_ref(), s.gpus.as_ref());
        }
        let warnings = diagnostics.into_iter().filter(|d| !d.is_error()).collect();
        Ok(Planned::new(plan, warnings))
    }
}

/// `{engine}-model-{id}`, with `-{replica}` for replicas after the first.
pub(crate) fn container_name(engine: &str, spec: &ModelSpec, replica: u32) -> String {
    if replica == 0 {
        format!("{engine}-model-{}", spec.id)
    } else {
        format!("{engine}-model-{}-{replica}", spec.id)
    }
}

/// Cores − 2, at least 1 (the source documents' default).
fn default_threads() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    u32::try_from(cores.saturating_sub(2).max(1)).unwrap_or(1)
}

/// Paths as the engine sees them: unchanged for a process; for a container the model's directory
/// read-only at `/models`, other files' directories at `/mnt/cortex/N`.
struct Mounts {
    container: bool,
    mounts: Vec<Mount>,
}

impl Mounts {
    fn new(container: bool) -> Self {
        Self {
            container,
            mounts: Vec::new(),
        }
    }

    fn model(&mut self, file: &Path) -> String {
        self.map(file, Some("/models"))
    }

    fn extra(&mut self, file: &Path) -> String {
        self.map(file, None)
    }

    fn map(&mut self, file: &Path, at: Option<&str>) -> String {
        if !self.container {
            return file.display().to_string();
        }
        let dir = file
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_owned);
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = if let Some(m) = self.mounts.iter().find(|m| m.source == dir) {
            m.target.clone()
        } else {
            let target = PathBuf::from(at.map_or_else(
                || format!("/mnt/cortex/{}", self.mounts.len()),
                str::to_owned,
            ));
            self.mounts.push(Mount::read_only(dir, target.clone()));
            target
        };
        target.join(name).display().to_string()
    }

    fn into_vec(self) -> Vec<Mount> {
        self.mounts
    }
}
