//! The estimator's rules that need no llama-server run: refusals with llama-server's own
//! messages, the flag parser, the inverse questions, attachments (draft, projector, `LoRA`), and
//! hostile metadata. The numbers are derived here from llama.cpp's formulas, never copied from a
//! run.

use cortex_gguf::estimate::{
    self, Device, Draft, EstimateError, FlashAttn, GpuLayers, LlamaParams, Model, Parallel,
    parse_llama_args,
};
use cortex_gguf::{GgmlType, Gguf, GgufBuilder, Gpu, OwnedValue};

const GIB: u64 = 1 << 30;

/// A llama-shaped model: `n` layers, 1024 wide, 8 KV heads of 128, 32,000 tokens, f16.
fn model(n: u32) -> Model {
    let (e, v) = (1024u64, 32_000u64);
    let mut b = GgufBuilder::new()
        .kv("general.architecture", "llama")
        .kv("llama.block_count", n)
        .kv("llama.context_length", 32_768u32)
        .kv("llama.embedding_length", 1024u32)
        .kv("llama.feed_forward_length", 4096u32)
        .kv("llama.attention.head_count", 8u32)
        .kv("llama.attention.head_count_kv", 8u32)
        .kv("llama.vocab_size", 32_000u32)
        .tensor("token_embd.weight", [e, v], GgmlType::F16)
        .tensor("output.weight", [e, v], GgmlType::F16);
    for i in 0..n {
        b = b
            .tensor(format!("blk.{i}.attn_q.weight"), [e, e], GgmlType::F16)
            .tensor(format!("blk.{i}.ffn_up.weight"), [e, 4096], GgmlType::F16);
    }
    Model::from_gguf(&Gguf::parse(&b.build()).unwrap()).unwrap()
}

/// KV bytes per cell for this model: layers × 2 × 1024 values × 2 bytes.
fn kv_cell(n: u64) -> u64 {
    n * 2 * 1024 * 2
}

#[test]
fn quantized_v_without_flash_attention_is_refused_with_llama_servers_reason() {
    let p = LlamaParams {
        cache_type_v: GgmlType::Q8_0,
        flash_attn: FlashAttn::Off,
        ..LlamaParams::default()
    };
    let err = estimate::estimate(&model(2), &p, &[]).unwrap_err();
    assert_eq!(
        err,
        EstimateError::Refused {
            reason: "quantized V cache requires flash_attn to be enabled".to_owned()
        }
    );
    // With -fa auto llama-server turns flash attention on instead.
    let p = LlamaParams {
        cache_type_v: GgmlType::Q8_0,
        ..LlamaParams::default()
    };
    assert!(
        estimate::estimate(&model(2), &p, &[])
            .unwrap()
            .context
            .flash_attn
    );
}

#[test]
fn out_of_range_options_name_the_flag() {
    let m = model(2);
    let cases = [
        (
            LlamaParams {
                parallel: Parallel::Slots(0),
                ..LlamaParams::default()
            },
            "option -np: 0 slots",
        ),
        (
            LlamaParams {
                ubatch: 0,
                ..LlamaParams::default()
            },
            "option -ub",
        ),
        (
            LlamaParams {
                cache_type_k: GgmlType::Q4_K,
                ..LlamaParams::default()
            },
            "option -ctk: Q4_K",
        ),
        (
            LlamaParams {
                tensor_split: vec![f32::NAN],
                ..LlamaParams::default()
            },
            "option -ts",
        ),
    ];
    for (p, want) in cases {
        let err = estimate::estimate(&m, &p, &[]).unwrap_err().to_string();
        assert!(err.starts_with(want), "{err}");
    }
}

#[test]
fn context_rules() {
    let m = model(2);
    // -c 0 takes the training context; -c is padded to 256.
    let e = estimate::estimate(&m, &LlamaParams::default(), &[]).unwrap();
    assert_eq!(e.context.n_ctx, 32_768);
    let p = LlamaParams {
        ctx_size: 1000,
        ..LlamaParams::default()
    };
    let e = estimate::estimate(&m, &p, &[]).unwrap();
    assert_eq!(e.context.n_ctx, 1024);
    assert_eq!(e.host().kv_full, 1024 * kv_cell(2));
    // Auto parallel: 4 slots, unified; -np 3 without -kvu: 3 streams of pad(1000/3) = 512 cells,
    // so n_ctx becomes 1536.
    assert_eq!((e.context.n_seq, e.context.kv_unified), (4, true));
    let p = LlamaParams {
        ctx_size: 1000,
        parallel: Parallel::Slots(3),
        ..LlamaParams::default()
    };
    let e = estimate::estimate(&m, &p, &[]).unwrap();
    assert_eq!((e.context.n_ctx_seq, e.context.n_ctx), (512, 1536));
    assert_eq!(e.host().kv_full, 1536 * kv_cell(2));
    assert!(e.notes.iter().any(|n| n.contains("rounding down to 1536")));
    // The output buffer: n_vocab × max(n_outputs, n_seq) floats.
    assert_eq!(e.host().output, 32_000 * 3 * 4);
}

#[test]
fn flags_are_read_as_llama_server_spells_them() {
    let a = parse_llama_args(&[
        "-m",
        "m.gguf",
        "--host",
        "0.0.0.0",
        "-c",
        "8192",
        "-np",
        "2",
        "-no-kvu",
        "-ctk",
        "q8_0",
        "--cache-type-v=q4_0",
        "-fa",
        "on",
        "-ngl",
        "all",
        "-ts",
        "3,1",
        "-mg",
        "1",
        "-ub",
        "256",
        "--swa-full",
        "-lm",
        "none",
        "-nkvo",
        "--no-repack",
        "--jinja",
        "-md",
        "d.gguf",
        "-ngld",
        "12",
        "--spec-draft-n-max",
        "8",
        "--lora",
        "a.gguf,b.gguf",
        "-fitt",
        "2048",
    ])
    .unwrap();
    let p = &a.params;
    assert_eq!(a.model.as_deref(), Some(std::path::Path::new("m.gguf")));
    assert_eq!(
        (p.ctx_size, p.parallel, p.kv_unified),
        (8192, Parallel::Slots(2), Some(false))
    );
    assert_eq!(
        (p.cache_type_k, p.cache_type_v),
        (GgmlType::Q8_0, GgmlType(2))
    );
    assert_eq!(
        (p.flash_attn, p.gpu_layers),
        (FlashAttn::On, GpuLayers::All)
    );
    assert_eq!(
        (p.tensor_split.clone(), p.main_gpu, p.ubatch),
        (vec![3.0, 1.0], 1, 256)
    );
    assert!(p.swa_full && !p.mmap && !p.kv_offload && !p.repack);
    assert_eq!(p.fit_target, 2048 << 20);
    assert_eq!(
        (a.draft_gpu_layers, a.draft_n_max),
        (GpuLayers::Count(12), 8)
    );
    assert_eq!(a.lora.len(), 2);
    assert_eq!(a.ignored, ["--host", "0.0.0.0", "--jinja"]);

    for (args, want) in [
        (&["-c", "lots"][..], "option -c: `lots` is not a number"),
        (
            &["-ctk", "q3_k_m"][..],
            "option -ctk: `q3_k_m`: allowed values",
        ),
        (&["-fa"][..], "option -fa: needs a value"),
        (&["-sm", "diagonal"][..], "option -sm: `diagonal`"),
    ] {
        let err = parse_llama_args(args).unwrap_err().to_string();
        assert!(err.starts_with(want), "{err}");
    }
}

#[test]
fn inverse_questions() {
    let m = model(8);
    let weights = m.weight_bytes();
    // One GPU that holds the weights and about 4096 cells of KV beyond everything else.
    let cell = kv_cell(8);
    let base = LlamaParams {
        gpu_layers: GpuLayers::All,
        parallel: Parallel::Slots(1),
        ..LlamaParams::default()
    };
    let gpu = Gpu::new(0, "small", weights + 4096 * cell + (512 << 20));
    let best = estimate::max_context(&m, &base, std::slice::from_ref(&gpu), 0)
        .unwrap()
        .unwrap();
    let fits = |ctx: u32| {
        let p = LlamaParams {
            ctx_size: ctx,
            ..base.clone()
        };
        estimate::estimate(&m, &p, std::slice::from_ref(&gpu))
            .unwrap()
            .fits()
    };
    assert!(
        fits(best) && !fits(best + 256),
        "{best} is the largest multiple of 256 that fits"
    );
    assert_eq!(best % 256, 0);

    // -ngl: the largest count that fits, and fewer always fit.
    let p = LlamaParams {
        ctx_size: 32_768,
        ..base.clone()
    };
    let ngl = estimate::max_gpu_layers(&m, &p, std::slice::from_ref(&gpu), 0).unwrap();
    let at = |n: u32| {
        let q = LlamaParams {
            gpu_layers: GpuLayers::Count(n),
            ..p.clone()
        };
        estimate::estimate(&m, &q, std::slice::from_ref(&gpu))
            .unwrap()
            .fits()
    };
    assert!(ngl < 9 && at(ngl) && !at(ngl + 1));
    // -ngl auto resolves to what fits leaving -fitt free.
    let auto = LlamaParams {
        gpu_layers: GpuLayers::Auto,
        fit_target: 0,
        ..p.clone()
    };
    let e = estimate::estimate(&m, &auto, std::slice::from_ref(&gpu)).unwrap();
    assert_eq!(e.context.gpu_layers, ngl);

    // The ladder: each suggestion carries its estimate; the context one fits.
    let ladder = estimate::suggestions(&m, &p, std::slice::from_ref(&gpu)).unwrap();
    let flags: Vec<&str> = ladder.iter().map(|s| s.flags.as_str()).collect();
    assert!(flags.contains(&"-ctk q8_0 -ctv q8_0"), "{flags:?}");
    let ctx = ladder.iter().find(|s| s.flags.starts_with("-c ")).unwrap();
    assert!(ctx.fits);
    let q8 = ladder
        .iter()
        .find(|s| s.flags.starts_with("-ctk q8_0"))
        .unwrap();
    assert!(q8.estimate.device(0).unwrap().kv() < e.device(0).unwrap().kv() * 2);
    assert!(ladder.iter().any(|s| s.flags.starts_with("-ngl ")));
    // Nothing to suggest when it fits.
    let big = Gpu::new(0, "big", 80 * GIB);
    assert!(
        estimate::suggestions(&m, &p, std::slice::from_ref(&big))
            .unwrap()
            .is_empty()
    );

    // -ts proportional to free memory, in MiB.
    let gpus = [
        big.clone().with_free_bytes(60 * GIB),
        Gpu::new(1, "b", 24 * GIB),
    ];
    assert_eq!(estimate::split_by_free_memory(&gpus), "61440,24576");
}

#[test]
fn draft_projector_and_lora_are_counted_where_llama_cpp_puts_them() {
    let m = model(4);
    let gpu = [Gpu::new(0, "g", 80 * GIB)];
    let base = LlamaParams {
        ctx_size: 4096,
        gpu_layers: GpuLayers::All,
        ..LlamaParams::default()
    };
    let plain = estimate::estimate(&m, &base, &gpu).unwrap();

    let mut draft = Draft::new(model(2));
    draft.gpu_layers = GpuLayers::All;
    let p = LlamaParams {
        draft: Some(draft),
        ..base.clone()
    };
    let e = estimate::estimate(&m, &p, &gpu).unwrap();
    let draft_kv: u64 = e
        .buffers
        .iter()
        .filter(|b| b.part == "draft" && b.device == Device::Gpu(0))
        .filter(|b| b.kind == estimate::BufferKind::KvFull)
        .map(|b| b.bytes)
        .sum();
    assert_eq!(draft_kv, 4096 * kv_cell(2));
    // 3 drafted tokens per slot widen the target's output buffer: 4 slots × (1 + 3) rows.
    let output = |e: &estimate::Estimate| -> u64 {
        e.buffers
            .iter()
            .filter(|b| b.part == "model" && b.kind == estimate::BufferKind::Output)
            .map(|b| b.bytes)
            .sum()
    };
    assert_eq!(output(&e), 32_000 * 16 * 4);
    assert_eq!(output(&plain), 32_000 * 4 * 4);
    assert_eq!(e.context.n_outputs, 16);

    let proj = model(1);
    let p = LlamaParams {
        mmproj: Some(proj.clone()),
        ..base.clone()
    };
    let e = estimate::estimate(&m, &p, &gpu).unwrap();
    let mm: u64 = e
        .buffers
        .iter()
        .filter(|b| b.part == "mmproj")
        .map(|b| b.bytes)
        .sum();
    assert!(mm >= proj.weight_bytes());
    assert_eq!(
        e.buffers
            .iter()
            .find(|b| b.part == "mmproj")
            .unwrap()
            .device,
        Device::Gpu(0)
    );

    // A LoRA adapter's tensors go with the layers they adapt: here layer 3 on the GPU.
    let lora = GgufBuilder::new()
        .kv("general.architecture", "llama")
        .kv("general.type", "adapter")
        .kv("llama.block_count", 4u32)
        .kv("llama.embedding_length", 1024u32)
        .tensor("blk.3.attn_q.weight.lora_a", [1024, 16], GgmlType::F32)
        .tensor("blk.3.attn_q.weight.lora_b", [16, 1024], GgmlType::F32)
        .build();
    let lora = Model::from_gguf(&Gguf::parse(&lora).unwrap()).unwrap();
    let p = LlamaParams {
        lora: vec![lora],
        ..base
    };
    let e = estimate::estimate(&m, &p, &gpu).unwrap();
    let on_gpu: u64 = e
        .buffers
        .iter()
        .filter(|b| b.part == "lora" && b.device == Device::Gpu(0))
        .map(|b| b.bytes)
        .sum();
    assert_eq!(on_gpu, 2 * 1024 * 16 * 4);
}

/// Each file is refused by `Model::from_gguf` with an error starting with its message.
fn assert_refused<const N: usize>(cases: [(GgufBuilder, &str); N]) {
    for (b, want) in cases {
        let bytes = b.build();
        let err = Model::from_gguf(&Gguf::parse(&bytes).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "{err}");
    }
}

#[test]
fn hostile_metadata_is_an_error_not_a_panic() {
    let base = || {
        GgufBuilder::new()
            .kv("general.architecture", "llama")
            .kv("llama.embedding_length", 64u32)
            .kv("llama.attention.head_count", 4u32)
    };
    let cases = [
        (base(), "model metadata `llama.block_count`: missing"),
        (
            base().kv("llama.block_count", u32::MAX),
            "model metadata `llama.block_count`: 4294967295 is out of range",
        ),
        (
            base().kv("llama.block_count", "two"),
            "model metadata `llama.block_count`: \"two\" is not a count",
        ),
        (
            base().kv("llama.block_count", 4u32).kv(
                "llama.attention.head_count_kv",
                OwnedValue::array(cortex_gguf::ValueType::U32, vec![1u32.into()]),
            ),
            "model metadata `llama.attention.head_count_kv`: 1 values for 4 layers",
        ),
        (
            base()
                .kv("llama.block_count", 4u32)
                .kv("llama.attention.head_count_kv", 16_000u32)
                .kv("llama.attention.key_length", 60_000u32),
            "model metadata `llama.attention.head_count_kv`: layer 0",
        ),
    ];
    assert_refused(cases);
}

/// Expert counts and widths out of range, a u64 vocabulary count and an expert count near
/// `u64::MAX`: each an error naming its key, in debug and release alike.
#[test]
fn hostile_expert_and_vocabulary_counts_name_their_key() {
    let base = || {
        GgufBuilder::new()
            .kv("general.architecture", "llama")
            .kv("llama.block_count", 2u32)
            .kv("llama.embedding_length", 64u32)
            .kv("llama.attention.head_count", 4u32)
    };
    // Each a file llama.cpp would refuse to load, or load into an estimate that overflows.
    let cases = [
        (
            base().kv("llama.expert_count", u32::MAX),
            "model metadata `llama.expert_count`: 4294967295 is out of range",
        ),
        (
            base().kv("llama.expert_count", u64::MAX - 1),
            "model metadata `llama.expert_count`: 18446744073709551614 is not a count",
        ),
        (
            base()
                .kv("llama.expert_count", 8u32)
                .kv("llama.expert_used_count", 9u32),
            "model metadata `llama.expert_used_count`: 9 is out of range (0..=8)",
        ),
        (
            base()
                .kv("llama.expert_count", 8u32)
                .kv("llama.expert_feed_forward_length", u32::MAX),
            "model metadata `llama.expert_feed_forward_length`: 4294967295 is out of range",
        ),
        (
            base().kv("llama.vocab_size", u64::MAX),
            "model metadata `llama.vocab_size`: 18446744073709551615 is not a count",
        ),
    ];
    assert_refused(cases);
}

/// Hostile options as llama-server spells them: errors naming the flag, never an overflow.
#[test]
fn hostile_flags_name_the_flag() {
    let m = model(2);
    for (args, want) in [
        (
            "-md draft.gguf --spec-draft-n-max 4294967295",
            "option --spec-draft-n-max: 4294967295 draft tokens",
        ),
        ("-ub 4294967295", "option -ub: 4294967295: must be 1..=2^24"),
        ("-b 4294967295", "option -b: 4294967295: must be 1..=2^24"),
        (
            "-c 4294967295",
            "option -c: 4294967295 tokens is implausible",
        ),
        ("-np 4294967295", "option -np: 4294967295 slots"),
    ] {
        let args: Vec<String> = args.split(' ').map(str::to_owned).collect();
        let parsed = parse_llama_args(&args).unwrap();
        let mut p = parsed.params;
        if parsed.draft.is_some() {
            let mut draft = Draft::new(model(1));
            draft.n_max = parsed.draft_n_max;
            p.draft = Some(draft);
        }
        let err = estimate::estimate(&m, &p, &[]).unwrap_err().to_string();
        assert!(err.starts_with(want), "{args:?}: {err}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(256))]

    /// Any option values and any MoE shape give an estimate or an error: no overflow anywhere
    /// (the tests run in debug, where an overflow panics).
    #[test]
    fn any_options_and_shapes_give_an_estimate_or_an_error(
        // Mostly inside what `validate` and the metadata checks let through, where the
        // arithmetic happens; now and then beyond.
        ctx in proptest::prop_oneof![0u32..=1 << 24, proptest::num::u32::ANY],
        batch in proptest::prop_oneof![1u32..=1 << 24, proptest::num::u32::ANY],
        ubatch in proptest::prop_oneof![1u32..=1 << 24, proptest::num::u32::ANY],
        slots in 0u32..=300,
        n_max in proptest::prop_oneof![0u32..=1 << 24, proptest::num::u32::ANY],
        ngl in proptest::num::u32::ANY,
        experts in 0u32..=70_000,
        used in 0u32..=70_000,
        ff_exp in proptest::prop_oneof![0u32..=1 << 24, proptest::num::u32::ANY],
        heads in 1u32..=1 << 14,
        head_dim in 1u32..=1 << 16,
        swa in proptest::prop_oneof![0u32..=1 << 24, proptest::num::u32::ANY],
        fa in proptest::bool::ANY,
        unified in proptest::bool::ANY,
    ) {
        let bytes = GgufBuilder::new()
            .kv("general.architecture", "llama")
            .kv("llama.block_count", 2u32)
            .kv("llama.context_length", u32::MAX)
            .kv("llama.embedding_length", 64u32)
            .kv("llama.attention.head_count", heads)
            .kv("llama.attention.head_count_kv", 1u32)
            .kv("llama.attention.key_length", head_dim)
            .kv("llama.attention.value_length", head_dim)
            .kv("llama.attention.sliding_window", swa)
            .kv("llama.expert_count", experts)
            .kv("llama.expert_used_count", used)
            .kv("llama.expert_feed_forward_length", ff_exp)
            .kv("llama.vocab_size", 1u32 << 24)
            .tensor("token_embd.weight", [64u64, 256], GgmlType::F16)
            .build();
        let Ok(m) = Model::from_gguf(&Gguf::parse(&bytes).unwrap()) else {
            return Ok(());
        };
        let mut draft = Draft::new(m.clone());
        draft.n_max = n_max;
        let p = LlamaParams {
            ctx_size: ctx,
            batch,
            ubatch,
            parallel: Parallel::Slots(slots),
            kv_unified: Some(unified),
            flash_attn: if fa { FlashAttn::On } else { FlashAttn::Off },
            cache_type_v: GgmlType::F16,
            gpu_layers: GpuLayers::Count(ngl),
            draft: Some(draft),
            ..LlamaParams::default()
        };
        let gpus = [Gpu::new(0, "g", u64::MAX)];
        if let Ok(e) = estimate::estimate(&m, &p, &gpus) {
            let _ = (e.total(), e.fits(), e.host().total());
        }
    }
}

/// CUDA pads a quantized tensor whose rows are not a multiple of 512 values by one partial row
/// (`ggml_backend_cuda_buffer_type_get_alloc_size` in ggml-cuda.cu, `MATRIX_ROW_PADDING` 512 in
/// common.cuh) and aligns every tensor to 128 bytes; rows that are a multiple of 512, and tensors
/// that are not quantized, get no padding. The host aligns to 32 bytes and pads nothing.
#[test]
fn cuda_pads_quantized_rows_that_are_not_a_multiple_of_512() {
    // 2880 = 5 × 512 + 320: gpt-oss's width, a real case of unaligned rows.
    const Q4_0: GgmlType = GgmlType(2);
    let (e, ff, v) = (2880u64, 1024u64, 32_000u64);
    let gguf = GgufBuilder::new()
        .kv("general.architecture", "llama")
        .kv("llama.block_count", 1u32)
        .kv("llama.context_length", 4096u32)
        .kv("llama.embedding_length", 2880u32)
        .kv("llama.feed_forward_length", 1024u32)
        .kv("llama.attention.head_count", 8u32)
        .kv("llama.attention.head_count_kv", 8u32)
        .kv("llama.vocab_size", 32_000u32)
        .tensor("token_embd.weight", [e, v], GgmlType::F16)
        .tensor("output.weight", [e, v], Q4_0)
        .tensor("blk.0.attn_q.weight", [e, e], GgmlType::Q8_0)
        .tensor("blk.0.ffn_up.weight", [e, ff], Q4_0)
        .tensor("blk.0.ffn_down.weight", [ff, e], Q4_0)
        .tensor("blk.0.attn_norm.weight", [e], GgmlType::F32)
        .build();
    let model = Model::from_gguf(&Gguf::parse(&gguf).unwrap()).unwrap();
    let params = LlamaParams {
        ctx_size: 4096,
        gpu_layers: GpuLayers::All,
        ..LlamaParams::default()
    };
    let est = estimate::estimate(&model, &params, &[Gpu::new(0, "GPU", 80 * GIB)]).unwrap();
    // Bytes of a Q4_0 / Q8_0 row of `n` values: 18 / 34 bytes per 32.
    let q4 = |n: u64| n / 32 * 18;
    let q8 = |n: u64| n / 32 * 34;
    let align = |x: u64, a: u64| x.div_ceil(a) * a;
    // Unaligned rows (2880): one partial row of 512 − 320 = 192 values added.
    let output = align(q4(e) * v + q4(192), 128);
    let attn_q = align(q8(e) * e + q8(192), 128);
    let ffn_up = align(q4(e) * ff + q4(192), 128);
    // Aligned rows (1024 = 2 × 512): none; f32 norms: none.
    let ffn_down = align(q4(ff) * e, 128);
    let norm = align(e * 4, 128);
    let gpu = est.device(0).unwrap();
    assert_eq!(gpu.weights, output + attn_q + ffn_up + ffn_down + norm);
    // The token embeddings stay on the host, unpadded (f16, aligned to 32).
    assert_eq!(est.host().weights, align(e * v * 2, 32));
}

/// `-ot`, `--cpu-moe`, `--n-cpu-moe` and `--n-cpu-ffn` as llama.cpp applies them
/// (`llama_model_loader`'s buffer selection: the first pattern found in a tensor's name wins;
/// common/common.h's expert and dense patterns): the matching tensors stay on the host (or go to
/// the GPU named) while their layers are offloaded.
#[test]
fn tensor_overrides_place_expert_and_dense_weights() {
    use cortex_gguf::estimate::TensorOverride;
    let (e, ff, experts, v) = (512u64, 256u64, 8u64, 1000u64);
    let mut b = GgufBuilder::new()
        .kv("general.architecture", "qwen3moe")
        .kv("qwen3moe.block_count", 2u32)
        .kv("qwen3moe.context_length", 4096u32)
        .kv("qwen3moe.embedding_length", 512u32)
        .kv("qwen3moe.feed_forward_length", 1024u32)
        .kv("qwen3moe.expert_feed_forward_length", 256u32)
        .kv("qwen3moe.expert_count", 8u32)
        .kv("qwen3moe.expert_used_count", 2u32)
        .kv("qwen3moe.attention.head_count", 4u32)
        .kv("qwen3moe.attention.head_count_kv", 4u32)
        .kv("qwen3moe.vocab_size", 1000u32)
        .tensor("token_embd.weight", [e, v], GgmlType::F16)
        .tensor("output.weight", [e, v], GgmlType::F16);
    for i in 0..2 {
        b = b
            .tensor(format!("blk.{i}.attn_q.weight"), [e, e], GgmlType::F16)
            .tensor(
                format!("blk.{i}.ffn_gate_inp.weight"),
                [e, experts],
                GgmlType::F32,
            );
        for name in ["gate", "up"] {
            b = b.tensor(
                format!("blk.{i}.ffn_{name}_exps.weight"),
                [e, ff, experts],
                GgmlType::F16,
            );
        }
        b = b.tensor(
            format!("blk.{i}.ffn_down_exps.weight"),
            [ff, e, experts],
            GgmlType::F16,
        );
    }
    let model = Model::from_gguf(&Gguf::parse(&b.build()).unwrap()).unwrap();
    let gpu = [Gpu::new(0, "GPU", 80 * GIB)];
    let run = |args: &[&str]| {
        let mut all = vec!["-c", "4096", "-ngl", "all", "-lm", "none"];
        all.extend_from_slice(args);
        let params = parse_llama_args(&all).unwrap().params;
        estimate::estimate(&model, &params, &gpu).unwrap()
    };
    let align = |x: u64, a: u64| x.div_ceil(a) * a;
    let experts_of_layer = 3 * align(e * ff * experts * 2, 32);
    let embd = align(e * v * 2, 32);

    let all_on_gpu = run(&[]);
    assert_eq!(all_on_gpu.host().weights, embd);
    // --cpu-moe: every layer's experts on the host (f16: not repacked, allocated with -lm none).
    let cpu_moe = run(&["--cpu-moe"]);
    assert_eq!(cpu_moe.host().weights, embd + 2 * experts_of_layer);
    assert_eq!(
        cpu_moe.device(0).unwrap().weights + 2 * 3 * align(e * ff * experts * 2, 128),
        all_on_gpu.device(0).unwrap().weights
    );
    assert!(
        cpu_moe
            .notes
            .iter()
            .any(|n| n.contains("6 tensors placed by -ot")),
        "{:?}",
        cpu_moe.notes
    );
    // --n-cpu-moe 1: layer 0's only.
    assert_eq!(
        run(&["--n-cpu-moe", "1"]).host().weights,
        embd + experts_of_layer
    );
    assert_eq!(run(&["-ncmoe", "2"]), cpu_moe);
    // -ot: the first pattern found wins; CPU and CUDA0 by name.
    let ot = run(&["-ot", r"blk\.1\.ffn_up=CPU,ffn_up_exps=CUDA0,exps=CPU"]);
    assert_eq!(
        ot.host().weights,
        embd + 5 * align(e * ff * experts * 2, 32),
        "layer 1's up and every gate and down (5 tensors) on the host; layer 0's up on the GPU"
    );
    // --n-cpu-ffn matches dense feed-forward tensors only (none here).
    assert_eq!(run(&["--n-cpu-ffn", "2"]), all_on_gpu);

    // What llama-server refuses.
    let mut params = LlamaParams {
        gpu_layers: GpuLayers::All,
        ..LlamaParams::default()
    };
    params
        .overrides
        .push(TensorOverride::new("exps", Device::Gpu(3)));
    let err = estimate::estimate(&model, &params, &gpu).unwrap_err();
    assert!(
        err.to_string().contains("unknown buffer type CUDA3"),
        "{err}"
    );
    params.overrides = vec![TensorOverride::new("exps(", Device::Host)];
    assert!(estimate::estimate(&model, &params, &gpu).is_err());
    for bad in ["exps", "exps=VULKAN0"] {
        let err = parse_llama_args(&["-ot", bad]).unwrap_err();
        assert!(err.to_string().contains("option -ot"), "{err}");
    }
}

/// With every layer on a GPU, the host's compute buffer holds the graph's inputs: the scheduler
/// gives each input to the last backend, the CPU (`ggml_backend_sched_backend_id_from_cur`,
/// "graph input"), and copies it to the splits that read it. Measured to 0.01 MiB against
/// llama-server offloading to an RPC device (`tests/archs`); here the rule itself.
#[test]
fn a_fully_offloaded_model_keeps_its_graph_inputs_in_host_compute() {
    let model = model(4);
    let params = LlamaParams {
        ctx_size: 4096,
        parallel: Parallel::Slots(1),
        flash_attn: FlashAttn::On,
        gpu_layers: GpuLayers::All,
        ..LlamaParams::default()
    };
    let est = estimate::estimate(&model, &params, &[Gpu::new(0, "GPU", 80 * GIB)]).unwrap();
    let c = est.context;
    let (ub, kv) = (u64::from(c.n_ubatch), u64::from(c.n_ctx_seq));
    let mask = kv * ub * 2; // f16 with flash attention
    let idx = 2 * ub * 8; // K and V row indices (i64)
    let embd = 1024 * ub * 4; // inp_embd, inp_mixed_embd and the two token lookups
    let tokens = ub * (4 + 4 + 8 + 4 + 4); // ids, mixed ids, slots, row scales, positions
    let inputs = mask + idx + 4 * embd + tokens + u64::from(c.n_outputs) * 4;
    assert_eq!(est.host().compute, inputs);
    // The GPU's buffer holds the copies it reads (the mask, three activations with layer 0)
    // beside its working set.
    assert!(est.device(0).unwrap().compute > mask + 3 * embd);
    assert_eq!(
        est.buffers
            .iter()
            .find(|b| b.device == Device::Host && b.kind == estimate::BufferKind::Compute)
            .unwrap()
            .name,
        "CUDA_Host"
    );
}

/// Pipeline parallelism (`llama_context`: several devices, every layer and the output
/// offloaded, `-sm layer`, KV offloaded, no tensor overrides) makes the scheduler keep four
/// copies of every input, on the host and in each device's buffer. Measured on two RPC devices
/// in `tests/archs`; here when it applies.
#[test]
fn pipeline_parallelism_keeps_four_copies_of_the_inputs() {
    let model = model(4);
    let two = [Gpu::new(0, "A", 80 * GIB), Gpu::new(1, "B", 80 * GIB)];
    let base = LlamaParams {
        ctx_size: 4096,
        parallel: Parallel::Slots(1),
        flash_attn: FlashAttn::On,
        gpu_layers: GpuLayers::All,
        ..LlamaParams::default()
    };
    let est = estimate::estimate(&model, &base, &two).unwrap();
    let c = est.context;
    let ub = u64::from(c.n_ubatch);
    let embd = 1024 * ub * 4;
    let leafs = u64::from(c.n_ctx_seq) * ub * 2
        + 2 * ub * 8
        + 2 * embd
        + ub * 24
        + u64::from(c.n_outputs) * 4;
    assert_eq!(est.host().compute, 4 * leafs + 2 * embd);
    assert!(est.notes.iter().any(|n| n.contains("pipeline parallelism")));
    let single = estimate::estimate(&model, &base, &two[..1]).unwrap();
    assert!(est.device(0).unwrap().compute > 3 * single.device(0).unwrap().compute / 2);

    // Not with one unit on the host, with the KV cache on the host, or with -sm none.
    for p in [
        LlamaParams {
            gpu_layers: GpuLayers::Count(4),
            ..base.clone()
        },
        LlamaParams {
            kv_offload: false,
            ..base.clone()
        },
        LlamaParams {
            split_mode: estimate::SplitMode::None,
            ..base.clone()
        },
    ] {
        let est = estimate::estimate(&model, &p, &two).unwrap();
        assert!(
            !est.notes.iter().any(|n| n.contains("pipeline parallelism")),
            "{p:?}"
        );
    }
}

/// With layers on the host and micro-batches of 32 tokens or more, CUDA's `offload_op` makes the
/// scheduler run the host's weight operations on the first CUDA GPU, copying each weight in
/// (one per split, `ggml_backend_sched_split_graph`): that GPU's buffer grows by the largest
/// such weight and the host keeps only its inputs. An RPC device never asks (no `offload_op`:
/// measured in `tests/archs`, where the host keeps its layers' working set), nor does CUDA
/// with `--no-op-offload` or small micro-batches. Derived from ggml-cuda.cu and
/// ggml-backend.cpp, not measured on a GPU.
#[test]
fn cuda_runs_the_hosts_weight_operations_and_copies_the_largest_weight_in() {
    let model = model(4);
    let cuda = [Gpu::new(0, "GPU", 80 * GIB)];
    // -ngl 2 of 5: the output layer and layer 3 on the GPU; layers 0-2 (ffn_up: 1024 × 4096
    // f16, 8 MiB, the largest) on the host.
    let p = LlamaParams {
        ctx_size: 4096,
        parallel: Parallel::Slots(1),
        flash_attn: FlashAttn::On,
        gpu_layers: GpuLayers::Count(2),
        ..LlamaParams::default()
    };
    let est = estimate::estimate(&model, &p, &cuda).unwrap();
    let all_on_gpu = estimate::estimate(
        &model,
        &LlamaParams {
            gpu_layers: GpuLayers::All,
            ..p.clone()
        },
        &cuda,
    )
    .unwrap();
    let ffn_up = 1024 * 4096 * 2;
    assert_eq!(
        est.device(0).unwrap().compute,
        all_on_gpu.device(0).unwrap().compute + ffn_up
    );
    assert_eq!(est.host().compute, all_on_gpu.host().compute);
    assert!(est.notes.iter().any(|n| n.contains("--no-op-offload")));

    // -ngl 0: the output projection (1024 × 32,000 f16) is the largest weight copied in.
    let est0 = estimate::estimate(
        &model,
        &LlamaParams {
            gpu_layers: GpuLayers::Count(0),
            ..p.clone()
        },
        &cuda,
    )
    .unwrap();
    assert!(est0.device(0).unwrap().compute >= 1024 * 32_000 * 2);

    // The host keeps its layers' work: --no-op-offload, -ub 16, an RPC device.
    let kept = |p: &LlamaParams, gpus: &[Gpu]| {
        let est = estimate::estimate(&model, p, gpus).unwrap();
        let cpu_only = estimate::estimate(&model, p, &[]).unwrap();
        assert_eq!(est.host().compute, cpu_only.host().compute, "{p:?}");
        assert!(!est.notes.iter().any(|n| n.contains("--no-op-offload")));
        est.device(0).unwrap().compute
    };
    let no_op_offload = kept(
        &LlamaParams {
            op_offload: false,
            ..p.clone()
        },
        &cuda,
    );
    kept(
        &LlamaParams {
            ubatch: 16,
            batch: 16,
            ..p.clone()
        },
        &cuda,
    );
    let rpc = kept(&p, &[Gpu::rpc("127.0.0.1:50052", 80 * GIB)]);
    assert_eq!(rpc, no_op_offload);
    assert!(no_op_offload + ffn_up <= est.device(0).unwrap().compute);
}

/// Buffer names as llama-server prints them: RPC devices come first and are named by endpoint,
/// CUDA devices are counted on their own; pinned host buffers only for a CUDA device (the
/// first device for the host compute buffer, the output layer's for the output buffer).
#[test]
fn rpc_and_cuda_devices_are_named_as_llama_server_names_them() {
    let model = model(4);
    let gpus = [
        Gpu::rpc("10.0.0.2:50052", 80 * GIB),
        Gpu::new(0, "GPU", 80 * GIB),
    ];
    let p = LlamaParams {
        ctx_size: 4096,
        gpu_layers: GpuLayers::All,
        tensor_split: vec![1.0, 1.0],
        ..LlamaParams::default()
    };
    let est = estimate::estimate(&model, &p, &gpus).unwrap();
    let names = |kind: estimate::BufferKind| -> Vec<&str> {
        est.buffers
            .iter()
            .filter(|b| b.kind == kind)
            .map(|b| b.name.as_str())
            .collect()
    };
    assert_eq!(
        names(estimate::BufferKind::Weights),
        ["CPU_Mapped", "RPC0[10.0.0.2:50052]", "CUDA0"]
    );
    // The output layer is on CUDA0 (the last device): its output buffer is pinned; the host
    // compute buffer takes the first device's host type, and an RPC device has none.
    assert_eq!(names(estimate::BufferKind::Output), ["CUDA_Host"]);
    assert!(names(estimate::BufferKind::Compute).contains(&"CPU"));
    // RPC weights are laid out as the remote CPU backend does (32-byte alignment, no padding).
    let rpc_only = estimate::estimate(&model, &p, &gpus[..1]).unwrap();
    assert_eq!(
        rpc_only.buffers[1].basis(),
        estimate::Basis::Exact,
        "measured against llama-server's RPC devices"
    );
}
