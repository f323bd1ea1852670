//! [`ModelInfo`]: what a model is, as llama.cpp describes it.

use crate::{Array, GgmlType, Gguf, TensorInfo, Value};

/// A summary of a model from its metadata and tensors.
///
/// Values are read as llama.cpp reads them (`<arch>.block_count`, `<arch>.attention.head_count`
/// scalar or per layer, …); a key the file does not have is `None` here, and llama.cpp's
/// architecture-specific defaults (a sliding-window pattern set in code, say) are the estimator's
/// business, not this summary's.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ModelInfo {
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// Elements in all tensors: llama.cpp's "model params".
    pub parameters: u64,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
    /// The file type as llama.cpp prints it (`Q4_K - Medium`).
    pub file_type: FileType,
    /// Tensors per ggml type, by type id (llama.cpp's `type q4_K: 27 tensors` lines).
    pub tensor_types: Vec<(GgmlType, u32)>,
    /// `<arch>.block_count`: layers.
    pub block_count: Option<u32>,
    /// `<arch>.context_length`: the context the model was trained with.
    pub context_length: Option<u64>,
    /// `<arch>.embedding_length`.
    pub embedding_length: Option<u64>,
    /// `<arch>.feed_forward_length`, scalar or per layer.
    pub feed_forward_length: Option<PerLayer>,
    /// `<arch>.attention.head_count`, scalar or per layer.
    pub head_count: Option<PerLayer>,
    /// `<arch>.attention.head_count_kv`, scalar or per layer.
    pub head_count_kv: Option<PerLayer>,
    /// `<arch>.attention.key_length`.
    pub key_length: Option<u32>,
    /// `<arch>.attention.value_length`.
    pub value_length: Option<u32>,
    /// `<arch>.attention.sliding_window`: tokens a sliding-window layer attends to.
    pub sliding_window: Option<u32>,
    /// `<arch>.attention.sliding_window_pattern`, when the file has it.
    pub sliding_window_pattern: Option<SwaPattern>,
    /// `<arch>.expert_count`.
    pub expert_count: Option<u32>,
    /// `<arch>.expert_used_count`.
    pub expert_used_count: Option<u32>,
    /// Tokens in `tokenizer.ggml.tokens`, else `<arch>.vocab_size`.
    pub vocab_size: Option<u64>,
    /// Rotary position embedding (`RoPE`) settings.
    pub rope: Rope,
    /// Whether `tokenizer.chat_template` is present.
    pub has_chat_template: bool,
}

/// The quantization of a file, as llama.cpp names it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileType {
    /// `general.file_type`, or llama.cpp's guess from the most common tensor type.
    pub id: u32,
    /// Whether the id was guessed (`general.file_type` absent).
    pub guessed: bool,
    /// llama.cpp's label: `Q4_K - Medium`, `(guessed) Q8_0`, `unknown, may not work`.
    pub label: String,
}

/// A hyperparameter that is one number for every layer, or one per layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerLayer {
    /// The same for every layer.
    Same(u32),
    /// Layer by layer.
    Layers(Vec<u32>),
}

// === impl PerLayer ===

impl PerLayer {
    /// The value of layer `i` (the scalar for every `i`).
    pub fn layer(&self, i: usize) -> Option<u32> {
        match self {
            Self::Same(v) => Some(*v),
            Self::Layers(v) => v.get(i).copied(),
        }
    }

    /// The largest value.
    pub fn max(&self) -> u32 {
        match self {
            Self::Same(v) => *v,
            Self::Layers(v) => v.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Which layers use sliding-window attention, as the file states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwaPattern {
    /// Every `n`-th layer is full attention, the others sliding window (`n` as a `u32`).
    Period(u32),
    /// Layer by layer: `true` for a sliding-window layer.
    Layers(Vec<bool>),
}

/// Rotary position embedding (`RoPE`) settings from the metadata.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Rope {
    /// `<arch>.rope.freq_base`.
    pub freq_base: Option<f64>,
    /// `<arch>.rope.dimension_count`.
    pub dimension_count: Option<u32>,
    /// `<arch>.rope.scaling.type` (`linear`, `yarn`, …).
    pub scaling_type: Option<String>,
    /// `<arch>.rope.scaling.factor`.
    pub scaling_factor: Option<f64>,
    /// `<arch>.rope.scaling.original_context_length`.
    pub original_context_length: Option<u64>,
}

// === impl ModelInfo ===

impl ModelInfo {
    /// Summarizes `gguf`.
    pub fn new(gguf: &Gguf<'_>) -> Self {
        Self::from_parts(gguf, gguf.tensors())
    }

    /// Summarizes metadata from `gguf` with the tensors of every shard of a split set.
    pub fn from_parts<'t>(gguf: &Gguf<'_>, tensors: impl Iterator<Item = TensorInfo<'t>>) -> Self {
        let arch = gguf.architecture();
        let key = |k: &str| arch.map(|a| format!("{a}.{k}"));
        let u32_of = |k: &str| key(k).and_then(|k| gguf.get::<u32>(&k).ok());
        let u64_of = |k: &str| key(k).and_then(|k| gguf.get::<u64>(&k).ok());
        let f64_of = |k: &str| key(k).and_then(|k| gguf.get::<f64>(&k).ok());
        let per_layer = |k: &str| {
            key(k)
                .and_then(|k| gguf.value(&k))
                .and_then(|v| per_layer(&v))
        };

        let tensors: Vec<TensorInfo<'t>> = tensors.collect();
        let parameters = tensors
            .iter()
            .map(TensorInfo::elements)
            .fold(0u64, u64::saturating_add);
        let tensor_bytes = tensors
            .iter()
            .filter_map(|t| t.bytes().ok())
            .fold(0u64, u64::saturating_add);
        let (tensor_types, file_type) = tensor_types_and_file_type(gguf, tensors);

        let sliding_window_pattern = key("attention.sliding_window_pattern")
            .and_then(|k| gguf.value(&k))
            .and_then(|v| match v {
                Value::Array(a) => Some(SwaPattern::Layers(
                    a.typed::<bool>().map(|b| b.unwrap_or(false)).collect(),
                )),
                v => v
                    .as_i128()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(SwaPattern::Period),
            });
        let vocab_size = gguf
            .get::<Array<'_>>("tokenizer.ggml.tokens")
            .map(|a| a.len())
            .ok()
            .or_else(|| u64_of("vocab_size"));

        Self {
            architecture: arch.map(str::to_owned),
            name: gguf.get::<&str>("general.name").ok().map(str::to_owned),
            parameters,
            tensor_bytes,
            file_type,
            tensor_types,
            block_count: u32_of("block_count"),
            context_length: u64_of("context_length"),
            embedding_length: u64_of("embedding_length"),
            feed_forward_length: per_layer("feed_forward_length"),
            head_count: per_layer("attention.head_count"),
            head_count_kv: per_layer("attention.head_count_kv"),
            key_length: u32_of("attention.key_length"),
            value_length: u32_of("attention.value_length"),
            sliding_window: u32_of("attention.sliding_window"),
            sliding_window_pattern,
            expert_count: u32_of("expert_count"),
            expert_used_count: u32_of("expert_used_count"),
            vocab_size,
            rope: Rope {
                freq_base: f64_of("rope.freq_base"),
                dimension_count: u32_of("rope.dimension_count"),
                scaling_type: key("rope.scaling.type")
                    .and_then(|k| gguf.get::<&str>(&k).ok())
                    .map(str::to_owned),
                scaling_factor: f64_of("rope.scaling.factor"),
                original_context_length: u64_of("rope.scaling.original_context_length"),
            },
            has_chat_template: gguf.value("tokenizer.chat_template").is_some(),
        }
    }
}

/// The tensor type histogram, and the file type: `general.file_type`, or llama.cpp's guess from
/// the most common tensor type.
fn tensor_types_and_file_type(
    gguf: &Gguf<'_>,
    mut tensors: Vec<TensorInfo<'_>>,
) -> (Vec<(GgmlType, u32)>, FileType) {
    // llama.cpp walks tensors in name order (a std::map) when it guesses the file type, and the
    // first type to reach the highest count wins.
    tensors.sort_by(|a, b| a.name().cmp(b.name()));
    let mut counts: Vec<(GgmlType, u32)> = Vec::new();
    let mut most = (GgmlType::F32, 0u32);
    for t in &tensors {
        let n = if let Some((_, n)) = counts.iter_mut().find(|(ty, _)| *ty == t.ggml_type()) {
            *n = n.saturating_add(1);
            *n
        } else {
            counts.push((t.ggml_type(), 1));
            1
        };
        if most.1 < n {
            most = (t.ggml_type(), n);
        }
    }
    counts.sort_by_key(|(ty, _)| ty.0);
    let file_type = if let Ok(id) = gguf.get::<u32>("general.file_type") {
        FileType {
            id,
            guessed: false,
            label: ftype_name(id).unwrap_or("unknown, may not work").to_owned(),
        }
    } else {
        let id = guess_ftype(most.0);
        FileType {
            id,
            guessed: true,
            label: format!(
                "(guessed) {}",
                ftype_name(id).unwrap_or("unknown, may not work")
            ),
        }
    };
    (counts, file_type)
}

fn per_layer(v: &Value<'_>) -> Option<PerLayer> {
    match v {
        Value::Array(a) => Some(PerLayer::Layers(
            a.typed::<u32>().map(|n| n.unwrap_or(0)).collect(),
        )),
        v => v
            .as_i128()
            .and_then(|n| u32::try_from(n).ok())
            .map(PerLayer::Same),
    }
}

/// llama.cpp's `llama_ftype_name`, without the "(guessed) " prefix (pinned build 11434).
pub fn ftype_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "all F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K - Medium",
        11 => "Q3_K - Small",
        12 => "Q3_K - Medium",
        13 => "Q3_K - Large",
        14 => "Q4_K - Small",
        15 => "Q4_K - Medium",
        16 => "Q5_K - Small",
        17 => "Q5_K - Medium",
        18 => "Q6_K",
        19 => "IQ2_XXS - 2.0625 bpw",
        20 => "IQ2_XS - 2.3125 bpw",
        21 => "Q2_K - Small",
        22 => "IQ3_XS - 3.3 bpw",
        23 => "IQ3_XXS - 3.0625 bpw",
        24 => "IQ1_S - 1.5625 bpw",
        25 => "IQ4_NL - 4.5 bpw",
        26 => "IQ3_S - 3.4375 bpw",
        27 => "IQ3_S mix - 3.66 bpw",
        28 => "IQ2_S - 2.5 bpw",
        29 => "IQ2_M - 2.7 bpw",
        30 => "IQ4_XS - 4.25 bpw",
        31 => "IQ1_M - 1.75 bpw",
        32 => "BF16",
        36 => "TQ1_0 - 1.69 bpw ternary",
        37 => "TQ2_0 - 2.06 bpw ternary",
        38 => "MXFP4 MoE",
        39 => "NVFP4",
        40 => "Q1_0",
        41 => "Q2_0",
        _ => return None,
    })
}

/// llama.cpp's guess of the file type from the most common tensor type (pinned build 11434).
fn guess_ftype(most: GgmlType) -> u32 {
    match most.0 {
        1 => 1,   // F16
        30 => 32, // BF16
        2 => 2,   // Q4_0
        3 => 3,   // Q4_1
        6 => 8,   // Q5_0
        7 => 9,   // Q5_1
        8 => 7,   // Q8_0
        10 => 10, // Q2_K
        11 => 12, // Q3_K → Q3_K_M
        12 => 15, // Q4_K → Q4_K_M
        13 => 17, // Q5_K → Q5_K_M
        14 => 18, // Q6_K
        34 => 36, // TQ1_0
        35 => 37, // TQ2_0
        16 => 19, // IQ2_XXS
        17 => 20, // IQ2_XS
        22 => 28, // IQ2_S
        18 => 23, // IQ3_XXS
        19 => 24, // IQ1_S
        29 => 31, // IQ1_M
        20 => 25, // IQ4_NL
        23 => 30, // IQ4_XS
        21 => 26, // IQ3_S
        40 => 39, // NVFP4
        41 => 40, // Q1_0
        42 => 41, // Q2_0
        _ => 0,   // F32, and llama.cpp's fallback for anything else
    }
}
