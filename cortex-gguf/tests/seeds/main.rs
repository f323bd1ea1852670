//! The fuzz seed corpus (`fuzz/seeds/`), made by the writer: this test checks that the committed
//! seeds are exactly what the writer makes today. To regenerate them after a deliberate change:
//! `CORTEX_WRITE_SEEDS=1 cargo test -p cortex-gguf --test seeds`.

use std::path::Path;

use cortex_gguf::{ByteOrder, GgmlType, Gguf, GgufBuilder, Gpu, OwnedValue, ValueType, estimate};

fn model(b: GgufBuilder) -> GgufBuilder {
    b.kv("general.architecture", "llama")
        .kv("general.name", "seed")
        .kv("general.file_type", 15u32)
        .kv("llama.block_count", 2u32)
        .kv("llama.context_length", 4096u64)
        .kv(
            "llama.attention.head_count",
            OwnedValue::array(ValueType::U32, vec![8u32.into(), 4u32.into()]),
        )
        .kv("llama.rope.freq_base", 10000.0f32)
        .kv(
            "tokenizer.ggml.tokens",
            OwnedValue::strings(["<unk>", "<s>", "</s>", "héllo"]),
        )
        .kv(
            "tokenizer.ggml.scores",
            OwnedValue::array(ValueType::F32, vec![0.0f32.into(), (-1.5f32).into()]),
        )
        .kv(
            "tokenizer.ggml.token_type",
            OwnedValue::array(ValueType::I32, vec![2i32.into(), 3i32.into()]),
        )
        .kv(
            "flags",
            OwnedValue::array(ValueType::Bool, vec![true.into()]),
        )
        .kv("i8", -3i8)
        .kv("u16", 7u16)
        .kv("i64", -9i64)
        .kv("f64", 2.5f64)
        .tensor("token_embd.weight", [256, 4], GgmlType::Q4_K)
        .tensor("blk.0.attn_norm.weight", [8], GgmlType::F32)
        .tensor("output.weight", [32, 4], GgmlType::Q8_0)
}

/// A model the estimator takes: llama-shaped, `n` layers; with experts and a sliding window on
/// request (the shapes whose arithmetic differs).
fn estimable(n: u32, experts: bool, swa: bool) -> Vec<u8> {
    let arch = if swa { "gemma3" } else { "llama" };
    let mut b = GgufBuilder::new()
        .kv("general.architecture", arch)
        .kv(format!("{arch}.block_count"), n)
        .kv(format!("{arch}.context_length"), 8192u32)
        .kv(format!("{arch}.embedding_length"), 256u32)
        .kv(format!("{arch}.feed_forward_length"), 1024u32)
        .kv(format!("{arch}.attention.head_count"), 8u32)
        .kv(format!("{arch}.attention.head_count_kv"), 2u32)
        .kv(format!("{arch}.vocab_size"), 1000u32)
        .tensor("token_embd.weight", [256, 1000], GgmlType::Q4_K)
        .tensor("output.weight", [256, 1000], GgmlType::Q8_0);
    if experts {
        b = b
            .kv(format!("{arch}.expert_count"), 8u32)
            .kv(format!("{arch}.expert_used_count"), 2u32)
            .kv(format!("{arch}.expert_feed_forward_length"), 512u32);
    }
    if swa {
        b = b.kv(format!("{arch}.attention.sliding_window"), 512u32);
    }
    for i in 0..n {
        b = b
            .tensor(format!("blk.{i}.attn_q.weight"), [256, 256], GgmlType::Q4_K)
            .tensor(format!("blk.{i}.attn_k.weight"), [256, 64], GgmlType::Q4_K)
            .tensor(
                format!("blk.{i}.ffn_up.weight"),
                [256, 1024],
                GgmlType::Q4_K,
            )
            .tensor(format!("blk.{i}.attn_norm.weight"), [256], GgmlType::F32);
    }
    b.build()
}

/// A `vram_estimate` input: flags, GPU sizes in MiB, then the file (see the target's docs).
fn framed(flags: &str, gpus_mib: &[u32], gguf: &[u8]) -> Vec<u8> {
    // A seed reaches the estimate: the model loads, the flags parse, the estimate is made.
    let model = estimate::Model::from_gguf(&Gguf::parse(gguf).unwrap()).unwrap();
    let args: Vec<String> = flags.split_whitespace().map(str::to_owned).collect();
    let parsed = estimate::parse_llama_args(&args).unwrap();
    let gpus: Vec<Gpu> = (0..)
        .zip(gpus_mib)
        .map(|(i, mib)| Gpu::new(i, "seed", u64::from(*mib) << 20))
        .collect();
    estimate::estimate(&model, &parsed.params, &gpus).unwrap_or_else(|e| panic!("{flags}: {e}"));
    let mut out = u16::try_from(flags.len()).unwrap().to_le_bytes().to_vec();
    out.extend_from_slice(flags.as_bytes());
    out.push(u8::try_from(gpus_mib.len()).unwrap());
    for mib in gpus_mib {
        out.extend_from_slice(&mib.to_le_bytes());
    }
    out.extend_from_slice(gguf);
    out
}

fn shard(no: u16, count: u16, tensors: &[&str]) -> Vec<u8> {
    let mut b = GgufBuilder::new()
        .kv("split.no", no)
        .kv("split.count", count)
        .kv("split.tensors.count", 3i32);
    for t in tensors {
        b = b.tensor(*t, [32], GgmlType::F32);
    }
    b.build()
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut split = shard(0, 2, &["a", "b"]);
    split.extend_from_slice(b"\xffSHARD\xff");
    split.extend_from_slice(&shard(1, 2, &["c"]));
    vec![
        (
            "gguf_parse",
            "v3-le.gguf",
            model(GgufBuilder::new()).build(),
        ),
        (
            "gguf_parse",
            "v3-be.gguf",
            model(GgufBuilder::new().byte_order(ByteOrder::Big)).build(),
        ),
        (
            "gguf_parse",
            "v2.gguf",
            model(GgufBuilder::new().version(2)).build(),
        ),
        (
            "gguf_parse",
            "v1.gguf",
            model(GgufBuilder::new().version(1)).build(),
        ),
        (
            "gguf_parse",
            "align64.gguf",
            model(GgufBuilder::new().alignment(64)).build(),
        ),
        ("gguf_parse", "empty.gguf", GgufBuilder::new().build()),
        ("gguf_split", "two-shards.bin", split),
        (
            "vram_estimate",
            "dense-one-gpu.bin",
            framed(
                "-c 4096 -ngl all -fa on",
                &[24_576],
                &estimable(4, false, false),
            ),
        ),
        (
            "vram_estimate",
            "dense-cpu-quantized-cache.bin",
            framed(
                "-c 0 -np 4 -ctk q8_0 -ctv q8_0 -b 2048 -ub 512 --no-mmap",
                &[],
                &estimable(2, false, false),
            ),
        ),
        (
            "vram_estimate",
            "moe-two-gpus-draft.bin",
            framed(
                "-c 8192 -ngl 3 -ts 3,1 -md draft.gguf --spec-draft-n-max 16 -ngld all -fa off",
                &[24_576, 16_384],
                &estimable(4, true, false),
            ),
        ),
        (
            "vram_estimate",
            "swa-unified.bin",
            framed(
                "-c 16384 -np 2 --kv-unified -ngl 2 --swa-full",
                &[8192],
                &estimable(3, false, true),
            ),
        ),
    ]
}

#[test]
fn committed_seeds_are_what_the_writer_makes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let write = std::env::var_os("CORTEX_WRITE_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        if target == "gguf_parse" {
            Gguf::parse(&bytes).unwrap_or_else(|e| panic!("seed {name} must be valid: {e}"));
        }
        let path = root.join(target).join(name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == bytes,
            "{} differs from what the writer makes; regenerate with CORTEX_WRITE_SEEDS=1",
            path.display()
        );
    }
}
