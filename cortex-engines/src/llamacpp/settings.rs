//! [`LlamaCppSettings`]: every llama-server option Cortex manages, with its defaults.

use std::path::PathBuf;

use cortex_core::GpuRequest;
use serde::{Deserialize, Serialize};

/// Settings of a llama.cpp model, as written under `[settings]` of a model in a config file.
///
/// Defaults follow the source documents, spelled as the pinned llama-server (build 11434) spells
/// them: context 8192, every layer on the GPU, batch 512, threads = cores − 2, flash attention on,
/// NUMA `isolate`, continuous batching, `--metrics` and `--slots` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
// The switches mirror llama-server's own on/off flags one to one.
#[allow(clippy::struct_excessive_bools)]
pub struct LlamaCppSettings {
    /// The `llama-server` executable for process targets.
    pub program: PathBuf,
    /// The image for container targets.
    pub image: String,
    /// For a directory source: the GGUF file to load, by name.
    pub model_file: Option<String>,
    /// For a directory source: the quantization to pick (`Q4_K_M`), matched in file names.
    pub quant: Option<String>,
    /// `-c`: context size in tokens (0 = the model's own).
    pub ctx_size: u32,
    /// `-ngl`: layers on the GPU.
    pub gpu_layers: GpuLayers,
    /// `-ts`: fraction of the model per GPU.
    pub tensor_split: Vec<f32>,
    /// `-sm`: how to split across GPUs.
    pub split_mode: Option<String>,
    /// `-mg`: the main GPU.
    pub main_gpu: Option<u32>,
    /// The GPUs a container gets (all by default); process targets see the host's.
    pub gpus: Option<GpuRequest>,
    /// A network a container joins (a Docker network; its name is its alias there), besides its
    /// port published on 127.0.0.1 (the plan's `network`).
    pub network: Option<String>,
    /// `-b`: logical batch size.
    pub batch_size: u32,
    /// `-ub`: physical batch size.
    pub ubatch_size: Option<u32>,
    /// `-t`: threads; cores − 2 (at least 1) when not given.
    pub threads: Option<u32>,
    /// `-fa`: flash attention.
    pub flash_attn: OnOffAuto,
    /// `-lm`: load mode (`auto`, `none`, `mmap`, `mlock`, `mmap+mlock`, `dio`); replaces the
    /// deprecated `--mlock` and `--no-mmap`.
    pub load_mode: Option<String>,
    /// `--numa`: `distribute`, `isolate` or `numactl`.
    pub numa: Option<String>,
    /// `--rope-scaling`: `none`, `linear` or `yarn`.
    pub rope_scaling: Option<String>,
    /// `--rope-freq-base`.
    pub rope_freq_base: Option<f64>,
    /// `--rope-freq-scale`.
    pub rope_freq_scale: Option<f64>,
    /// `-ctk`: K cache type.
    pub cache_type_k: Option<String>,
    /// `-ctv`: V cache type (quantized types need flash attention).
    pub cache_type_v: Option<String>,
    /// `-np`: server slots; auto (4, unified KV) when not given.
    pub parallel: Option<u32>,
    /// `-kvu` / `-no-kvu`: one KV cache shared by all slots.
    pub kv_unified: Option<bool>,
    /// `--swa-full`: full-size sliding-window cache.
    pub swa_full: bool,
    /// `-cb` / `-nocb`: continuous batching.
    pub cont_batching: bool,
    /// `--metrics`: the Prometheus endpoint.
    pub metrics: bool,
    /// `--slots` / `--no-slots`: the slots endpoint.
    pub slots: bool,
    /// `-lv`: log verbosity (4 prints the memory breakdown).
    pub verbosity: Option<u32>,
    /// `--log-timestamps`.
    pub log_timestamps: bool,
    /// `--warmup` / `--no-warmup`.
    pub warmup: bool,
    /// `--check-tensors`.
    pub check_tensors: bool,
    /// `--jinja` / `--no-jinja`; unset, llama-server's default (Jinja on) unless `chat_template`
    /// is a built-in name, which the plan pairs with `--no-jinja`.
    pub jinja: Option<bool>,
    /// `--chat-template`: one of llama-server's built-in template names
    /// ([`BUILTIN_CHAT_TEMPLATES`](super::BUILTIN_CHAT_TEMPLATES), applied without Jinja) or a Jinja
    /// template. Needed when the GGUF carries no `tokenizer.chat_template`: llama-server then falls
    /// back to ChatML, and the plan warns when the architecture speaks something else.
    pub chat_template: Option<String>,
    /// `--chat-template-file`.
    pub chat_template_file: Option<PathBuf>,
    /// `--lora` / `--lora-scaled`: adapters with optional scales.
    pub lora: Vec<Lora>,
    /// `--grammar-file`.
    pub grammar_file: Option<PathBuf>,
    /// `--pooling` for embedding models.
    pub pooling: Option<String>,
    /// A system prompt: llama-server b11434 has no option for one (refused with a reason).
    pub system_prompt: Option<String>,
    /// Speculative decoding with a draft model.
    pub draft: Option<Draft>,
    /// Request defaults: `--temp`, `--top-p`, `--top-k`, `-n`, `--seed`.
    pub defaults: RequestDefaults,
    /// `-to`: server read/write timeout in seconds.
    pub timeout: Option<u32>,
    /// A key the engine requires (the gateway sends it upstream), given to llama-server in its
    /// environment (`LLAMA_API_KEY`), never on its command line.
    pub api_key: Option<String>,
    /// A Hugging Face token, for a hub source that needs one, given to llama-server in its
    /// environment (`HF_TOKEN`), never on its command line.
    pub hf_token: Option<String>,
}

impl Default for LlamaCppSettings {
    fn default() -> Self {
        Self {
            program: "llama-server".into(),
            image: "cortex/llama-server:b11434".into(),
            model_file: None,
            quant: None,
            ctx_size: 8192,
            gpu_layers: GpuLayers::All,
            tensor_split: Vec::new(),
            split_mode: None,
            main_gpu: None,
            gpus: None,
            network: None,
            batch_size: 512,
            ubatch_size: None,
            threads: None,
            flash_attn: OnOffAuto::On,
            load_mode: None,
            numa: Some("isolate".into()),
            rope_scaling: None,
            rope_freq_base: None,
            rope_freq_scale: None,
            cache_type_k: None,
            cache_type_v: None,
            parallel: None,
            kv_unified: None,
            swa_full: false,
            cont_batching: true,
            metrics: true,
            slots: true,
            verbosity: None,
            log_timestamps: false,
            warmup: true,
            check_tensors: false,
            jinja: None,
            chat_template: None,
            chat_template_file: None,
            lora: Vec::new(),
            grammar_file: None,
            pooling: None,
            system_prompt: None,
            draft: None,
            defaults: RequestDefaults::default(),
            timeout: None,
            api_key: None,
            hf_token: None,
        }
    }
}

/// `-ngl`: how many layers go to the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", untagged)]
pub enum GpuLayers {
    /// A number of layers.
    Count(u32),
    /// `auto` or `all`.
    Named(NamedLayers),
}

/// The named `-ngl` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedLayers {
    /// As many as fit (`--fit`).
    Auto,
    /// Every layer.
    All,
}

#[allow(non_upper_case_globals)]
impl GpuLayers {
    /// Every layer.
    pub const All: Self = Self::Named(NamedLayers::All);
    /// As many as fit.
    pub const Auto: Self = Self::Named(NamedLayers::Auto);

    pub(crate) fn arg(self) -> String {
        match self {
            Self::Count(n) => n.to_string(),
            Self::Named(NamedLayers::All) => "all".into(),
            Self::Named(NamedLayers::Auto) => "auto".into(),
        }
    }
}

/// `on`, `off` or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOffAuto {
    /// `on`
    On,
    /// `off`
    Off,
    /// `auto`
    Auto,
}

impl OnOffAuto {
    pub(crate) fn arg(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Auto => "auto",
        }
    }
}

/// A `LoRA` adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Lora {
    /// The adapter file.
    pub path: PathBuf,
    /// Its scale; 1 when not given.
    #[serde(default)]
    pub scale: Option<f32>,
}

/// A draft model for speculative decoding (`--spec-type draft-simple`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Draft {
    /// `-md`: the draft model file.
    pub model: PathBuf,
    /// `--spec-draft-n-max` (the removed `--draft-max`).
    #[serde(default)]
    pub max: Option<u32>,
    /// `--spec-draft-n-min` (the removed `--draft-min`).
    #[serde(default)]
    pub min: Option<u32>,
    /// `-ngld`: the draft model's GPU layers.
    #[serde(default)]
    pub gpu_layers: Option<GpuLayers>,
}

/// Defaults for requests that do not set them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RequestDefaults {
    /// `--temp`.
    pub temperature: Option<f32>,
    /// `--top-p`.
    pub top_p: Option<f32>,
    /// `--top-k`.
    pub top_k: Option<u32>,
    /// `-n`: tokens to predict (-1 = until the end).
    pub max_tokens: Option<i32>,
    /// `--seed`.
    pub seed: Option<i64>,
}
