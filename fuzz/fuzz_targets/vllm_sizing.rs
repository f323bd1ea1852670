//! Any `config.json` with any `vllm serve` options and GPUs: vLLM sizing gives a sizing or an
//! error, never a panic or an overflow (the targets are built with overflow checks on).
//!
//! Input framing (the seeds in `seeds/vllm_sizing` are written by `cortex-engines`' `sizing`
//! test): little-endian `u32` tensor-parallel and pipeline-parallel sizes; `u64` max-num-seqs,
//! max-num-batched-tokens, max-model-len (0: the model's), block size, weight bytes,
//! parameters; a `u16` GPU memory utilization in thousandths; a flags byte (bit 0: FP8 KV cache,
//! bit 1: FP8 weights); a byte `g` (GPUs: `g % 9`), `g` `u32` sizes in MiB; then the JSON.
#![no_main]

use cortex_engines::vllm::sizing::{self, HfModel, KvCacheDtype, VllmParams};
use cortex_gguf::Gpu;
use libfuzzer_sys::fuzz_target;

/// The next `N` bytes of `data` (zero-filled past its end).
fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let (head, rest) = data.split_at(N.min(data.len()));
    *data = rest;
    let mut out = [0u8; N];
    out[..head.len()].copy_from_slice(head);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let tp = u32::from_le_bytes(take(&mut data));
    let pp = u32::from_le_bytes(take(&mut data));
    let mut word = || u64::from_le_bytes(take(&mut data));
    let (seqs, batched, len, block, weights, parameters) =
        (word(), word(), word(), word(), word(), word());
    let utilization = f64::from(u16::from_le_bytes(take(&mut data))) / 1000.0;
    let [flags] = take::<1>(&mut data);
    let [count] = take::<1>(&mut data);
    let gpus: Vec<Gpu> = (0..count % 9)
        .map(|i| {
            Gpu::new(
                u32::from(i),
                "fuzz",
                u64::from(u32::from_le_bytes(take(&mut data))) << 20,
            )
        })
        .collect();
    let Ok(model) = HfModel::from_config(&String::from_utf8_lossy(data), weights, parameters)
    else {
        return;
    };
    let params = VllmParams {
        tensor_parallel: tp,
        pipeline_parallel: pp,
        gpu_memory_utilization: utilization,
        max_model_len: (len != 0).then_some(len),
        max_num_seqs: seqs,
        max_num_batched_tokens: batched,
        kv_cache_dtype: if flags & 1 != 0 {
            KvCacheDtype::Fp8
        } else {
            KvCacheDtype::Auto
        },
        quantize_fp8: flags & 2 != 0,
        block_size: block,
    };
    let _ = sizing::suggestions(&model, &params, &gpus);
});
