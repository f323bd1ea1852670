//! The memory estimator: what llama.cpp's `llama-server` (pinned build 11434) will allocate on
//! each GPU and on the host, for a model and a set of llama-server options.
//!
//! [`estimate`] follows llama.cpp's own rules, buffer by buffer, as the pinned source applies
//! them: context padding to 256, the sliding-window cache size
//! (`min(n_ctx_seq, n_swa × seqs + n_ubatch)` padded to 256, or full with `--swa-full`), auto
//! parallel (4 slots, unified KV), per-stream caches without `--kv-unified`, K-only caches for
//! multi-head latent attention, recurrent state in f32 per sequence, layer placement for `-ngl`
//! (the last N layers, the output layer first), layer splits across GPUs (proportional to
//! `--tensor-split` or free memory), the token embeddings always on the host, a tied output
//! projection duplicated onto the output layer's device, the host mapping of an mmapped model
//! (the span of its tensors in the file), CPU weight repacking (AVX2/AVX-512 rules), the output
//! buffer (`n_vocab × max(n_outputs, n_seq)` floats), and llama-server's refusals (quantized V
//! without flash attention, cache block sizes that do not divide the head size).
//!
//! The compute buffer is the one figure llama.cpp only knows after building the graph and running
//! ggml's allocator; here it is a formula (attention masks, which are exact, plus the activation
//! working set per token of the micro-batch), calibrated against the real llama-server on the CPU
//! backend and documented with its measured error in `docs/estimator.md`.
//!
//! Written by hand: no crate models llama.cpp's allocations.
//!
//! ```
//! use cortex_gguf::estimate::{estimate, LlamaParams, Model};
//! use cortex_gguf::{GgmlType, Gguf, GgufBuilder, Gpu, OwnedValue};
//!
//! // A tiny llama-shaped model (real files come from `GgufFile::open`).
//! let mut b = GgufBuilder::new()
//!     .kv("general.architecture", "llama")
//!     .kv("llama.block_count", 2u32)
//!     .kv("llama.context_length", 4096u32)
//!     .kv("llama.embedding_length", 256u32)
//!     .kv("llama.feed_forward_length", 512u32)
//!     .kv("llama.attention.head_count", 4u32)
//!     .kv("llama.attention.head_count_kv", 2u32)
//!     .kv("tokenizer.ggml.tokens", OwnedValue::strings(vec!["t"; 1000]))
//!     .tensor("token_embd.weight", [256, 1000], GgmlType::F16);
//! for il in 0..2 {
//!     b = b.tensor(format!("blk.{il}.attn_q.weight"), [256, 256], GgmlType::F16);
//! }
//! let bytes = b.build();
//! let model = Model::from_gguf(&Gguf::parse(&bytes)?)?;
//!
//! let params = LlamaParams { ctx_size: 4096, ..LlamaParams::default() };
//! let gpus = [Gpu::new(0, "NVIDIA L4", 24 << 30)];
//! let est = estimate(&model, &params, &gpus)?;
//! // 4096 cells × 2 layers × (128 K + 128 V values) × 2 bytes (f16).
//! assert_eq!(est.device(0).unwrap().kv(), 4096 * 2 * 256 * 2);
//! assert!(est.fits());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod args;
mod compute;
mod context;
mod inverse;
mod kv;
mod model;
mod output;
mod placement;

use std::fmt;

pub use args::{LlamaArgs, parse_llama_args};
pub use inverse::{Suggestion, max_context, max_gpu_layers, split_by_free_memory, suggestions};
pub use model::{LayerShape, MemoryKind, Model, Recurrent, Role, Tensor};

use crate::inventory::GpuBackend;
use crate::{GgmlType, Gpu};

const MIB: u64 = 1 << 20;

/// Why an estimate could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EstimateError {
    /// The model's metadata lacks a key llama.cpp requires, or has an implausible value.
    Metadata {
        /// The key (`llama.block_count`) or tensor name.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An option is out of range.
    Param {
        /// The llama-server flag (`-np`).
        flag: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// llama-server itself refuses this combination; `reason` is its own message.
    Refused {
        /// llama-server's message, as it logs it.
        reason: String,
    },
    /// A byte count would not fit in 64 bits. Inputs are bounded before anything is computed
    /// (each with its own [`Metadata`](Self::Metadata) or [`Param`](Self::Param) error); this
    /// is the guard behind the bounds.
    Overflow {
        /// What was being computed (`the KV cache`).
        what: &'static str,
    },
}

impl EstimateError {
    fn metadata(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Metadata {
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn param(flag: &'static str, problem: impl Into<String>) -> Self {
        Self::Param {
            flag,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for EstimateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Metadata { key, problem } => write!(f, "model metadata `{key}`: {problem}"),
            Self::Param { flag, problem } => write!(f, "option {flag}: {problem}"),
            Self::Refused { reason } => write!(f, "llama-server refuses these options: {reason}"),
            Self::Overflow { what } => {
                write!(
                    f,
                    "{what} does not fit in 64 bits: the model or the options are implausible"
                )
            }
        }
    }
}

impl std::error::Error for EstimateError {}

/// `-np`: server slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parallel {
    /// `-np -1` (the default): 4 slots with a unified KV cache.
    #[default]
    Auto,
    /// `-np N`.
    Slots(u32),
}

/// `-fa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlashAttn {
    /// `auto` (the default): on where the backend supports it (every backend the estimator
    /// models does for the supported head sizes).
    #[default]
    Auto,
    /// `on`.
    On,
    /// `off`.
    Off,
}

/// `-ngl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuLayers {
    /// `auto` (the default): as many as fit, leaving `fit_target` free on each GPU (what
    /// llama-server's `--fit` does for an unset `-ngl`).
    #[default]
    Auto,
    /// `all`.
    All,
    /// A number of layers; the output layer counts as one (`-ngl 1` offloads only it).
    Count(u32),
}

/// `-sm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitMode {
    /// `none`: only the main GPU.
    None,
    /// `layer` (the default): whole layers, with their KV cache, per GPU.
    #[default]
    Layer,
    /// `row`: weights split by rows across GPUs; KV and compute on the main GPU.
    Row,
}

/// The host CPU, for weight repacking (`--repack`, on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Cpu {
    /// AVX2: `Q4_0`, `Q4_K`, `IQ4_NL` and MXFP4 matrices with rows in multiples of 8 are repacked.
    pub avx2: bool,
    /// AVX-512 (F): `Q2_K` matrices too.
    pub avx512: bool,
}

// === impl Cpu ===

impl Cpu {
    /// A CPU with the given features.
    pub fn new(avx2: bool, avx512: bool) -> Self {
        Self { avx2, avx512 }
    }

    /// This machine's CPU.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            Self {
                avx2: std::arch::is_x86_feature_detected!("avx2"),
                avx512: std::arch::is_x86_feature_detected!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Self::default()
        }
    }

    /// Whether ggml's CPU backend repacks this weight (`ggml_repack_get_optimal_repack_type`,
    /// x86 rules).
    fn repacks(self, t: &Tensor) -> bool {
        let rows8 = t.dims.get(1).is_some_and(|n| n % 8 == 0);
        match t.ggml_type.0 {
            2 | 12 | 20 | 39 => self.avx2 && rows8, // Q4_0, Q4_K, IQ4_NL, MXFP4
            10 => self.avx512 && rows8,             // Q2_K
            _ => false,
        }
    }
}

/// The llama-server options that change memory, as llama-server spells and defaults them.
///
/// Not `#[non_exhaustive]`, so it can be written with `..LlamaParams::default()`; a new llama.cpp
/// option becomes a new field in a minor release of this crate.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "each is one llama-server on/off flag"
)]
pub struct LlamaParams {
    /// `-c`: context size; 0 = the model's training context.
    pub ctx_size: u32,
    /// `-np`.
    pub parallel: Parallel,
    /// `--kv-unified` / `--no-kv-unified`; `None` = llama-server's default (on with auto
    /// parallel, which forces it on regardless).
    pub kv_unified: Option<bool>,
    /// `-ctk`.
    pub cache_type_k: GgmlType,
    /// `-ctv`.
    pub cache_type_v: GgmlType,
    /// `-fa`.
    pub flash_attn: FlashAttn,
    /// `-ngl`.
    pub gpu_layers: GpuLayers,
    /// `-sm`.
    pub split_mode: SplitMode,
    /// `-ts`: proportions per GPU; empty = proportional to free memory.
    pub tensor_split: Vec<f32>,
    /// `-mg`.
    pub main_gpu: usize,
    /// `-b`.
    pub batch: u32,
    /// `-ub`.
    pub ubatch: u32,
    /// `--swa-full`.
    pub swa_full: bool,
    /// `--mmap` (default) / `--no-mmap`.
    pub mmap: bool,
    /// `-kvo` (default) / `-nkvo`: KV cache on the layers' GPUs, or on the host.
    pub kv_offload: bool,
    /// `--repack` (default) / `-nr`.
    pub repack: bool,
    /// `--op-offload` (default) / `--no-op-offload`: a CUDA GPU runs the host's weight
    /// operations on batches of 32 tokens or more, copying each weight in.
    pub op_offload: bool,
    /// The host CPU (for repacking).
    pub cpu: Cpu,
    /// `-fitt`: memory `-ngl auto` leaves free on each GPU, in bytes (default 1024 MiB).
    pub fit_target: u64,
    /// `-md` with `-ngld` and `--spec-draft-n-max`: a draft model.
    pub draft: Option<Draft>,
    /// `-mm`: a multimodal projector (its weights go to the first GPU, or the host).
    pub mmproj: Option<Model>,
    /// `--lora`: adapters (each tensor on the device of the layer it adapts).
    pub lora: Vec<Model>,
    /// `-ot`, `--cpu-moe`, `--n-cpu-moe`, `--n-cpu-ffn`, in the order given: a tensor whose name
    /// matches one is kept where it says (the first match wins).
    pub overrides: Vec<TensorOverride>,
}

/// One tensor placement override (`-ot PATTERN=BUFFER`): tensors whose name the pattern is found
/// in (`std::regex_search`, `src/llama-model-loader.cpp`) are kept on `device` instead of their
/// layer's. To the host, a tensor still goes where the host would put it (repacked when
/// eligible, mapped otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TensorOverride {
    /// A regular expression, searched in each tensor's name.
    pub pattern: String,
    /// Where matching tensors go: `CPU` is the host, `CUDA<i>` the i-th GPU given.
    pub device: Device,
}

impl TensorOverride {
    /// Tensors matching `pattern` kept on `device`.
    pub fn new(pattern: impl Into<String>, device: Device) -> Self {
        Self {
            pattern: pattern.into(),
            device,
        }
    }
}

/// llama.cpp's pattern for expert weights (`LLM_FFN_EXPS_REGEX` in common/common.h), what
/// `--cpu-moe` and `--n-cpu-moe` keep on the host.
pub const FFN_EXPS_REGEX: &str = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps";
/// llama.cpp's pattern for dense feed-forward weights (`LLM_FFN_DENSE_REGEX`), `--n-cpu-ffn`'s.
pub const FFN_DENSE_REGEX: &str = r"\.ffn_(up|down|gate)\.";

/// A draft model for speculative decoding.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Draft {
    /// The draft model.
    pub model: Model,
    /// `-ngld`.
    pub gpu_layers: GpuLayers,
    /// `--spec-draft-n-max` (default 3): tokens drafted per step, which widens the target's
    /// output buffer.
    pub n_max: u32,
}

impl Draft {
    /// A draft model with llama-server's defaults (`-ngld auto`, 3 tokens).
    pub fn new(model: Model) -> Self {
        Self {
            model,
            gpu_layers: GpuLayers::Auto,
            n_max: 3,
        }
    }
}

impl Default for LlamaParams {
    fn default() -> Self {
        Self {
            ctx_size: 0,
            parallel: Parallel::Auto,
            kv_unified: None,
            cache_type_k: GgmlType::F16,
            cache_type_v: GgmlType::F16,
            flash_attn: FlashAttn::Auto,
            gpu_layers: GpuLayers::Auto,
            split_mode: SplitMode::Layer,
            tensor_split: Vec::new(),
            main_gpu: 0,
            batch: 2048,
            ubatch: 512,
            swa_full: false,
            mmap: true,
            kv_offload: true,
            repack: true,
            op_offload: true,
            cpu: Cpu::detect(),
            fit_target: 1024 * MIB,
            draft: None,
            mmproj: None,
            lora: Vec::new(),
            overrides: Vec::new(),
        }
    }
}

/// Where a buffer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Device {
    /// Host memory.
    Host,
    /// A GPU, by its position in the list given to [`estimate`].
    Gpu(usize),
}

/// What a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BufferKind {
    /// Model weights.
    Weights,
    /// KV cache of full-attention layers.
    KvFull,
    /// KV cache of sliding-window layers.
    KvSwa,
    /// Recurrent state (`RS buffer`).
    Recurrent,
    /// The output (logits) buffer.
    Output,
    /// The compute (graph) buffer.
    Compute,
}

/// One buffer llama.cpp allocates, as it names it in its log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Buffer {
    /// Which device's memory.
    pub device: Device,
    /// What it holds.
    pub kind: BufferKind,
    /// llama.cpp's buffer type name: `CPU_Mapped`, `CPU_REPACK`, `CUDA0`, `CUDA_Host`, `CPU`.
    pub name: String,
    /// Which model: `model`, `draft`, `mmproj`, `lora`.
    pub part: &'static str,
    /// Bytes.
    pub bytes: u64,
}

/// How far a buffer's size can be trusted: what a user should keep as margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Basis {
    /// Computed as llama.cpp allocates it and measured equal to the real llama-server b11434
    /// (to 0.01 MiB): weights, KV cache, recurrent state and output buffers in host memory and
    /// on RPC devices.
    Exact,
    /// Computed by the same rules, derived from the source for a GPU backend (CUDA's 128-byte
    /// alignment and padding of quantized rows, layer placement) and checked against published
    /// logs of real GPU runs, not measured here: weights, KV and output buffers on a GPU.
    Derived,
    /// An approximation of what llama.cpp measures when it reserves its graph: compute buffers
    /// (their inputs exact, the working sets fitted). Within about 1% (Gemma) to 8% (other
    /// architectures) of the real llama-server on the CPU and with layers offloaded to RPC
    /// devices; CUDA's own rules (op offload) derived, not measured (docs/estimator.md gives the
    /// measured errors).
    Approximate,
}

impl Basis {
    /// As the JSON document writes it: `exact`, `derived`, `approximate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Derived => "derived",
            Self::Approximate => "approximate",
        }
    }
}

impl Buffer {
    /// How far this buffer's size can be trusted.
    pub fn basis(&self) -> Basis {
        match (self.kind, self.device) {
            (BufferKind::Compute, _) => Basis::Approximate,
            (_, Device::Host) => Basis::Exact,
            // RPC devices (named `RPC<n>[host:port]` by `Devices::name`) were measured.
            (_, Device::Gpu(_)) if self.name.starts_with("RPC") => Basis::Exact,
            (_, Device::Gpu(_)) => Basis::Derived,
        }
    }
}

/// Totals for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeviceTotals {
    /// Weights.
    pub weights: u64,
    /// KV cache, full attention.
    pub kv_full: u64,
    /// KV cache, sliding window.
    pub kv_swa: u64,
    /// Recurrent state.
    pub recurrent: u64,
    /// Output buffer.
    pub output: u64,
    /// Compute buffer.
    pub compute: u64,
}

impl DeviceTotals {
    /// All context memory: both KV kinds and recurrent state.
    pub fn kv(&self) -> u64 {
        self.kv_full
            .saturating_add(self.kv_swa)
            .saturating_add(self.recurrent)
    }

    /// Everything.
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv())
            .saturating_add(self.output)
            .saturating_add(self.compute)
    }
}

/// What the context looks like after llama.cpp's adjustments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Context {
    /// `n_ctx`, padded to 256.
    pub n_ctx: u32,
    /// Context per sequence.
    pub n_ctx_seq: u32,
    /// Sequences (slots).
    pub n_seq: u32,
    /// Unified KV cache.
    pub kv_unified: bool,
    /// Cells of the sliding-window cache per stream (0 without SWA layers).
    pub swa_cells: u32,
    /// Flash attention on.
    pub flash_attn: bool,
    /// `n_batch` after clamping to the context.
    pub n_batch: u32,
    /// `n_ubatch`.
    pub n_ubatch: u32,
    /// Output rows reserved (`n_outputs_max`).
    pub n_outputs: u32,
    /// Layers offloaded (`-ngl` as resolved; the output layer counts as one).
    pub gpu_layers: u32,
}

/// The estimate: every buffer, per device totals, and where each layer went.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Estimate {
    /// The resolved context.
    pub context: Context,
    /// Every buffer llama.cpp would allocate.
    pub buffers: Vec<Buffer>,
    /// Device of each repeating layer, in order.
    pub layers: Vec<Device>,
    /// Device of the output layer.
    pub output_layer: Device,
    /// The GPUs the estimate was made for (capacity checks).
    pub gpus: Vec<Gpu>,
    /// Things the user should know (approximations that apply, adjustments made).
    pub notes: Vec<String>,
}

// === impl Estimate ===

impl Estimate {
    /// The name llama-server gives `device`: `CPU` for the host, `CUDA0`, `CUDA1`, … for CUDA
    /// GPUs (counted on their own), `RPC0[host:port]` for an RPC server's device.
    pub fn device_name(&self, device: Device) -> String {
        Devices { gpus: &self.gpus }.name(device)
    }

    /// Totals for a device.
    pub fn totals(&self, device: Device) -> DeviceTotals {
        let mut t = DeviceTotals::default();
        for b in self.buffers.iter().filter(|b| b.device == device) {
            let slot = match b.kind {
                BufferKind::Weights => &mut t.weights,
                BufferKind::KvFull => &mut t.kv_full,
                BufferKind::KvSwa => &mut t.kv_swa,
                BufferKind::Recurrent => &mut t.recurrent,
                BufferKind::Output => &mut t.output,
                BufferKind::Compute => &mut t.compute,
            };
            *slot = slot.saturating_add(b.bytes);
        }
        t
    }

    /// The host's totals.
    pub fn host(&self) -> DeviceTotals {
        self.totals(Device::Host)
    }

    /// GPU `i`'s totals, if the estimate has that GPU.
    pub fn device(&self, i: usize) -> Option<DeviceTotals> {
        (i < self.gpus.len()).then(|| self.totals(Device::Gpu(i)))
    }

    /// Everything on every device.
    pub fn total(&self) -> u64 {
        self.buffers
            .iter()
            .fold(0_u64, |all, b| all.saturating_add(b.bytes))
    }

    /// Bytes short on each GPU that would not hold its share (free memory, or total when the
    /// inventory has no free figure), as `(gpu position, bytes short)`.
    pub fn shortfalls(&self) -> Vec<(usize, u64)> {
        self.gpus
            .iter()
            .enumerate()
            .filter_map(|(i, g)| {
                let need = self.totals(Device::Gpu(i)).total();
                (need > g.free()).then(|| (i, need.saturating_sub(g.free())))
            })
            .collect()
    }

    /// Whether every GPU holds its share.
    pub fn fits(&self) -> bool {
        self.shortfalls().is_empty()
    }
}

/// Estimates what llama-server allocates for `model` with `params` on `gpus` (in the order
/// llama.cpp enumerates them: `CUDA0` first) and the host.
///
/// # Errors
///
/// [`EstimateError::Param`] for an option out of range, [`EstimateError::Refused`] where
/// llama-server refuses the combination (with its message), [`EstimateError::Metadata`] for a
/// model llama.cpp could not load.
pub fn estimate(
    model: &Model,
    params: &LlamaParams,
    gpus: &[Gpu],
) -> Result<Estimate, EstimateError> {
    let ngl = resolve_gpu_layers(model, params, gpus)?;
    let mut est = estimate_with(model, params, gpus, ngl, "model")?;

    if let Some(draft) = &params.draft {
        let dparams = LlamaParams {
            gpu_layers: draft.gpu_layers,
            draft: None,
            mmproj: None,
            lora: Vec::new(),
            overrides: Vec::new(),
            ..params.clone()
        };
        let dngl = resolve_gpu_layers(&draft.model, &dparams, gpus)?;
        let d = estimate_with(&draft.model, &dparams, gpus, dngl, "draft")?;
        est.buffers.extend(d.buffers);
    }
    if let Some(mmproj) = &params.mmproj {
        let device = if gpus.is_empty() {
            Device::Host
        } else {
            Device::Gpu(params.main_gpu.min(gpus.len().saturating_sub(1)))
        };
        let devs = Devices { gpus };
        let bytes = mmproj
            .tensors
            .iter()
            .fold(0_u64, |all, t| all.saturating_add(devs.alloc(t, device)));
        est.buffers.push(Buffer {
            device,
            kind: BufferKind::Weights,
            name: devs.name(device),
            part: "mmproj",
            bytes,
        });
        est.notes.push(
            "the projector's own compute buffer (image encoding) is not estimated".to_owned(),
        );
    }
    for adapter in &params.lora {
        let mut per: Vec<(Device, u64)> = Vec::new();
        for t in &adapter.tensors {
            let device = match lora_layer(&t.name) {
                Some(il) => est.layers.get(il as usize).copied().unwrap_or(Device::Host),
                None => est.output_layer,
            };
            let bytes = Devices { gpus }.alloc(t, device);
            match per.iter_mut().find(|(d, _)| *d == device) {
                Some((_, b)) => add_to(b, bytes, "a LoRA adapter's weights")?,
                None => per.push((device, bytes)),
            }
        }
        for (device, bytes) in per {
            est.buffers.push(Buffer {
                device,
                kind: BufferKind::Weights,
                name: Devices { gpus }.name(device),
                part: "lora",
                bytes,
            });
        }
    }
    Ok(est)
}

/// The layer a `LoRA` tensor adapts (`blk.3.attn_q.weight.lora_a`).
fn lora_layer(name: &str) -> Option<u32> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

impl LlamaParams {
    fn validate(&self, model: &Model) -> Result<(), EstimateError> {
        if let Parallel::Slots(n) = self.parallel {
            if n == 0 || n > 256 {
                return Err(EstimateError::param(
                    "-np",
                    format!("{n} slots: must be 1..=256"),
                ));
            }
        }
        if self.ctx_size > model::limits::CTX {
            return Err(EstimateError::param(
                "-c",
                format!("{} tokens is implausible", self.ctx_size),
            ));
        }
        if self.ctx_size == 0 && model.n_ctx_train == 0 {
            return Err(EstimateError::param(
                "-c",
                "0 takes the model's training context, and the model does not state one",
            ));
        }
        if self.batch == 0 || self.batch > model::limits::CTX {
            return Err(EstimateError::param(
                "-b",
                format!("{}: must be 1..=2^24", self.batch),
            ));
        }
        if self.ubatch == 0 || self.ubatch > model::limits::CTX {
            return Err(EstimateError::param(
                "-ub",
                format!("{}: must be 1..=2^24", self.ubatch),
            ));
        }
        for (flag, ty) in [("-ctk", self.cache_type_k), ("-ctv", self.cache_type_v)] {
            // The types llama-server accepts for the cache.
            if !matches!(ty.0, 0 | 1 | 30 | 8 | 2 | 3 | 20 | 6 | 7) {
                return Err(EstimateError::param(
                    flag,
                    format!(
                        "{}: allowed values are f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1",
                        ty.name().unwrap_or("unknown type")
                    ),
                ));
            }
        }
        if let Some(draft) = &self.draft {
            if draft.n_max > model::limits::CTX {
                return Err(EstimateError::param(
                    "--spec-draft-n-max",
                    format!("{} draft tokens: must be at most 2^24", draft.n_max),
                ));
            }
        }
        if !self.tensor_split.iter().all(|x| x.is_finite() && *x >= 0.0) {
            return Err(EstimateError::param(
                "-ts",
                "proportions must be finite and not negative",
            ));
        }
        Ok(())
    }

    fn flash_attn_on(&self, model: &Model) -> Result<bool, EstimateError> {
        let quantized = |t: GgmlType| t.block().is_some_and(|b| b.elements > 1);
        if model.mla && self.cache_type_k != self.cache_type_v {
            return Err(EstimateError::Refused {
                reason: format!(
                    "model does not support different K ({}) and V ({}) cache types",
                    type_name(self.cache_type_k),
                    type_name(self.cache_type_v)
                ),
            });
        }
        let fa = match self.flash_attn {
            FlashAttn::Off if quantized(self.cache_type_v) => {
                return Err(EstimateError::Refused {
                    reason: "quantized V cache requires flash_attn to be enabled".to_owned(),
                });
            }
            FlashAttn::Off => false,
            FlashAttn::On | FlashAttn::Auto => true,
        };
        if fa {
            for (which, ty) in [("K", self.cache_type_k), ("V", self.cache_type_v)] {
                let Some(block) = ty.block().filter(|b| b.elements > 1) else {
                    continue;
                };
                for l in &model.layers {
                    let head = if which == "K" { l.head_k } else { l.head_v };
                    if u64::from(head).checked_rem(block.elements) != Some(0) {
                        return Err(EstimateError::Refused {
                            reason: format!(
                                "{which} cache type {} with block size {} does not divide n_embd_head_{}={head}",
                                type_name(ty),
                                block.elements,
                                which.to_ascii_lowercase()
                            ),
                        });
                    }
                }
            }
        }
        Ok(fa)
    }
}

fn type_name(t: GgmlType) -> String {
    t.name()
        .map_or_else(|| format!("type {}", t.0), str::to_ascii_lowercase)
}

/// `-ngl` as a number of layers (`n_layer + 1` = everything, the output layer included).
fn resolve_gpu_layers(
    model: &Model,
    params: &LlamaParams,
    gpus: &[Gpu],
) -> Result<u32, EstimateError> {
    let all = model.n_layer.saturating_add(1);
    Ok(match params.gpu_layers {
        _ if gpus.is_empty() => 0,
        GpuLayers::All => all,
        GpuLayers::Count(n) => n.min(all),
        // What llama-server's --fit does for an unset -ngl: the most layers that leave
        // `fit_target` free on every GPU.
        GpuLayers::Auto => inverse::max_gpu_layers(model, params, gpus, params.fit_target)?,
    })
}

/// The devices layers are split over, with cumulative split points (llama.cpp's `splits`).
fn layer_devices(params: &LlamaParams, gpus: &[Gpu]) -> Vec<(usize, f64)> {
    if gpus.is_empty() {
        return Vec::new();
    }
    let main = params.main_gpu.min(gpus.len().saturating_sub(1));
    // `-sm none` uses the main GPU only; `-sm row` spreads each matrix over all GPUs but keeps
    // the layer's home (KV, compute) on the main GPU.
    if matches!(params.split_mode, SplitMode::None | SplitMode::Row) {
        return vec![(main, 1.0)];
    }
    let weights: Vec<f64> = if params.tensor_split.iter().any(|x| *x > 0.0) {
        (0..gpus.len())
            .map(|i| f64::from(params.tensor_split.get(i).copied().unwrap_or(0.0)))
            .collect()
    } else {
        #[allow(clippy::cast_precision_loss, reason = "proportions only")]
        gpus.iter().map(|g| g.free() as f64).collect()
    };
    let sum: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            acc += w;
            (i, if sum > 0.0 { acc / sum } else { 1.0 })
        })
        .collect()
}

/// The estimate for a resolved `-ngl`.
#[allow(
    clippy::too_many_lines,
    clippy::similar_names,
    reason = "one pass over llama.cpp's allocation order, with its names"
)]
fn estimate_with(
    model: &Model,
    params: &LlamaParams,
    gpus: &[Gpu],
    ngl: u32,
    part: &'static str,
) -> Result<Estimate, EstimateError> {
    params.validate(model)?;
    let fa = params.flash_attn_on(model)?;
    let mut notes = Vec::new();
    let cx = context::resolve(model, params, fa, &mut notes)?;
    let (layers, output_layer, act) = placement::layers(model, params, gpus, ngl);
    let mut buffers = Vec::new();
    placement::weights(
        model,
        params,
        gpus,
        &layers,
        output_layer,
        part,
        &mut buffers,
        &mut notes,
    )?;
    let devs = Devices { gpus };
    kv::buffers(model, params, &cx, &layers, devs, part, &mut buffers)?;
    output::buffer(model, &cx, output_layer, devs, part, &mut buffers)?;
    compute::buffers(
        model,
        params,
        &cx,
        &layers,
        output_layer,
        devs,
        part,
        &mut buffers,
        &mut notes,
    )?;
    Ok(Estimate {
        context: Context {
            n_ctx: cx.n_ctx,
            n_ctx_seq: cx.n_ctx_seq,
            n_seq: cx.n_seq,
            kv_unified: cx.kv_unified,
            swa_cells: cx.swa_cells,
            flash_attn: fa,
            n_batch: cx.n_batch,
            n_ubatch: cx.n_ubatch,
            n_outputs: cx.n_outputs,
            gpu_layers: act,
        },
        buffers,
        layers,
        output_layer,
        gpus: gpus.to_vec(),
        notes,
    })
}

/// The overrides' patterns compiled, each with its device; a GPU the estimate was not given is
/// an unknown buffer type, as llama-server says.
fn compile_overrides(
    overrides: &[TensorOverride],
    gpus: usize,
) -> Result<Vec<(regex::Regex, Device)>, EstimateError> {
    overrides
        .iter()
        .map(|o| {
            if let Device::Gpu(i) = o.device {
                if i >= gpus {
                    return Err(EstimateError::param(
                        "-ot",
                        format!("unknown buffer type CUDA{i}: the estimate has {gpus} GPU(s)"),
                    ));
                }
            }
            regex::Regex::new(&o.pattern)
                .map(|re| (re, o.device))
                .map_err(|e| {
                    EstimateError::param("-ot", format!("`{}` is not a pattern: {e}", o.pattern))
                })
        })
        .collect()
}

/// The host mapping of mmapped weights: per file, from the first tensor's data to the end of the
/// last one's (`llama_model_loader::get_mapping_range`).
fn mapped_span(tensors: &[&Tensor]) -> u64 {
    let mut shards: Vec<(usize, u64, u64)> = Vec::new();
    for t in tensors {
        let end = t.offset.saturating_add(t.bytes);
        match shards.iter_mut().find(|(s, ..)| *s == t.shard) {
            Some((_, lo, hi)) => {
                *lo = (*lo).min(t.offset);
                *hi = (*hi).max(end);
            }
            None => shards.push((t.shard, t.offset, end)),
        }
    }
    shards.iter().fold(0_u64, |all, (_, lo, hi)| {
        all.saturating_add(hi.saturating_sub(*lo))
    })
}

/// The devices of one estimate: the host and the GPUs given, with the buffer names and the
/// tensor layout of each one's ggml backend.
#[derive(Debug, Clone, Copy)]
struct Devices<'g> {
    gpus: &'g [Gpu],
}

impl Devices<'_> {
    /// The name llama-server prints for `device`'s buffers: `CPU`, `CUDA<k>` (counting CUDA
    /// devices only), `RPC0[host:port]`.
    fn name(self, device: Device) -> String {
        match device {
            Device::Host => "CPU".to_owned(),
            Device::Gpu(i) => {
                if let Some(GpuBackend::Rpc(endpoint)) = self.gpus.get(i).map(|g| &g.backend) {
                    return format!("RPC0[{endpoint}]");
                }
                let k = self
                    .gpus
                    .iter()
                    .take(i)
                    .filter(|g| g.backend == GpuBackend::Cuda)
                    .count();
                format!("CUDA{k}")
            }
        }
    }

    fn is_cuda(self, device: Device) -> bool {
        matches!(device, Device::Gpu(i) if self.gpus.get(i).is_some_and(|g| g.backend == GpuBackend::Cuda))
    }

    /// The host buffer for what a device reads back (`CUDA_Host`, pinned, when `device` is a
    /// CUDA GPU; plain `CPU` memory otherwise): llama.cpp takes the host compute buffer's type
    /// from the first device and the output buffer's from the output layer's device.
    fn host_of(self, device: Device) -> String {
        if self.is_cuda(device) {
            "CUDA_Host".to_owned()
        } else {
            "CPU".to_owned()
        }
    }

    /// Bytes llama.cpp allocates for a weight on `device`: CUDA pads quantized rows to 512
    /// values and aligns tensors to 128 bytes; the CPU (and an RPC server's CPU backend) aligns
    /// to 32.
    fn alloc(self, t: &Tensor, device: Device) -> u64 {
        if !self.is_cuda(device) {
            return align(t.bytes, 32);
        }
        let mut size = t.bytes;
        let quantized = t.ggml_type.block().is_some_and(|b| b.elements > 1);
        let ne0 = t.dims.first().copied().unwrap_or(0);
        let partial = ne0 % 512;
        if quantized && partial != 0 {
            size = size.saturating_add(row_bytes(t.ggml_type, 512_u64.saturating_sub(partial)));
        }
        align(size, 128)
    }
}

/// Bytes of `n` values of `ty` (`ggml_row_size`), rounding partial blocks up.
fn row_bytes(ty: GgmlType, n: u64) -> u64 {
    ty.block().map_or(n.saturating_mul(4), |b| {
        n.div_ceil(b.elements).saturating_mul(b.bytes)
    })
}

/// `x` rounded up to a multiple of `n` (`GGML_PAD`), saturating (inputs are bounded first).
fn pad(x: u32, n: u32) -> u32 {
    x.div_ceil(n).saturating_mul(n)
}

/// `x` rounded up to a multiple of `n`, saturating (a saturated size fails any fit check, and the
/// sums that use it are checked).
fn align(x: u64, n: u64) -> u64 {
    x.div_ceil(n).saturating_mul(n)
}

/// The sum of `parts`, or [`EstimateError::Overflow`] naming `what`.
///
/// Written by hand, as the two below: checked arithmetic with the error this module reports.
fn sum(what: &'static str, parts: impl IntoIterator<Item = u64>) -> Result<u64, EstimateError> {
    parts
        .into_iter()
        .try_fold(0_u64, u64::checked_add)
        .ok_or(EstimateError::Overflow { what })
}

/// The product of `parts`, or [`EstimateError::Overflow`] naming `what`.
fn product(what: &'static str, parts: impl IntoIterator<Item = u64>) -> Result<u64, EstimateError> {
    parts
        .into_iter()
        .try_fold(1_u64, u64::checked_mul)
        .ok_or(EstimateError::Overflow { what })
}

/// `*to += bytes`, or [`EstimateError::Overflow`] naming `what`.
fn add_to(to: &mut u64, bytes: u64, what: &'static str) -> Result<(), EstimateError> {
    *to = sum(what, [*to, bytes])?;
    Ok(())
}

/// Formats bytes as llama.cpp prints them: MiB with two decimals.
#[allow(clippy::cast_precision_loss, reason = "display")]
pub fn mib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / MIB as f64)
}
