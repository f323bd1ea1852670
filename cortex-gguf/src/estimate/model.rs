//! [`Model`]: what the estimator needs to know about a model, read from its GGUF metadata and
//! tensor table the way llama.cpp's loader reads them (pinned build 11434).

use crate::{GgmlType, Gguf, TensorInfo, Value};

use super::EstimateError;

/// Bounds that keep every byte count in `u64` (checked before any arithmetic).
pub(super) mod limits {
    pub(crate) const LAYERS: u32 = 4096;
    pub(crate) const EMBD: u32 = 1 << 20;
    pub(crate) const HEADS: u32 = 1 << 14;
    pub(crate) const HEAD_DIM: u32 = 1 << 16;
    pub(crate) const KV_ROW: u64 = 1 << 22;
    pub(crate) const VOCAB: u32 = 1 << 24;
    pub(crate) const FF: u32 = 1 << 24;
    pub(crate) const CTX: u32 = 1 << 24;
    pub(crate) const STATE: u64 = 1 << 30;
    pub(crate) const EXPERTS: u32 = 1 << 16;
}

/// One repeating layer's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerShape {
    /// Query heads.
    pub n_head: u32,
    /// Key/value heads (0: no attention in this layer).
    pub n_head_kv: u32,
    /// Key head size.
    pub head_k: u32,
    /// Value head size.
    pub head_v: u32,
    /// Sliding-window attention.
    pub swa: bool,
    /// Recurrent state instead of (or beside, for Falcon-H1) a KV cache.
    pub recurrent: bool,
    /// Feed-forward width (0: none).
    pub n_ff: u32,
}

// === impl LayerShape ===

impl LayerShape {
    /// K values per token: `head_k × n_head_kv` (llama.cpp's `n_embd_k_gqa`).
    pub fn k_row(&self) -> u64 {
        u64::from(self.head_k).saturating_mul(u64::from(self.n_head_kv))
    }

    /// V values per token: `head_v × n_head_kv` (`n_embd_v_gqa`).
    pub fn v_row(&self) -> u64 {
        u64::from(self.head_v).saturating_mul(u64::from(self.n_head_kv))
    }
}

/// A tensor as the estimator places it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tensor {
    /// Its name (`blk.3.ffn_up.weight`).
    pub name: String,
    /// Its ggml type.
    pub ggml_type: GgmlType,
    /// Dimensions, innermost first.
    pub dims: Vec<u64>,
    /// Data bytes.
    pub bytes: u64,
    /// Offset of the data in its file (absolute).
    pub offset: u64,
    /// Which file of a split set holds it.
    pub shard: usize,
    /// Where llama.cpp puts it.
    pub role: Role,
}

/// Which part of the model a tensor belongs to, which decides its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The input layer (token embeddings): always on the host.
    Input,
    /// Repeating layer `n`.
    Layer(u32),
    /// The output layer (final norm, output projection).
    Output,
}

/// Which recurrent state a model keeps per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recurrent {
    /// Values of the convolution / token-shift state per sequence and layer (`n_embd_r`).
    pub r: u64,
    /// Values of the SSM / WKV state per sequence and layer (`n_embd_s`).
    pub s: u64,
    /// Floats per token of the micro-batch that a recurrent layer's graph keeps live at its peak
    /// (`2·d_in_proj + 2·conv_dim + d_inner + n_embd` for Mamba-style layers, read from the
    /// `ssm_in`, `ssm_conv1d` and `ssm_out` tensors; 0 when the model has none of them).
    pub working: u64,
}

/// How a model keeps its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// A KV cache (with a sliding-window part when any layer is SWA).
    Kv,
    /// Recurrent state only (Mamba, RWKV).
    Recurrent,
    /// Attention layers with a KV cache and recurrent layers with state (Jamba, Qwen3-Next, …).
    Hybrid,
    /// No context memory (encoders: BERT and friends).
    None,
}

/// What the estimator needs to know about a model: its hyperparameters as llama.cpp derives
/// them, and every tensor with its size, type and file position.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Model {
    /// `general.architecture`.
    pub architecture: String,
    /// Repeating layers.
    pub n_layer: u32,
    /// Training context (`-c 0` uses it).
    pub n_ctx_train: u32,
    /// Embedding width.
    pub n_embd: u32,
    /// Vocabulary size (rows of the logits).
    pub n_vocab: u32,
    /// Layer by layer.
    pub layers: Vec<LayerShape>,
    /// Sliding window in tokens (0: none).
    pub n_swa: u32,
    /// Multi-head latent attention (`key_length_mla` present): the cache keeps K only.
    pub mla: bool,
    /// The context memory kind.
    pub memory: MemoryKind,
    /// Recurrent state sizes, for recurrent and hybrid models.
    pub recurrent: Option<Recurrent>,
    /// Experts per `MoE` layer (0: dense).
    pub n_expert: u32,
    /// Experts used per token.
    pub n_expert_used: u32,
    /// Expert feed-forward width: `expert_feed_forward_length`, or `feed_forward_length` when
    /// a `MoE` file has none (llama.cpp's `llama` architecture, Mixtral's, uses that).
    pub n_ff_exp: u32,
    /// Every tensor.
    pub tensors: Vec<Tensor>,
    /// Whether the output projection reuses the token embeddings (no `output.weight`).
    pub tied_output: bool,
}

// === impl Model ===

impl Model {
    /// Reads a model from one GGUF file.
    ///
    /// # Errors
    ///
    /// [`EstimateError::Metadata`] when a key llama.cpp requires is missing or out of range.
    pub fn from_gguf(gguf: &Gguf<'_>) -> Result<Self, EstimateError> {
        Self::from_parts(gguf, gguf.tensors().map(|t| (0, t)))
    }

    /// Reads a model from the metadata of its first shard and the tensors of all shards (with
    /// the index of the shard holding each).
    ///
    /// # Errors
    ///
    /// As [`from_gguf`](Self::from_gguf).
    #[allow(
        clippy::too_many_lines,
        reason = "llama.cpp's hparams loading, key by key"
    )]
    pub fn from_parts<'t>(
        gguf: &Gguf<'_>,
        tensors: impl Iterator<Item = (usize, TensorInfo<'t>)>,
    ) -> Result<Self, EstimateError> {
        let arch = gguf
            .architecture()
            .ok_or_else(|| EstimateError::metadata("general.architecture", "missing"))?
            .to_owned();
        let md = Meta { gguf, arch: &arch };

        let n_layer = md.u32_req("block_count")?;
        check(&md.key("block_count"), n_layer, 1, limits::LAYERS)?;
        let n_embd = md.u32_req("embedding_length")?;
        check(&md.key("embedding_length"), n_embd, 1, limits::EMBD)?;
        let n_ctx_train = md.u32_opt("context_length")?.unwrap_or(0).min(limits::CTX);
        let n_vocab = gguf
            .get::<crate::Array<'_>>("tokenizer.ggml.tokens")
            .ok()
            .and_then(|a| u32::try_from(a.len()).ok())
            .or(md.u32_opt("vocab_size")?)
            .unwrap_or(0);
        check("tokenizer.ggml.tokens", n_vocab, 0, limits::VOCAB)?;

        let heads = md.per_layer("attention.head_count", n_layer)?;
        let heads_kv = md.per_layer("attention.head_count_kv", n_layer)?;
        let n_ff = md.per_layer("feed_forward_length", n_layer)?;
        let n_head0 = heads.as_ref().and_then(|h| h.first().copied()).unwrap_or(0);
        let head_k = match md.u32_opt("attention.key_length")? {
            Some(k) => k,
            None => n_embd.checked_div(n_head0).unwrap_or(0),
        };
        let head_v = match md.u32_opt("attention.value_length")? {
            Some(v) => v,
            None => n_embd.checked_div(n_head0).unwrap_or(0),
        };
        let head_k_swa = md.u32_opt("attention.key_length_swa")?.unwrap_or(head_k);
        let swa_head_v = md.u32_opt("attention.value_length_swa")?.unwrap_or(head_v);
        check(&md.key("attention.key_length"), head_k, 0, limits::HEAD_DIM)?;
        check(
            &md.key("attention.value_length"),
            head_v,
            0,
            limits::HEAD_DIM,
        )?;
        check(
            &md.key("attention.key_length_swa"),
            head_k_swa,
            0,
            limits::HEAD_DIM,
        )?;
        check(
            &md.key("attention.value_length_swa"),
            swa_head_v,
            0,
            limits::HEAD_DIM,
        )?;
        let mla = md.u32_opt("attention.key_length_mla")?.is_some()
            && md.u32_opt("attention.value_length_mla")?.is_some();

        let n_swa = md.u32_opt("attention.sliding_window")?.unwrap_or(0);
        check(&md.key("attention.sliding_window"), n_swa, 0, limits::CTX)?;
        let swa = swa_layers(&md, n_layer, n_swa)?;
        let memory = memory_kind(&arch);
        let recr = recurrent_layers(&md, n_layer, memory, heads_kv.as_deref(), n_ff.as_deref())?;

        let mut layers = Vec::with_capacity(n_layer as usize);
        for il in 0..n_layer as usize {
            let n_head = heads.as_ref().and_then(|h| h.get(il).copied()).unwrap_or(0);
            let n_head_kv = heads_kv
                .as_ref()
                .and_then(|h| h.get(il).copied())
                .unwrap_or(n_head);
            check(&md.key("attention.head_count"), n_head, 0, limits::HEADS)?;
            check(
                &md.key("attention.head_count_kv"),
                n_head_kv,
                0,
                limits::HEADS,
            )?;
            let is_swa = swa.get(il).copied().unwrap_or(false);
            let layer = LayerShape {
                n_head,
                n_head_kv,
                head_k: if is_swa { head_k_swa } else { head_k },
                head_v: if is_swa { swa_head_v } else { head_v },
                swa: is_swa,
                recurrent: recr.get(il).copied().unwrap_or(false),
                n_ff: n_ff.as_ref().and_then(|f| f.get(il).copied()).unwrap_or(0),
            };
            check(&md.key("feed_forward_length"), layer.n_ff, 0, limits::FF)?;
            if layer.k_row() > limits::KV_ROW || layer.v_row() > limits::KV_ROW {
                return Err(EstimateError::metadata(
                    md.key("attention.head_count_kv"),
                    format!(
                        "layer {il}: {} KV values per token is implausible",
                        layer.k_row()
                    ),
                ));
            }
            layers.push(layer);
        }

        let mut recurrent = match memory {
            MemoryKind::Recurrent | MemoryKind::Hybrid => Some(recurrent_state(&md, n_embd)?),
            _ => None,
        };

        let mut out = Vec::new();
        let mut has_output = false;
        for (shard, t) in tensors {
            let bytes = t
                .bytes()
                .map_err(|e| EstimateError::metadata(t.name(), e.to_string()))?;
            let role = role_of(t.name(), n_layer);
            has_output |= t.name() == "output.weight";
            out.push(Tensor {
                name: t.name().to_owned(),
                ggml_type: t.ggml_type(),
                dims: t.dims().to_vec(),
                bytes,
                offset: md.gguf.data_offset().saturating_add(t.offset()),
                shard,
                role,
            });
        }
        if let Some(r) = recurrent.as_mut() {
            r.working = ssm_working(&out, n_embd);
        }
        // A split set's other shards have their own data offsets; `from_parts` callers pass
        // tensors whose `offset()` is relative to their own shard, which keeps spans per shard
        // right as long as each shard is measured on its own (what llama.cpp does).

        let n_expert = md.u32_opt("expert_count")?.unwrap_or(0);
        check(&md.key("expert_count"), n_expert, 0, limits::EXPERTS)?;
        let n_expert_used = md.u32_opt("expert_used_count")?.unwrap_or(0);
        check(&md.key("expert_used_count"), n_expert_used, 0, n_expert)?;
        // Without the key, llama.cpp's `llama` architecture (Mixtral's) makes its expert tensors
        // `{n_embd, n_ff, n_expert}` from `feed_forward_length` (src/models/llama.cpp,
        // `ffn_gate_exps`), so that is the experts' width.
        let n_ff_exp = match md.u32_opt("expert_feed_forward_length")? {
            Some(n) => n,
            None if n_expert > 0 => layers.iter().map(|l| l.n_ff).max().unwrap_or(0),
            None => 0,
        };
        check(
            &md.key("expert_feed_forward_length"),
            n_ff_exp,
            0,
            limits::FF,
        )?;
        if n_expert > 0 {
            refuse_legacy_experts(&out)?;
        }
        Ok(Self {
            n_expert,
            n_expert_used,
            n_ff_exp,
            architecture: arch,
            n_layer,
            n_ctx_train,
            n_embd,
            n_vocab,
            layers,
            n_swa,
            mla,
            memory,
            recurrent,
            tensors: out,
            tied_output: !has_output,
        })
    }

    /// Whether any layer uses sliding-window attention.
    pub fn is_swa_any(&self) -> bool {
        self.n_swa > 0 && self.layers.iter().any(|l| l.swa)
    }

    /// Bytes of all tensor data.
    pub fn weight_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0_u64, |all, t| all.saturating_add(t.bytes))
    }
}

/// Metadata lookups under `<arch>.`.
struct Meta<'g, 'a> {
    gguf: &'g Gguf<'a>,
    arch: &'g str,
}

impl Meta<'_, '_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    fn u32_opt(&self, k: &str) -> Result<Option<u32>, EstimateError> {
        let key = self.key(k);
        match self.gguf.value(&key) {
            None => Ok(None),
            Some(Value::Array(a)) => {
                // A per-layer array where a scalar is usual: its largest value.
                Ok(a.typed::<u32>().flatten().max())
            }
            Some(v) => v
                .as_i128()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| EstimateError::metadata(key, format!("{v} is not a count"))),
        }
    }

    fn u32_req(&self, k: &str) -> Result<u32, EstimateError> {
        self.u32_opt(k)?
            .ok_or_else(|| EstimateError::metadata(self.key(k), "missing"))
    }

    /// A scalar or a per-layer array, as `n_layer` values.
    fn per_layer(&self, k: &str, n_layer: u32) -> Result<Option<Vec<u32>>, EstimateError> {
        let key = self.key(k);
        match self.gguf.value(&key) {
            None => Ok(None),
            Some(Value::Array(a)) => {
                if a.len() < u64::from(n_layer) {
                    return Err(EstimateError::metadata(
                        key,
                        format!("{} values for {n_layer} layers", a.len()),
                    ));
                }
                let mut v = Vec::with_capacity(n_layer as usize);
                for x in a.typed::<u32>().take(n_layer as usize) {
                    v.push(x.ok_or_else(|| {
                        EstimateError::metadata(key.clone(), "an element is not a count")
                    })?);
                }
                Ok(Some(v))
            }
            Some(v) => {
                let n = v
                    .as_i128()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| EstimateError::metadata(key, format!("{v} is not a count")))?;
                Ok(Some(vec![n; n_layer as usize]))
            }
        }
    }
}

fn check(key: &str, v: u32, lo: u32, hi: u32) -> Result<(), EstimateError> {
    if v < lo || v > hi {
        return Err(EstimateError::metadata(
            key,
            format!("{v} is out of range ({lo}..={hi})"),
        ));
    }
    Ok(())
}

/// llama.cpp's per-architecture default SWA period (`load_swa_pattern(ml, n, dense_first)`),
/// used when the file has no `sliding_window_pattern`.
fn default_swa_pattern(arch: &str) -> Option<(u32, bool)> {
    Some(match arch {
        "gemma2" | "gpt-oss" => (2, false),
        "gemma3" | "gemma-embedding" => (6, false),
        "gemma3n" => (5, false),
        "cohere2" | "exaone4" | "exaone-moe" | "olmo2" | "llama4" | "afmoe" | "mellum" => {
            (4, false)
        }
        "cohere2moe" | "smallthinker" | "laguna" => (4, true),
        "plamo3" => (8, false),
        "modern-bert" => (3, true),
        _ => return None,
    })
}

fn swa_layers(md: &Meta<'_, '_>, n_layer: u32, n_swa: u32) -> Result<Vec<bool>, EstimateError> {
    let n = n_layer as usize;
    if n_swa == 0 {
        return Ok(vec![false; n]);
    }
    let key = md.key("attention.sliding_window_pattern");
    let (period, dense_first) = match md.gguf.value(&key) {
        Some(Value::Array(a)) => {
            let mut v: Vec<bool> = a.typed::<bool>().map(|b| b.unwrap_or(false)).collect();
            v.resize(n, false);
            return Ok(v);
        }
        Some(v) => {
            let p = v
                .as_i128()
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| {
                    EstimateError::metadata(key.clone(), format!("{v} is not a period"))
                })?;
            (p, default_swa_pattern(md.arch).is_some_and(|(_, d)| d))
        }
        // An architecture llama.cpp gives no pattern: every layer uses the window.
        None => default_swa_pattern(md.arch).unwrap_or_default(),
    };
    Ok((0..n_layer)
        .map(|il| {
            if period == 0 {
                true
            } else if dense_first {
                il.checked_rem(period) != Some(0)
            } else {
                il.checked_rem(period) < period.checked_sub(1)
            }
        })
        .collect())
}

fn memory_kind(arch: &str) -> MemoryKind {
    match arch {
        "mamba" | "mamba2" | "rwkv6" | "rwkv6qwen2" | "rwkv7" | "arwkv7" => MemoryKind::Recurrent,
        "jamba" | "falcon-h1" | "plamo2" | "granitehybrid" | "lfm2" | "lfm2moe" | "nemotron_h"
        | "nemotron_h_moe" | "qwen3next" | "qwen35" | "qwen35moe" | "kimi-linear"
        | "minimax-01" => MemoryKind::Hybrid,
        "bert" | "jina-bert-v2" | "jina-bert-v3" | "nomic-bert" | "nomic-bert-moe" | "neo-bert"
        | "eurobert" | "modern-bert" | "gemma-embedding" | "dream" | "llada" | "llada-moe" => {
            MemoryKind::None
        }
        _ => MemoryKind::Kv,
    }
}

/// Which layers keep recurrent state.
fn recurrent_layers(
    md: &Meta<'_, '_>,
    n_layer: u32,
    memory: MemoryKind,
    heads_kv: Option<&[u32]>,
    n_ff: Option<&[u32]>,
) -> Result<Vec<bool>, EstimateError> {
    let n = n_layer as usize;
    Ok(match memory {
        MemoryKind::Recurrent => vec![true; n],
        MemoryKind::Hybrid => match md.arch {
            // Every layer has both attention and an SSM.
            "falcon-h1" => vec![true; n],
            // Linear-attention layers between every `full_attention_interval`-th full one.
            "qwen3next" | "qwen35" | "qwen35moe" | "kimi-linear" | "minimax-01" => {
                let every = md.u32_opt("full_attention_interval")?.unwrap_or(4).max(1);
                (1..=n_layer)
                    .map(|il| il.checked_rem(every) != Some(0))
                    .collect()
            }
            // Nemotron-H: a layer with neither attention heads nor an FFN is a Mamba layer.
            "nemotron_h" | "nemotron_h_moe" => (0..n)
                .map(|il| {
                    heads_kv.and_then(|h| h.get(il)).copied().unwrap_or(1) == 0
                        && n_ff.and_then(|f| f.get(il)).copied().unwrap_or(1) == 0
                })
                .collect(),
            // Jamba, Granite hybrid, PLaMo-2, LFM2: `head_count_kv` 0 marks a recurrent layer.
            _ => (0..n)
                .map(|il| heads_kv.and_then(|h| h.get(il)).copied().unwrap_or(1) == 0)
                .collect(),
        },
        MemoryKind::Kv | MemoryKind::None => vec![false; n],
    })
}

/// `n_embd_r` and `n_embd_s` as llama.cpp computes them (`llama_hparams::n_embd_r/s`).
fn recurrent_state(md: &Meta<'_, '_>, n_embd: u32) -> Result<Recurrent, EstimateError> {
    let n_embd = u64::from(n_embd);
    let wkv = u64::from(md.u32_opt("wkv.head_size")?.unwrap_or(0));
    if wkv != 0 {
        let shift = u64::from(md.u32_opt("token_shift_count")?.unwrap_or(2));
        return bounded(md, shift.saturating_mul(n_embd), n_embd.saturating_mul(wkv));
    }
    let l_cache = u64::from(md.u32_opt("shortconv.l_cache")?.unwrap_or(0));
    if l_cache != 0 {
        return bounded(md, n_embd.saturating_mul(l_cache.saturating_sub(1)), 0);
    }
    let d_conv = u64::from(md.u32_opt("ssm.conv_kernel")?.unwrap_or(0));
    let d_inner = u64::from(md.u32_opt("ssm.inner_size")?.unwrap_or(0));
    let d_state = u64::from(md.u32_opt("ssm.state_size")?.unwrap_or(0));
    let n_group = u64::from(md.u32_opt("ssm.group_count")?.unwrap_or(0));
    for (k, v) in [
        ("ssm.conv_kernel", d_conv),
        ("ssm.inner_size", d_inner),
        ("ssm.state_size", d_state),
        ("ssm.group_count", n_group),
    ] {
        if v > u64::from(limits::FF) {
            return Err(EstimateError::metadata(
                md.key(k),
                format!("{v} is implausible"),
            ));
        }
    }
    // Each factor is at most 2^24 (checked above): saturation only marks the implausible, which
    // `bounded` refuses.
    let groups = n_group.saturating_mul(2).saturating_mul(d_state);
    bounded(
        md,
        d_conv
            .saturating_sub(1)
            .saturating_mul(d_inner.saturating_add(groups)),
        d_state.saturating_mul(d_inner),
    )
}

fn bounded(md: &Meta<'_, '_>, r: u64, s: u64) -> Result<Recurrent, EstimateError> {
    if r > limits::STATE || s > limits::STATE {
        return Err(EstimateError::metadata(
            md.key("ssm.state_size"),
            "recurrent state per sequence is implausible",
        ));
    }
    Ok(Recurrent { r, s, working: 0 })
}

/// Peak floats per token of a Mamba-style layer, from its tensors' shapes.
fn ssm_working(tensors: &[Tensor], n_embd: u32) -> u64 {
    let dim = |suffix: &str, i: usize| {
        tensors
            .iter()
            .find(|t| t.name.ends_with(suffix))
            .and_then(|t| t.dims.get(i).copied())
            .unwrap_or(0)
            .min(1 << 24)
    };
    let d_in_proj = dim(".ssm_in.weight", 1);
    if d_in_proj == 0 {
        return 0;
    }
    // Each dimension is capped at 2^24: the sum cannot overflow, saturating says so.
    d_in_proj
        .saturating_mul(2)
        .saturating_add(dim(".ssm_conv1d.weight", 1).saturating_mul(2))
        .saturating_add(dim(".ssm_out.weight", 0))
        .saturating_add(u64::from(n_embd))
}

/// Where a tensor belongs, by llama.cpp's naming (`LLM_TN`).
fn role_of(name: &str, n_layer: u32) -> Role {
    if let Some(rest) = name.strip_prefix("blk.") {
        if let Some(n) = rest.split('.').next().and_then(|n| n.parse::<u32>().ok()) {
            // Layers beyond `block_count` (MTP / NextN heads) go with the output layer.
            return if n < n_layer {
                Role::Layer(n)
            } else {
                Role::Output
            };
        }
    }
    let stem = name.split('.').next().unwrap_or(name);
    match stem {
        "token_embd" | "token_embd_norm" | "token_types" | "pos_embd" | "per_layer_token_embd" => {
            Role::Input
        }
        _ => Role::Output,
    }
}

/// Whether llama.cpp uses this tensor as the weight of a matrix multiplication (`MUL_MAT`, or
/// `MUL_MAT_ID` for 3-D expert tensors): the tensors the CPU may repack.
pub(super) fn is_matmul_weight(t: &Tensor) -> bool {
    let Some(kind) = t.name.strip_suffix(".weight") else {
        return false;
    };
    let kind = kind.rsplit('.').next().unwrap_or(kind);
    if kind.contains("norm") {
        return false;
    }
    match t.dims.len() {
        2 => !matches!(
            kind,
            "token_embd"
                | "pos_embd"
                | "token_types"
                | "rope_freqs"
                | "per_layer_token_embd"
                | "ssm_conv1d"
                | "ssm_a"
                | "ssm_d"
        ),
        3 => kind.ends_with("_exps"),
        _ => false,
    }
}

/// Refuses the legacy per-expert layout (one tensor per expert, `blk.0.ffn_down.0.weight`, as
/// the first Mixtral conversions wrote it) as llama-server b11434 does: it creates the merged
/// `blk.N.ffn_down_exps.weight` as required (src/models/llama.cpp) and has no code left that merges
/// per-expert tensors, so loading fails (its log, seen with the real build: `error loading model:
/// check_tensor_dims: tensor 'blk.0.ffn_down_exps.weight' not found`).
fn refuse_legacy_experts(tensors: &[Tensor]) -> Result<(), EstimateError> {
    let has = |name: &str| tensors.iter().any(|t| t.name == name);
    if !has("blk.0.ffn_down_exps.weight") && has("blk.0.ffn_down.0.weight") {
        return Err(EstimateError::metadata(
            "blk.0.ffn_down_exps.weight",
            "missing: the file stores one tensor per expert (the legacy Mixtral layout), which \
             llama-server b11434 refuses (\"error loading model: check_tensor_dims: tensor \
             'blk.0.ffn_down_exps.weight' not found\"); convert the model again with a current \
             convert_hf_to_gguf.py",
        ));
    }
    Ok(())
}
