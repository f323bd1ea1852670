//! llama-server's command line, as a user would paste it, read into [`LlamaParams`].

use std::path::PathBuf;

use crate::GgmlType;

use super::{
    Device, EstimateError, FFN_DENSE_REGEX, FFN_EXPS_REGEX, FlashAttn, GpuLayers, LlamaParams,
    Parallel, SplitMode, TensorOverride,
};

/// A llama-server command line, read.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LlamaArgs {
    /// The options that change memory (models still to be attached: see the paths).
    pub params: LlamaParams,
    /// `-m`.
    pub model: Option<PathBuf>,
    /// `-md`.
    pub draft: Option<PathBuf>,
    /// `-ngld`.
    pub draft_gpu_layers: GpuLayers,
    /// `--spec-draft-n-max`.
    pub draft_n_max: u32,
    /// `-mm`.
    pub mmproj: Option<PathBuf>,
    /// `--lora` (comma-separated lists flattened).
    pub lora: Vec<PathBuf>,
    /// `--rpc`: the `ggml-rpc-server` endpoints (`host:port`), which llama.cpp puts before its
    /// local GPUs (see [`Gpu::rpc`](crate::Gpu::rpc); their memory is what each server reports).
    pub rpc: Vec<String>,
    /// Flags that do not change memory, skipped (with their values).
    pub ignored: Vec<String>,
}

/// Flags without a value that do not change memory (so their neighbour is not taken as a value).
const SWITCHES: &[&str] = &[
    "--jinja",
    "--no-jinja",
    "-cb",
    "--cont-batching",
    "-nocb",
    "--no-cont-batching",
    "--metrics",
    "--slots",
    "--no-slots",
    "--props",
    "--embedding",
    "--embeddings",
    "--no-webui",
    "--verbose",
    "-v",
    "--log-disable",
    "--no-warmup",
    "--check-tensors",
    "--no-perf",
    "--perf",
    "-fit",
    "--fit",
    "--log-jsonl",
    "--log-colors",
    "--offline",
];

/// Reads llama-server flags (`-c 8192 -np 4 -ctk q8_0 …`) as llama-server spells them.
///
/// Both the short and long spellings are accepted; a flag that does not change memory is
/// skipped (and listed in [`LlamaArgs::ignored`]), its value with it when the next word does not
/// start with `-`.
///
/// # Errors
///
/// [`EstimateError::Param`] naming the flag for a value llama-server would refuse.
#[allow(clippy::too_many_lines, reason = "one arm per llama-server flag")]
pub fn parse_llama_args<S: AsRef<str>>(args: &[S]) -> Result<LlamaArgs, EstimateError> {
    let mut out = LlamaArgs {
        params: LlamaParams::default(),
        model: None,
        draft: None,
        draft_gpu_layers: GpuLayers::Auto,
        draft_n_max: 3,
        mmproj: None,
        lora: Vec::new(),
        ignored: Vec::new(),
        rpc: Vec::new(),
    };
    let mut it = args.iter().map(AsRef::as_ref).peekable();
    while let Some(raw) = it.next() {
        let (flag, inline) = match raw.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (raw, None),
        };
        let mut value = |flag: &'static str| -> Result<String, EstimateError> {
            inline
                .clone()
                .or_else(|| it.next().map(str::to_owned))
                .ok_or_else(|| EstimateError::param(flag, "needs a value"))
        };
        let p = &mut out.params;
        match flag {
            "-m" | "--model" => out.model = Some(value("-m")?.into()),
            "-c" | "--ctx-size" => p.ctx_size = num("-c", &value("-c")?)?,
            "-np" | "--parallel" => {
                let v: i64 = num("-np", &value("-np")?)?;
                p.parallel = if v < 0 {
                    Parallel::Auto
                } else {
                    Parallel::Slots(
                        u32::try_from(v).map_err(|_| EstimateError::param("-np", "too large"))?,
                    )
                };
            }
            "-kvu" | "--kv-unified" => p.kv_unified = Some(true),
            "-no-kvu" | "--no-kv-unified" => p.kv_unified = Some(false),
            "-ctk" | "--cache-type-k" => p.cache_type_k = cache_type("-ctk", &value("-ctk")?)?,
            "-ctv" | "--cache-type-v" => p.cache_type_v = cache_type("-ctv", &value("-ctv")?)?,
            "-fa" | "--flash-attn" => {
                p.flash_attn = match value("-fa")?.as_str() {
                    "on" | "1" | "true" => FlashAttn::On,
                    "off" | "0" | "false" => FlashAttn::Off,
                    "auto" | "-1" => FlashAttn::Auto,
                    v => {
                        return Err(EstimateError::param(
                            "-fa",
                            format!("`{v}`: on, off or auto"),
                        ));
                    }
                };
            }
            "-ngl" | "--gpu-layers" | "--n-gpu-layers" => {
                p.gpu_layers = gpu_layers("-ngl", &value("-ngl")?)?;
            }
            "-ngld" | "--gpu-layers-draft" | "--n-gpu-layers-draft" | "--spec-draft-ngl" => {
                out.draft_gpu_layers = gpu_layers("-ngld", &value("-ngld")?)?;
            }
            "--spec-draft-n-max" => {
                out.draft_n_max = num("--spec-draft-n-max", &value("--spec-draft-n-max")?)?;
            }
            "-sm" | "--split-mode" => {
                p.split_mode = match value("-sm")?.as_str() {
                    "none" => SplitMode::None,
                    "layer" => SplitMode::Layer,
                    "row" => SplitMode::Row,
                    v => {
                        return Err(EstimateError::param(
                            "-sm",
                            format!("`{v}`: none, layer or row (tensor is not estimated)"),
                        ));
                    }
                };
            }
            "-ts" | "--tensor-split" => {
                p.tensor_split = value("-ts")?
                    .split([',', '/'])
                    .map(|x| {
                        x.trim().parse::<f32>().map_err(|_| {
                            EstimateError::param("-ts", format!("`{x}` is not a number"))
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "-mg" | "--main-gpu" => p.main_gpu = num("-mg", &value("-mg")?)?,
            "-b" | "--batch-size" => p.batch = num("-b", &value("-b")?)?,
            "-ub" | "--ubatch-size" => p.ubatch = num("-ub", &value("-ub")?)?,
            "--swa-full" => p.swa_full = true,
            "-lm" | "--load-mode" => {
                p.mmap = match value("-lm")?.as_str() {
                    "auto" | "mmap" | "mmap+mlock" => true,
                    "none" | "mlock" | "dio" => false,
                    v => {
                        return Err(EstimateError::param(
                            "-lm",
                            format!("`{v}`: auto, none, mmap, mlock, mmap+mlock or dio"),
                        ));
                    }
                };
            }
            "-kvo" | "--kv-offload" => p.kv_offload = true,
            "-nkvo" | "--no-kv-offload" => p.kv_offload = false,
            "--repack" => p.repack = true,
            "-nr" | "--no-repack" => p.repack = false,
            "--rpc" => {
                let v = value("--rpc")?;
                for endpoint in v.split(',') {
                    if endpoint
                        .rsplit_once(':')
                        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
                    {
                        return Err(EstimateError::param(
                            "--rpc",
                            format!("`{endpoint}` is not host:port"),
                        ));
                    }
                    out.rpc.push(endpoint.to_owned());
                }
            }
            "--op-offload" => p.op_offload = true,
            "--no-op-offload" => p.op_offload = false,
            "-fitt" | "--fit-target" => {
                let v = value("-fitt")?;
                let first = v.split(',').next().unwrap_or_default();
                p.fit_target = num::<u64>("-fitt", first)? << 20;
            }
            "-md" | "--model-draft" | "--spec-draft-model" => {
                out.draft = Some(value("-md")?.into());
            }
            "-mm" | "--mmproj" => out.mmproj = Some(value("-mm")?.into()),
            "--lora" => out
                .lora
                .extend(value("--lora")?.split(',').map(PathBuf::from)),
            "-ot" | "--override-tensor" => {
                for pair in value("-ot")?.split(',') {
                    let (pattern, buffer) = pair.split_once('=').ok_or_else(|| {
                        EstimateError::param(
                            "-ot",
                            format!("`{pair}`: invalid value (PATTERN=BUFFER)"),
                        )
                    })?;
                    let device = match buffer {
                        "CPU" => Device::Host,
                        b => Device::Gpu(
                            b.strip_prefix("CUDA")
                                .and_then(|i| i.parse().ok())
                                .ok_or_else(|| {
                                    EstimateError::param(
                                        "-ot",
                                        format!("unknown buffer type `{b}` (CPU, CUDA0, CUDA1, …)"),
                                    )
                                })?,
                        ),
                    };
                    p.overrides.push(TensorOverride::new(pattern, device));
                }
            }
            "-cmoe" | "--cpu-moe" => p
                .overrides
                .push(TensorOverride::new(FFN_EXPS_REGEX, Device::Host)),
            "-ncmoe" | "--n-cpu-moe" | "-ncffn" | "--n-cpu-ffn" => {
                let moe = matches!(flag, "-ncmoe" | "--n-cpu-moe");
                let name = if moe { "--n-cpu-moe" } else { "--n-cpu-ffn" };
                let n: u32 = num(name, &value(name)?)?;
                let regex = if moe { FFN_EXPS_REGEX } else { FFN_DENSE_REGEX };
                for i in 0..n.min(1 << 16) {
                    p.overrides.push(TensorOverride::new(
                        format!("blk\\.{i}{regex}"),
                        Device::Host,
                    ));
                }
            }
            other => {
                out.ignored.push(other.to_owned());
                if inline.is_none()
                    && !SWITCHES.contains(&other)
                    && it.peek().is_some_and(|n| !n.starts_with('-'))
                {
                    out.ignored.push(it.next().unwrap_or_default().to_owned());
                }
            }
        }
    }
    Ok(out)
}

fn num<T: std::str::FromStr>(flag: &'static str, v: &str) -> Result<T, EstimateError> {
    v.trim()
        .parse()
        .map_err(|_| EstimateError::param(flag, format!("`{v}` is not a number")))
}

fn cache_type(flag: &'static str, v: &str) -> Result<GgmlType, EstimateError> {
    GgmlType::from_name(v).ok_or_else(|| {
        EstimateError::param(
            flag,
            format!(
                "`{v}`: allowed values are f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1"
            ),
        )
    })
}

fn gpu_layers(flag: &'static str, v: &str) -> Result<GpuLayers, EstimateError> {
    Ok(match v {
        "auto" => GpuLayers::Auto,
        "all" => GpuLayers::All,
        n => {
            let n: i64 = num(flag, n)?;
            if n < 0 {
                GpuLayers::Auto
            } else {
                GpuLayers::Count(u32::try_from(n).unwrap_or(u32::MAX))
            }
        }
    })
}
