//! vLLM sizing: will a Hugging Face model directory fit on these GPUs under `vllm serve`, and how
//! many tokens and sequences will its KV cache hold?
//!
//! It lives here, beside vLLM's plans, because it is vLLM's memory model (llama.cpp's is
//! `cortex_gguf::estimate`). A model directory is read without loading a tensor: `config.json`
//! (the text model's part for multimodal configs) and each `*.safetensors` file's header (the
//! first `8 + n` bytes, deserialized as the `safetensors` crate's `Metadata`).
//!
//! vLLM's own method, as 0.32.0 applies it:
//! - it may use `gpu_memory_utilization × total` of each GPU (default 0.92);
//! - weights are split over `tensor_parallel × pipeline_parallel` GPUs;
//! - it profiles one forward pass of `max_num_batched_tokens` tokens for the activation peak, and
//!   what is left becomes KV blocks of 16 tokens;
//! - KV bytes per token per GPU: `layers/PP × max(1, kv_heads/TP) × head_dim × 2 × cache dtype`
//!   (MLA: `kv_lora_rank + qk_rope_head_dim` per layer, K only);
//! - it refuses to start when one sequence of `max_model_len` tokens does not fit.
//!
//! The activation peak and vLLM's non-PyTorch memory (CUDA graphs, NCCL, the CUDA context) are
//! approximations here (no GPU or vLLM to measure them on in CI); docs/estimator.md says how.
//! Hand-written: no crate models vLLM's allocations.
//!
//! Every number from `config.json` and every option is bounded before use (an error names the
//! field or flag); the arithmetic is checked besides (`clippy::arithmetic_side_effects` is denied
//! here), so hostile input is an error in debug and release alike.

#![deny(clippy::arithmetic_side_effects)]

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use cortex_gguf::Gpu;
use safetensors::tensor::Metadata;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Why a model directory could not be sized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SizingError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `config.json` lacks a field vLLM needs, or has a bad value.
    #[error("{path}: `{field}`: {problem}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A safetensors header is malformed.
    #[error("{path}: safetensors header: {problem}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The directory holds no `*.safetensors` file.
    #[error("{0}: no *.safetensors files (vLLM loads safetensors weights)")]
    NoWeights(PathBuf),
    /// A parameter is out of range.
    #[error("{flag}: {problem}")]
    Param {
        /// The vLLM flag.
        flag: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A byte count would not fit in 64 bits: the guard behind the bounds on every input.
    #[error("{what} does not fit in 64 bits: the model or the options are implausible")]
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
}

/// The sum of `parts`, or [`SizingError::Overflow`] naming `what`.
fn sum(what: &'static str, parts: impl IntoIterator<Item = u64>) -> Result<u64, SizingError> {
    parts
        .into_iter()
        .try_fold(0_u64, u64::checked_add)
        .ok_or(SizingError::Overflow { what })
}

/// The product of `parts`, or [`SizingError::Overflow`] naming `what`.
fn product(what: &'static str, parts: impl IntoIterator<Item = u64>) -> Result<u64, SizingError> {
    parts
        .into_iter()
        .try_fold(1_u64, u64::checked_mul)
        .ok_or(SizingError::Overflow { what })
}

/// A Hugging Face model directory as vLLM sizes it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HfModel {
    /// `architectures[0]`.
    pub architecture: String,
    /// `num_hidden_layers`.
    pub layers: u64,
    /// `hidden_size`.
    pub hidden: u64,
    /// `intermediate_size` (0 when absent).
    pub intermediate: u64,
    /// `num_attention_heads`.
    pub heads: u64,
    /// `num_key_value_heads` (defaults to `heads`).
    pub kv_heads: u64,
    /// `head_dim` (defaults to `hidden / heads`).
    pub head_dim: u64,
    /// `vocab_size`.
    pub vocab: u64,
    /// `max_position_embeddings`: vLLM's default `max_model_len`.
    pub max_position: u64,
    /// Bytes per value of `torch_dtype` / `dtype` (2 for bf16/fp16, 4 for fp32).
    pub dtype_bytes: u64,
    /// `quantization_config.quant_method`, when the weights are quantized.
    pub quantization: Option<String>,
    /// MLA: `kv_lora_rank + qk_rope_head_dim` values per token and layer (K only).
    pub mla_width: Option<u64>,
    /// Weight bytes as stored (from the safetensors headers).
    pub weight_bytes: u64,
    /// Parameters (elements) in the stored tensors.
    pub parameters: u64,
}

impl HfModel {
    /// Reads `dir/config.json` and the headers of `dir/*.safetensors`.
    ///
    /// # Errors
    ///
    /// [`SizingError`] naming the file and field.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SizingError> {
        let dir = dir.as_ref();
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| SizingError::Io {
            path: path.clone(),
            source,
        })?;
        let mut model = Self::parse_config(&text, &path)?;
        (model.weight_bytes, model.parameters) = read_weights(dir)?;
        Ok(model)
    }

    /// A model from the text of its `config.json` and the totals of its weights (bytes as stored
    /// and parameters), as a hub's API gives them without a download.
    ///
    /// # Errors
    ///
    /// [`SizingError::Config`] naming the field.
    pub fn from_config(
        config_json: &str,
        weight_bytes: u64,
        parameters: u64,
    ) -> Result<Self, SizingError> {
        let mut model = Self::parse_config(config_json, Path::new("config.json"))?;
        model.weight_bytes = weight_bytes;
        model.parameters = parameters;
        Ok(model)
    }

    /// Reads `config.json` (its text; `path` names it in errors); the weights are left at 0.
    fn parse_config(text: &str, path: &Path) -> Result<Self, SizingError> {
        let root: Value = serde_json::from_str(text).map_err(|e| SizingError::Config {
            path: path.to_owned(),
            field: "(file)",
            problem: e.to_string(),
        })?;
        // Multimodal configs keep the language model under `text_config`.
        let cfg = root
            .get("text_config")
            .filter(|v| v.is_object())
            .unwrap_or(&root);
        let num = |field: &'static str| -> Option<u64> {
            cfg.get(field)
                .or_else(|| root.get(field))
                .and_then(Value::as_u64)
        };
        // Bounds far above any published model, which keep every product in 64 bits.
        let at_most = |field: &'static str, n: u64, max: u64| {
            if n > max {
                return Err(SizingError::Config {
                    path: path.to_owned(),
                    field,
                    problem: format!("{n} is implausible (at most {max})"),
                });
            }
            Ok(n)
        };
        let need = |field: &'static str, max: u64| {
            let n = num(field)
                .filter(|n| *n > 0)
                .ok_or_else(|| SizingError::Config {
                    path: path.to_owned(),
                    field,
                    problem: "missing or not a positive integer".to_owned(),
                })?;
            at_most(field, n, max)
        };
        let optional =
            |field: &'static str, max: u64| num(field).map(|n| at_most(field, n, max)).transpose();
        let layers = need("num_hidden_layers", 1 << 16)?;
        let hidden = need("hidden_size", 1 << 20)?;
        let heads = need("num_attention_heads", 1 << 16)?;
        let kv_heads = optional("num_key_value_heads", 1 << 16)?.unwrap_or(heads);
        let head_dim =
            optional("head_dim", 1 << 16)?.unwrap_or(hidden.checked_div(heads).unwrap_or(0));
        let dtype_bytes = dtype_bytes(cfg, &root, path)?;
        let quantization = root
            .get("quantization_config")
            .or_else(|| cfg.get("quantization_config"))
            .and_then(|q| q.get("quant_method"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mla_width = optional("kv_lora_rank", 1 << 16)?
            .map(|r| {
                let rope = optional("qk_rope_head_dim", 1 << 16)?.unwrap_or(0);
                Ok::<_, SizingError>(r.saturating_add(rope))
            })
            .transpose()?;
        let intermediate = optional("intermediate_size", 1 << 24)?.unwrap_or(0);
        let vocab = optional("vocab_size", 1 << 24)?.unwrap_or(0);
        let max_position = optional("max_position_embeddings", 1 << 32)?.unwrap_or(0);

        Ok(Self {
            architecture: root
                .get("architectures")
                .and_then(|a| a.get(0))
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
            layers,
            hidden,
            intermediate,
            heads,
            kv_heads,
            head_dim,
            vocab,
            max_position,
            dtype_bytes,
            quantization,
            mla_width,
            weight_bytes: 0,
            parameters: 0,
        })
    }
}

/// Bytes per weight of the model's `torch_dtype` (`dtype` in newer configs).
fn dtype_bytes(cfg: &Value, root: &Value, path: &Path) -> Result<u64, SizingError> {
    let dtype = cfg
        .get("torch_dtype")
        .or_else(|| cfg.get("dtype"))
        .or_else(|| root.get("torch_dtype"))
        .and_then(Value::as_str)
        .unwrap_or("bfloat16");
    Ok(match dtype {
        "float32" => 4,
        "float16" | "bfloat16" => 2,
        other => {
            return Err(SizingError::Config {
                path: path.to_owned(),
                field: "torch_dtype",
                problem: format!("`{other}`: expected float32, float16 or bfloat16"),
            });
        }
    })
}

/// Sums the tensors of every `*.safetensors` file in `dir`, reading headers only.
fn read_weights(dir: &Path) -> Result<(u64, u64), SizingError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SizingError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(SizingError::NoWeights(dir.to_owned()));
    }
    let (mut bytes, mut params) = (0u64, 0u64);
    for path in files {
        let meta = read_header(&path)?;
        for info in meta.tensors().values() {
            let n = info
                .shape
                .iter()
                .fold(1_u64, |n, d| n.saturating_mul(*d as u64));
            params = params.saturating_add(n);
            let (begin, end) = info.data_offsets;
            bytes = bytes.saturating_add(end.saturating_sub(begin) as u64);
        }
    }
    Ok((bytes, params))
}

/// The header of one safetensors file: the first 8 bytes give its length (at most 100 MB, as the
/// crate allows), then the JSON, deserialized and validated by the `safetensors` crate.
fn read_header(path: &Path) -> Result<Metadata, SizingError> {
    let io = |source| SizingError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io)?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(SizingError::Header {
            path: path.to_owned(),
            problem: format!("header length {n} is too large"),
        });
    }
    let mut header = vec![0u8; usize::try_from(n).unwrap_or(0)];
    f.read_exact(&mut header).map_err(io)?;
    serde_json::from_slice::<Metadata>(&header).map_err(|e| SizingError::Header {
        path: path.to_owned(),
        problem: e.to_string(),
    })
}

/// `--kv-cache-dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvCacheDtype {
    /// `auto`: the model's dtype.
    #[default]
    Auto,
    /// `fp8` (`fp8_e4m3`, `fp8_e5m2`): one byte per value.
    Fp8,
}

/// The `vllm serve` options that change memory.
#[derive(Debug, Clone, PartialEq)]
pub struct VllmParams {
    /// `--tensor-parallel-size` (default 1).
    pub tensor_parallel: u32,
    /// `--pipeline-parallel-size` (default 1).
    pub pipeline_parallel: u32,
    /// `--gpu-memory-utilization` (default 0.92).
    pub gpu_memory_utilization: f64,
    /// `--max-model-len`; `None` = the model's `max_position_embeddings`.
    pub max_model_len: Option<u64>,
    /// `--max-num-seqs` (default 256).
    pub max_num_seqs: u64,
    /// `--max-num-batched-tokens` (default 8192): the profiled forward pass.
    pub max_num_batched_tokens: u64,
    /// `--kv-cache-dtype`.
    pub kv_cache_dtype: KvCacheDtype,
    /// `--quantization fp8`: online FP8 weights (one byte per linear weight).
    pub quantize_fp8: bool,
    /// `--block-size` (default 16).
    pub block_size: u64,
}

impl VllmParams {
    /// Bounds far above any deployment, which keep the sizing's arithmetic in 64 bits.
    fn check(&self) -> Result<(), SizingError> {
        let limits: [(&'static str, u64, u64); 6] = [
            (
                "--tensor-parallel-size",
                u64::from(self.tensor_parallel),
                1 << 16,
            ),
            (
                "--pipeline-parallel-size",
                u64::from(self.pipeline_parallel),
                1 << 16,
            ),
            ("--max-num-seqs", self.max_num_seqs, 1 << 24),
            (
                "--max-num-batched-tokens",
                self.max_num_batched_tokens,
                1 << 32,
            ),
            ("--max-model-len", self.max_model_len.unwrap_or(0), 1 << 32),
            ("--block-size", self.block_size, 1 << 16),
        ];
        for (flag, value, max) in limits {
            if value > max {
                return Err(SizingError::Param {
                    flag,
                    problem: format!("{value} is implausible (at most {max})"),
                });
            }
        }
        Ok(())
    }
}

impl Default for VllmParams {
    fn default() -> Self {
        Self {
            tensor_parallel: 1,
            pipeline_parallel: 1,
            gpu_memory_utilization: 0.92,
            max_model_len: None,
            max_num_seqs: 256,
            max_num_batched_tokens: 8192,
            kv_cache_dtype: KvCacheDtype::Auto,
            quantize_fp8: false,
            block_size: 16,
        }
    }
}

/// vLLM's budget on each GPU.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VllmSizing {
    /// GPUs used: `TP × PP`.
    pub gpus_used: u32,
    /// Weights per GPU.
    pub weights_per_gpu: u64,
    /// Activation peak of the profiled pass, per GPU — approximate. vLLM measures it: its
    /// worker runs one dummy forward pass of `max_num_batched_tokens` tokens
    /// (`profile_run` in `v1/worker/gpu_model_runner.py`) and takes the allocator's peak. Modelled here as that
    /// pass's widest tensors, `max_num_batched_tokens × (4·hidden + 2·intermediate/TP) × dtype`,
    /// plus the sampler's logits, `min(max_num_seqs, max_num_batched_tokens) × vocab × 4` (fp32).
    pub activation_per_gpu: u64,
    /// Memory outside `PyTorch`'s allocator (the CUDA context, NCCL buffers, CUDA graphs) —
    /// approximate: a flat 512 MiB. vLLM measures it as the device's used memory minus the
    /// allocator's during profiling (`non_torch_memory` in `utils/mem_utils.py`); no GPU was
    /// available to calibrate it (docs/estimator.md, "vLLM sizing").
    pub non_torch_per_gpu: u64,
    /// What vLLM may use per GPU: `utilization × total` of the smallest GPU used.
    pub budget_per_gpu: u64,
    /// KV cache per GPU after weights and activations (0 when nothing is left).
    pub kv_per_gpu: u64,
    /// KV bytes per token per GPU.
    pub kv_bytes_per_token: u64,
    /// Tokens the KV cache holds (whole blocks).
    pub kv_tokens: u64,
    /// The context vLLM will serve.
    pub max_model_len: u64,
    /// Sequences of `max_model_len` tokens that fit at once (vLLM's "maximum concurrency").
    pub max_concurrency: f64,
    /// Whether vLLM will start: at least one sequence of `max_model_len` fits.
    pub fits: bool,
}

/// One change that would make a model fit (or hold more), with its effect.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VllmSuggestion {
    /// The flags, as `vllm serve` spells them.
    pub flags: String,
    /// The sizing with the change.
    pub sizing: VllmSizing,
}

/// Sizes `model` under `params` on `gpus` (the first `TP × PP` are used).
///
/// # Errors
///
/// [`SizingError::Param`] when the parallel sizes ask for more GPUs than given, or split heads
/// unevenly (vLLM refuses that too).
pub fn size(model: &HfModel, params: &VllmParams, gpus: &[Gpu]) -> Result<VllmSizing, SizingError> {
    params.check()?;
    let tp = u64::from(params.tensor_parallel.max(1));
    let pp = u64::from(params.pipeline_parallel.max(1));
    let gpus_used = product("the GPU count", [tp, pp])?;
    let used = usize::try_from(gpus_used).unwrap_or(usize::MAX);
    if used > gpus.len() {
        return Err(SizingError::Param {
            flag: "--tensor-parallel-size",
            problem: format!("TP {tp} × PP {pp} needs {used} GPUs; {} given", gpus.len()),
        });
    }
    if model.heads.checked_rem(tp) != Some(0) {
        return Err(SizingError::Param {
            flag: "--tensor-parallel-size",
            problem: format!("{} attention heads are not divisible by {tp}", model.heads),
        });
    }
    if !(0.0..=1.0).contains(&params.gpu_memory_utilization) || params.gpu_memory_utilization == 0.0
    {
        return Err(SizingError::Param {
            flag: "--gpu-memory-utilization",
            problem: format!("{}: must be in (0, 1]", params.gpu_memory_utilization),
        });
    }
    let smallest = gpus
        .iter()
        .take(used)
        .map(|g| g.total_bytes)
        .min()
        .unwrap_or(0);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a byte budget"
    )]
    let budget = (smallest as f64 * params.gpu_memory_utilization) as u64;

    let mut weights = model.weight_bytes;
    if params.quantize_fp8 && model.quantization.is_none() {
        // Online FP8: linear weights to one byte; embeddings and norms stay (approximated as the
        // embedding matrix, twice when untied, kept at the model dtype).
        let embeds = product(
            "the embeddings",
            [2, model.vocab, model.hidden, model.dtype_bytes],
        )?;
        let linear = weights
            .saturating_sub(embeds)
            .checked_div(model.dtype_bytes)
            .unwrap_or(0);
        weights = sum("the weights", [linear, embeds])?;
    }
    let weights_per_gpu = weights.div_ceil(gpus_used);

    let dtype = model.dtype_bytes;
    let activation = activation_bytes(model, params, tp)?;
    let non_torch = 512 * MIB;

    let kv_dtype = match params.kv_cache_dtype {
        KvCacheDtype::Auto => dtype,
        KvCacheDtype::Fp8 => 1,
    };
    let kv_bytes_per_token = kv_bytes_per_token(model, tp, pp, kv_dtype)?;
    let kv_per_gpu = budget.saturating_sub(sum(
        "the memory used",
        [weights_per_gpu, activation, non_torch],
    )?);
    let block = params.block_size.max(1);
    let block_bytes = product("the KV cache", [kv_bytes_per_token, block])?;
    let kv_tokens = kv_per_gpu
        .checked_div(block_bytes)
        .map_or(0, |blocks| blocks.saturating_mul(block));
    let max_model_len = params.max_model_len.unwrap_or(model.max_position);
    #[allow(clippy::cast_precision_loss, reason = "a ratio")]
    let max_concurrency = if max_model_len == 0 {
        0.0
    } else {
        kv_tokens as f64 / max_model_len as f64
    };
    Ok(VllmSizing {
        gpus_used: u32::try_from(gpus_used).unwrap_or(u32::MAX),
        weights_per_gpu,
        activation_per_gpu: activation,
        non_torch_per_gpu: non_torch,
        budget_per_gpu: budget,
        kv_per_gpu,
        kv_bytes_per_token,
        kv_tokens,
        max_model_len,
        max_concurrency,
        fits: kv_tokens >= max_model_len && max_model_len > 0,
    })
}

/// The activation peak of the profiled forward pass, per GPU (approximate).
fn activation_bytes(model: &HfModel, params: &VllmParams, tp: u64) -> Result<u64, SizingError> {
    const ACT: &str = "the activation peak";
    let width = sum(
        ACT,
        [
            product(ACT, [4, model.hidden])?,
            product(ACT, [2, model.intermediate])?
                .checked_div(tp)
                .unwrap_or(0),
        ],
    )?;
    sum(
        ACT,
        [
            product(
                ACT,
                [params.max_num_batched_tokens, width, model.dtype_bytes],
            )?,
            product(
                ACT,
                [
                    params.max_num_seqs.min(params.max_num_batched_tokens),
                    model.vocab,
                    4,
                ],
            )?,
        ],
    )
}

/// KV bytes per token per GPU: `layers/PP × max(1, kv_heads/TP) × head_dim × 2 × dtype` (MLA:
/// its compressed width, K only).
fn kv_bytes_per_token(
    model: &HfModel,
    tp: u64,
    pp: u64,
    kv_dtype: u64,
) -> Result<u64, SizingError> {
    const KV: &str = "the KV cache";
    let layers_here = model.layers.div_ceil(pp);
    match model.mla_width {
        Some(w) => product(KV, [layers_here, w, kv_dtype]),
        None => product(
            KV,
            [
                layers_here,
                model.kv_heads.checked_div(tp).unwrap_or(0).max(1),
                model.head_dim,
                2,
                kv_dtype,
            ],
        ),
    }
}

/// When `params` does not fit, the ladder vLLM's documentation gives, each step with its sizing:
/// an FP8 KV cache, FP8 weights, a larger tensor-parallel size (while GPUs remain), then a
/// smaller `max_model_len` (the largest that fits) and fewer sequences.
///
/// # Errors
///
/// As [`size`].
pub fn suggestions(
    model: &HfModel,
    params: &VllmParams,
    gpus: &[Gpu],
) -> Result<Vec<VllmSuggestion>, SizingError> {
    let base = size(model, params, gpus)?;
    if base.fits {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    if params.kv_cache_dtype == KvCacheDtype::Auto {
        let p = VllmParams {
            kv_cache_dtype: KvCacheDtype::Fp8,
            ..params.clone()
        };
        out.push(VllmSuggestion {
            flags: "--kv-cache-dtype fp8".to_owned(),
            sizing: size(model, &p, gpus)?,
        });
    }
    if !params.quantize_fp8 && model.quantization.is_none() {
        let p = VllmParams {
            quantize_fp8: true,
            ..params.clone()
        };
        out.push(VllmSuggestion {
            flags: "--quantization fp8".to_owned(),
            sizing: size(model, &p, gpus)?,
        });
    }
    let pp = params.pipeline_parallel.max(1);
    let mut tp = params.tensor_parallel.max(1).saturating_mul(2);
    while usize::try_from(tp.saturating_mul(pp)).is_ok_and(|n| n <= gpus.len()) {
        if u64::from(tp) <= model.heads && model.heads.checked_rem(u64::from(tp)) == Some(0) {
            let p = VllmParams {
                tensor_parallel: tp,
                ..params.clone()
            };
            let s = size(model, &p, gpus)?;
            let fits = s.fits;
            out.push(VllmSuggestion {
                flags: format!("--tensor-parallel-size {tp}"),
                sizing: s,
            });
            if fits {
                break;
            }
        }
        tp = match tp.checked_mul(2) {
            Some(next) => next,
            None => break,
        };
    }
    if base.kv_tokens >= params.block_size.max(1) {
        let len = base.kv_tokens;
        let p = VllmParams {
            max_model_len: Some(len),
            ..params.clone()
        };
        out.push(VllmSuggestion {
            flags: format!("--max-model-len {len}"),
            sizing: size(model, &p, gpus)?,
        });
    }
    if params.max_num_seqs > 16 {
        let p = VllmParams {
            max_num_seqs: 16,
            ..params.clone()
        };
        out.push(VllmSuggestion {
            flags: "--max-num-seqs 16".to_owned(),
            sizing: size(model, &p, gpus)?,
        });
    }
    Ok(out)
}
