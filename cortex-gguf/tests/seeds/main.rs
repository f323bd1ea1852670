//! The fuzz seed corpus (`fuzz/seeds/`), made by the writer: this test checks that the committed
//! seeds are exactly what the writer makes today. To regenerate them after a deliberate change:
//! `CORTEX_WRITE_SEEDS=1 cargo test -p cortex-gguf --test seeds`.

use std::path::Path;

use cortex_gguf::{ByteOrder, GgmlType, Gguf, GgufBuilder, OwnedValue, ValueType};

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
