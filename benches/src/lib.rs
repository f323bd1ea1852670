//! Criterion benches for the Cortex crates; run them with `cargo bench -p cortex-benches`.
//!
//! - `registry`: [`Registry::resolve`](cortex_core::Registry::resolve) of the in-memory registry,
//!   the lookup the gateway makes on every request, against a `RwLock<HashMap>` baseline measured in
//!   the same run: alone (`registry::resolve`), while a second thread resolves too
//!   (`registry::resolve_with_reader`), and while a second thread replaces endpoints as fast as it
//!   can (`registry::resolve_under_writes`). Each registry gets its own background thread doing the
//!   same logical work during its own measurement.
//! - `gguf`: parsing the header of a memory-mapped synthetic file shaped like a large model
//!   ([`synthetic_model`]) at 1 GiB and 100 GiB (sparse), to show the time does not grow with the
//!   tensor data, and of the real Gemma 3 270M file when `scripts/setup` has installed it.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use cortex_gguf::{GgmlType, GgufBuilder, OwnedValue, ValueType};

/// Tensors in the synthetic model: 80 layers of 9, plus embeddings, final norm and output.
pub const SYNTHETIC_TENSORS: usize = 80 * 9 + 3;
/// Tokenizer entries in the synthetic model.
pub const SYNTHETIC_VOCAB: usize = 150_000;

/// Writes (once) a GGUF file shaped like a large model — 723 tensors, a 150,000-entry tokenizer
/// with scores and token types — whose tensor data makes the file about `size` bytes. The data is
/// left sparse (`set_len`), so a 100 GiB file takes no disk space. Returns its path.
///
/// # Panics
///
/// When the file cannot be written.
pub fn synthetic_model(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join(format!("synthetic-{}gib.gguf", size >> 30));
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(dir).expect("create the bench directory");
    let tokens: Vec<String> = (0..SYNTHETIC_VOCAB)
        .map(|i| format!("tok{i:06}▁x"))
        .collect();
    let mut score = 0.0f32;
    let scores = (0..SYNTHETIC_VOCAB)
        .map(|_| {
            score -= 0.5;
            OwnedValue::F32(score)
        })
        .collect();
    let types = (0..SYNTHETIC_VOCAB)
        .map(|i| OwnedValue::I32(i32::from(i < 256) + 1))
        .collect();
    let mut b = GgufBuilder::new()
        .kv("general.architecture", "llama")
        .kv("general.name", "synthetic")
        .kv("llama.block_count", 80u32)
        .kv("llama.context_length", 131_072u32)
        .kv("llama.embedding_length", 8192u32)
        .kv("tokenizer.ggml.model", "gpt2")
        .kv("tokenizer.ggml.tokens", OwnedValue::strings(tokens))
        .kv(
            "tokenizer.ggml.scores",
            OwnedValue::array(ValueType::F32, scores),
        )
        .kv(
            "tokenizer.ggml.token_type",
            OwnedValue::array(ValueType::I32, types),
        );
    // F16 rows of 4096: `rows` per tensor so the data adds up to about `size`.
    let rows = (size / (SYNTHETIC_TENSORS as u64 * 4096 * 2)).max(1);
    b = b.tensor("token_embd.weight", [4096, rows], GgmlType::F16);
    for layer in 0..80 {
        for name in [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
            "attn_norm",
            "ffn_norm",
        ] {
            b = b.tensor(
                format!("blk.{layer}.{name}.weight"),
                [4096, rows],
                GgmlType::F16,
            );
        }
    }
    b = b
        .tensor("output_norm.weight", [4096, rows], GgmlType::F16)
        .tensor("output.weight", [4096, rows], GgmlType::F16);
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .expect("create the synthetic file");
    let total = b.write_header(&mut file).expect("write the header");
    file.set_len(total).expect("extend the file sparsely");
    drop(file);
    std::fs::rename(&tmp, &path).expect("move the synthetic file into place");
    path
}
