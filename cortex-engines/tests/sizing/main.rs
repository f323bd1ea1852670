//! vLLM sizing from a Hugging Face model directory: `config.json` and safetensors headers only.
//!
//! The directories are written here with the real shapes of Llama 3 8B and `DeepSeek`-V2-Lite (MLA),
//! and with safetensors files that hold a header and no tensor data at all: sizing them proves
//! the tensors are never read.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "test code: byte budgets recomputed the way vLLM does, in floating point"
)]

use std::path::Path;

use cortex_engines::vllm::sizing::{self, HfModel, KvCacheDtype, SizingError, VllmParams};
use cortex_gguf::Gpu;
use serde_json::json;

const GIB: u64 = 1 << 30;

/// Writes a safetensors header (and no data) for `tensors` of `(name, shape)` in bf16.
fn header_only(path: &Path, tensors: &[(String, Vec<u64>)]) {
    let mut map = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<u64>() * 2;
        map.insert(
            name.clone(),
            json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let header = serde_json::to_vec(&serde_json::Value::Object(map)).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    std::fs::write(path, out).unwrap();
}

fn llama3_8b(dir: &Path) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
            "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
            "vocab_size": 128_256, "max_position_embeddings": 8192, "torch_dtype": "bfloat16"
        })
        .to_string(),
    )
    .unwrap();
    let mut shard = [Vec::new(), Vec::new()];
    shard[0].push(("model.embed_tokens.weight".to_owned(), vec![128_256, 4096]));
    shard[1].push(("lm_head.weight".to_owned(), vec![128_256, 4096]));
    for l in 0..32u64 {
        let s = &mut shard[usize::from(l >= 16)];
        let p = format!("model.layers.{l}");
        s.push((format!("{p}.self_attn.q_proj.weight"), vec![4096, 4096]));
        s.push((format!("{p}.self_attn.k_proj.weight"), vec![1024, 4096]));
        s.push((format!("{p}.self_attn.v_proj.weight"), vec![1024, 4096]));
        s.push((format!("{p}.self_attn.o_proj.weight"), vec![4096, 4096]));
        s.push((format!("{p}.mlp.gate_proj.weight"), vec![14336, 4096]));
        s.push((format!("{p}.mlp.up_proj.weight"), vec![14336, 4096]));
        s.push((format!("{p}.mlp.down_proj.weight"), vec![4096, 14336]));
        s.push((format!("{p}.input_layernorm.weight"), vec![4096]));
        s.push((format!("{p}.post_attention_layernorm.weight"), vec![4096]));
    }
    shard[1].push(("model.norm.weight".to_owned(), vec![4096]));
    header_only(&dir.join("model-00001-of-00002.safetensors"), &shard[0]);
    header_only(&dir.join("model-00002-of-00002.safetensors"), &shard[1]);
    shard
        .iter()
        .flatten()
        .map(|(_, s)| s.iter().product::<u64>() * 2)
        .sum()
}

/// A fresh, empty directory (earlier runs' files removed).
fn tmp(name: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("sizing")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn llama3_8b_on_one_and_two_gpus() {
    let dir = tmp("llama3-8b");
    let bytes = llama3_8b(&dir);
    let m = HfModel::open(&dir).unwrap();
    assert_eq!(m.weight_bytes, bytes);
    assert_eq!(m.parameters, bytes / 2);
    assert_eq!((m.layers, m.kv_heads, m.head_dim), (32, 8, 128));

    // KV per token: 32 layers × 8 KV heads × 128 × 2 (K and V) × 2 bytes = 128 KiB.
    let l4 = [Gpu::new(0, "NVIDIA L4", 24 * GIB)];
    let p = VllmParams {
        max_model_len: Some(8192),
        ..VllmParams::default()
    };
    let s = sizing::size(&m, &p, &l4).unwrap();
    assert_eq!(s.kv_bytes_per_token, 32 * 8 * 128 * 2 * 2);
    assert_eq!(s.weights_per_gpu, bytes);
    assert_eq!(s.budget_per_gpu, (24.0 * 0.92 * GIB as f64) as u64);
    assert_eq!(
        s.kv_per_gpu,
        s.budget_per_gpu - s.weights_per_gpu - s.activation_per_gpu - s.non_torch_per_gpu
    );
    assert_eq!(s.kv_tokens % 16, 0);
    assert_eq!(s.kv_tokens, s.kv_per_gpu / (s.kv_bytes_per_token * 16) * 16);
    assert!(s.fits, "{s:?}");
    assert!((s.max_concurrency - s.kv_tokens as f64 / 8192.0).abs() < 1e-9);

    // A 16 GiB GPU cannot hold 16 GB of bf16 weights: the ladder offers FP8 and TP 2.
    let t4 = [Gpu::new(0, "T4", 16 * GIB), Gpu::new(1, "T4", 16 * GIB)];
    let s = sizing::size(&m, &p, &t4).unwrap();
    assert!(!s.fits);
    assert_eq!(s.kv_per_gpu, 0);
    let ladder = sizing::suggestions(&m, &p, &t4).unwrap();
    let flags: Vec<&str> = ladder.iter().map(|s| s.flags.as_str()).collect();
    assert_eq!(
        flags[..3],
        [
            "--kv-cache-dtype fp8",
            "--quantization fp8",
            "--tensor-parallel-size 2"
        ]
    );
    let tp2 = &ladder[2].sizing;
    assert_eq!(tp2.weights_per_gpu, bytes.div_ceil(2));
    // KV heads split over TP: half the bytes per token on each GPU.
    assert_eq!(tp2.kv_bytes_per_token, 32 * 4 * 128 * 2 * 2);
    assert!(tp2.fits);
    let fp8 = &ladder[1].sizing;
    assert!(fp8.weights_per_gpu < bytes * 6 / 10);
    assert!(sizing::suggestions(&m, &p, &l4).unwrap().is_empty());

    // FP8 KV halves the bytes per token.
    let p8 = VllmParams {
        kv_cache_dtype: KvCacheDtype::Fp8,
        ..p.clone()
    };
    assert_eq!(
        sizing::size(&m, &p8, &l4).unwrap().kv_bytes_per_token,
        32 * 8 * 128 * 2
    );
    // More GPUs than given, or heads that do not divide: refused like vLLM does.
    let p4 = VllmParams {
        tensor_parallel: 4,
        ..p.clone()
    };
    assert!(matches!(
        sizing::size(&m, &p4, &t4),
        Err(SizingError::Param { .. })
    ));
    let p3 = VllmParams {
        tensor_parallel: 3,
        ..p
    };
    let three = [t4[0].clone(), t4[1].clone(), t4[0].clone()];
    let err = sizing::size(&m, &p3, &three).unwrap_err().to_string();
    assert!(
        err.contains("32 attention heads are not divisible by 3"),
        "{err}"
    );
}

#[test]
fn mla_keeps_one_latent_per_token() {
    let dir = tmp("deepseek-v2-lite");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        json!({
            "architectures": ["DeepseekV2ForCausalLM"], "hidden_size": 2048, "num_attention_heads": 16,
            "num_hidden_layers": 27, "num_key_value_heads": 16, "kv_lora_rank": 512,
            "qk_rope_head_dim": 64, "vocab_size": 102_400, "max_position_embeddings": 163_840,
            "torch_dtype": "bfloat16", "intermediate_size": 10944
        })
        .to_string(),
    )
    .unwrap();
    header_only(
        &dir.join("model.safetensors"),
        &[("model.embed_tokens.weight".to_owned(), vec![102_400, 2048])],
    );
    let m = HfModel::open(&dir).unwrap();
    assert_eq!(m.mla_width, Some(576));
    let s = sizing::size(&m, &VllmParams::default(), &[Gpu::new(0, "H100", 80 * GIB)]).unwrap();
    assert_eq!(s.kv_bytes_per_token, 27 * 576 * 2);
    assert_eq!(s.max_model_len, 163_840);
}

#[test]
fn bad_directories_name_the_file_and_field() {
    let dir = tmp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let err = HfModel::open(&dir).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("No such file"),
        "{err}"
    );

    std::fs::write(
        dir.join("config.json"),
        r#"{"hidden_size": 64, "num_attention_heads": 4}"#,
    )
    .unwrap();
    let err = HfModel::open(&dir).unwrap_err().to_string();
    assert!(
        err.ends_with("config.json: `num_hidden_layers`: missing or not a positive integer"),
        "{err}"
    );

    std::fs::write(
        dir.join("config.json"),
        r#"{"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}"#,
    )
    .unwrap();
    let err = HfModel::open(&dir).unwrap_err().to_string();
    assert!(err.contains("no *.safetensors files"), "{err}");

    // A header whose offsets overlap is refused by the safetensors crate's validation.
    let bad = json!({"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}, "b": {"dtype": "BF16", "shape": [2], "data_offsets": [2, 6]}}).to_string();
    let mut bytes = (bad.len() as u64).to_le_bytes().to_vec();
    bytes.extend(bad.as_bytes());
    std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    let err = HfModel::open(&dir).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors: safetensors header:"),
        "{err}"
    );

    // A length prefix beyond the crate's limit, and a truncated file.
    std::fs::write(dir.join("model.safetensors"), u64::MAX.to_le_bytes()).unwrap();
    assert!(
        HfModel::open(&dir)
            .unwrap_err()
            .to_string()
            .contains("too large")
    );
    std::fs::write(dir.join("model.safetensors"), [1u8, 2, 3]).unwrap();
    assert!(matches!(HfModel::open(&dir), Err(SizingError::Io { .. })));
}

/// `config.json` fields near the limits and hostile options: an error naming the field or flag,
/// in debug and release alike, never an overflow.
#[test]
fn hostile_fields_and_flags_name_themselves() {
    let dir = tmp("hostile");
    llama3_8b(&dir);
    let config = |patch: serde_json::Value| {
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        std::fs::write(dir.join("config.json.hostile"), c.to_string()).unwrap();
        let hostile = tmp("hostile-case");
        std::fs::create_dir_all(&hostile).unwrap();
        std::fs::copy(dir.join("config.json.hostile"), hostile.join("config.json")).unwrap();
        for f in [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ] {
            std::fs::copy(dir.join(f), hostile.join(f)).unwrap();
        }
        HfModel::open(&hostile)
    };
    for (field, value) in [
        ("vocab_size", json!(u64::MAX)),
        ("hidden_size", json!(u64::MAX - 1)),
        ("num_key_value_heads", json!(1u64 << 40)),
        ("head_dim", json!(u64::from(u32::MAX))),
        ("intermediate_size", json!(1u64 << 60)),
        ("max_position_embeddings", json!(u64::MAX)),
        ("kv_lora_rank", json!(u64::MAX)),
    ] {
        let err = config(json!({ field: value })).unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{field}`: ")) && err.contains("implausible"),
            "{field}: {err}"
        );
    }

    let model = HfModel::open(&dir).unwrap();
    let gpus = [Gpu::new(0, "H100", 80 * GIB)];
    for (params, flag) in [
        (
            VllmParams {
                max_num_batched_tokens: u64::MAX,
                ..VllmParams::default()
            },
            "--max-num-batched-tokens",
        ),
        (
            VllmParams {
                max_num_seqs: u64::MAX,
                ..VllmParams::default()
            },
            "--max-num-seqs",
        ),
        (
            VllmParams {
                max_model_len: Some(u64::MAX),
                ..VllmParams::default()
            },
            "--max-model-len",
        ),
        (
            VllmParams {
                block_size: u64::MAX,
                ..VllmParams::default()
            },
            "--block-size",
        ),
        (
            VllmParams {
                tensor_parallel: u32::MAX,
                pipeline_parallel: u32::MAX,
                ..VllmParams::default()
            },
            "--tensor-parallel-size",
        ),
    ] {
        let err = sizing::size(&model, &params, &gpus)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(flag), "{flag}: {err}");
        // The ladder of suggestions says the same.
        assert!(sizing::suggestions(&model, &params, &gpus).is_err());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(256))]

    /// Any options within or beyond the bounds size the model or give an error: never a panic.
    #[test]
    fn any_options_size_or_fail_cleanly(
        tp in proptest::prop_oneof![4 => 0u32..=4, 1 => proptest::num::u32::ANY],
        pp in proptest::prop_oneof![4 => 0u32..=2, 1 => proptest::num::u32::ANY],
        seqs in proptest::num::u64::ANY,
        batched in proptest::prop_oneof![0u64..=1 << 32, proptest::num::u64::ANY],
        len in proptest::option::of(proptest::num::u64::ANY),
        block in proptest::prop_oneof![0u64..=1 << 16, proptest::num::u64::ANY],
        utilization in 0.0f64..=1.5,
        fp8 in proptest::bool::ANY,
    ) {
        let dir = tmp("any-options");
        if !dir.join("config.json").exists() {
            llama3_8b(&dir);
        }
        let model = HfModel::open(&dir).unwrap();
        let gpus = vec![Gpu::new(0, "g", u64::MAX); 8];
        let params = VllmParams {
            tensor_parallel: tp,
            pipeline_parallel: pp,
            max_num_seqs: seqs,
            max_num_batched_tokens: batched,
            max_model_len: len,
            block_size: block,
            gpu_memory_utilization: utilization,
            kv_cache_dtype: if fp8 { KvCacheDtype::Fp8 } else { KvCacheDtype::Auto },
            quantize_fp8: fp8,
        };
        let _ = sizing::suggestions(&model, &params, &gpus);
    }
}

/// A `vllm_sizing` fuzz input (see the target's docs for the framing).
#[allow(
    clippy::too_many_arguments,
    reason = "the target's framing, field by field"
)]
fn framed(
    (tp, pp): (u32, u32),
    words: [u64; 6],
    utilization: u16,
    flags: u8,
    gpus_mib: &[u32],
    config: &serde_json::Value,
) -> Vec<u8> {
    let mut out = tp.to_le_bytes().to_vec();
    out.extend_from_slice(&pp.to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&utilization.to_le_bytes());
    out.push(flags);
    out.push(u8::try_from(gpus_mib.len()).unwrap());
    for mib in gpus_mib {
        out.extend_from_slice(&mib.to_le_bytes());
    }
    out.extend_from_slice(config.to_string().as_bytes());
    out
}

/// The configurations of the `vllm_sizing` seeds: a dense GQA model, MLA with FP8 weights, a
/// multimodal config with its text model under `text_config`.
fn seed_configs() -> [serde_json::Value; 3] {
    let llama = json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "vocab_size": 128_256, "max_position_embeddings": 8192, "torch_dtype": "bfloat16"
    });
    let mla = json!({
        "architectures": ["DeepseekV2ForCausalLM"], "hidden_size": 2048, "intermediate_size": 10944,
        "num_attention_heads": 16, "num_hidden_layers": 27, "kv_lora_rank": 512,
        "qk_rope_head_dim": 64, "vocab_size": 102_400, "max_position_embeddings": 163_840,
        "torch_dtype": "bfloat16", "quantization_config": {"quant_method": "fp8"}
    });
    let multimodal = json!({
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": {"hidden_size": 2560, "num_attention_heads": 8, "num_hidden_layers": 34,
            "num_key_value_heads": 4, "head_dim": 256, "intermediate_size": 10240,
            "vocab_size": 262_208, "max_position_embeddings": 131_072, "dtype": "bfloat16"}
    });
    [llama, mla, multimodal]
}

/// The `vllm_sizing` fuzz target's seeds (`fuzz/seeds/vllm_sizing`), framed as the target reads
/// them: each sizes cleanly. Regenerate after a deliberate change with
/// `CORTEX_WRITE_SEEDS=1 cargo test -p cortex-engines --test sizing`.
#[test]
fn committed_fuzz_seeds_are_what_this_makes() {
    let [llama, mla, multimodal] = seed_configs();
    let gb16 = 16_060_522_496;
    let seeds = [
        (
            "llama-one-h100.bin",
            framed(
                (1, 1),
                [256, 8192, 0, 16, gb16, gb16 / 2],
                920,
                0,
                &[81_559],
                &llama,
            ),
        ),
        (
            "llama-tp2-fp8.bin",
            framed(
                (2, 1),
                [64, 2048, 8192, 16, gb16, gb16 / 2],
                900,
                3,
                &[24_576, 24_576],
                &llama,
            ),
        ),
        (
            "mla-fp8.bin",
            framed(
                (1, 1),
                [32, 4096, 32_768, 16, 15 << 30, 15 << 30],
                950,
                1,
                &[81_559],
                &mla,
            ),
        ),
        (
            "multimodal-text-config.bin",
            framed(
                (1, 2),
                [128, 8192, 0, 32, 8 << 30, 4 << 30],
                850,
                0,
                &[24_576, 24_576, 24_576],
                &multimodal,
            ),
        ),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/vllm_sizing");
    let write = std::env::var_os("CORTEX_WRITE_SEEDS").is_some();
    for (name, bytes) in seeds {
        let path = root.join(name);
        if write {
            std::fs::create_dir_all(&root).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == bytes,
            "{} differs; regenerate with CORTEX_WRITE_SEEDS=1",
            path.display()
        );
    }
    // Each reaches the sizing.
    for config in [&llama, &mla, &multimodal] {
        let model = HfModel::from_config(&config.to_string(), gb16, gb16 / 2).unwrap();
        sizing::size(
            &model,
            &VllmParams::default(),
            &[Gpu::new(0, "g", 80 * GIB)],
        )
        .unwrap();
    }
}

/// A plan for a model that will not fit the GPUs it is given is refused, with the changes that
/// would fit as settings; one that fits is planned.
#[test]
fn a_plan_that_will_not_fit_its_gpus_is_refused_with_the_ladder() {
    use cortex_core::{Engine, EngineSettings, ModelId, ModelSource, ModelSpec, PlanContext};
    use cortex_core::{PlanError, TargetKind};
    use cortex_engines::VllmEngine;

    let dir = tmp("llama3-8b-plan");
    llama3_8b(&dir);
    let spec = |settings: &str| {
        ModelSpec::new(
            ModelId::new("llama").unwrap(),
            "vllm".into(),
            ModelSource::Path(dir.clone()),
        )
        .with_settings(toml::from_str::<EngineSettings>(settings).unwrap())
    };
    let cx = PlanContext::new(TargetKind::Process, 0, 8000);
    let small = VllmEngine::new().with_gpus([
        Gpu::new(0, "NVIDIA T4", 16 * GIB),
        Gpu::new(1, "NVIDIA T4", 16 * GIB),
    ]);
    // One 16 GiB GPU: 16 GB of bf16 weights alone exceed 0.92 × 16 GiB.
    let refused = small.plan(&spec("max_model_len = 8192\ngpus = { count = 1 }"), &cx);
    let Err(PlanError::Invalid { diagnostics, .. }) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    let d = diagnostics.iter().find(|d| d.is_error()).unwrap();
    assert_eq!(d.field, "settings");
    assert!(
        d.message
            .starts_with("the model does not fit the 1 GPU it is given: of 14.72 GiB per GPU (0.92 × 16.00 GiB), weights take 14.96 GiB"),
        "{}",
        d.message
    );
    let suggestion = d.suggestion.as_deref().unwrap();
    assert!(
        suggestion.contains("quantization = \"fp8\" (fits:"),
        "{suggestion}"
    );
    assert!(
        suggestion.contains("kv_cache_dtype = \"fp8\" (not enough alone"),
        "{suggestion}"
    );
    // Both GPUs: tensor parallel 2 fits (and is one of the changes on one GPU given two).
    small
        .plan(&spec("max_model_len = 8192\ntensor_parallel_size = 2"), &cx)
        .unwrap();
    // No GPUs given (a CPU model) or no inventory: not sized.
    small
        .plan(&spec("max_model_len = 8192\ngpus = \"none\""), &cx)
        .unwrap();
    VllmEngine::new()
        .plan(&spec("max_model_len = 8192"), &cx)
        .unwrap();
    // A large GPU: planned.
    VllmEngine::new()
        .with_gpus([Gpu::new(0, "NVIDIA H100", 80 * GIB)])
        .plan(&spec("max_model_len = 8192"), &cx)
        .unwrap();
}
