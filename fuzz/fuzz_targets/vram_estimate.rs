//! Any GGUF header with any llama-server flags and GPUs: the estimator gives an estimate or an
//! error, never a panic or an overflow (the targets are built with overflow checks on).
//!
//! Input framing (the seeds in `seeds/vram_estimate` are written by `cortex-gguf`'s `seeds`
//! test): a little-endian `u16` length `L`, `L` bytes of flags (whitespace-separated, lossy
//! UTF-8), one byte `g` (GPUs: `g % 5`), `g` little-endian `u32` sizes in MiB, then the GGUF file.
#![no_main]

use cortex_gguf::estimate::{self, Draft, Model, parse_llama_args};
use cortex_gguf::{Gguf, Gpu};
use libfuzzer_sys::fuzz_target;

/// Takes `n` bytes from the front of `data` (fewer when it is shorter).
fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = data.split_at(n.min(data.len()));
    *data = rest;
    head
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let len = take(&mut data, 2);
    let len = usize::from(u16::from_le_bytes([
        len.first().copied().unwrap_or(0),
        len.get(1).copied().unwrap_or(0),
    ]));
    let args: Vec<String> = String::from_utf8_lossy(take(&mut data, len))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let count_byte = take(&mut data, 1).first().copied().unwrap_or(0);
    let count = count_byte % 5;
    let gpus: Vec<Gpu> = (0..count)
        .map(|i| {
            let mib = take(&mut data, 4);
            let mut word = [0u8; 4];
            word[..mib.len()].copy_from_slice(mib);
            let bytes = u64::from(u32::from_le_bytes(word)) << 20;
            // The high bit of the GPU count picks an RPC device for the even positions.
            if count_byte & 0x80 != 0 && i % 2 == 0 {
                Gpu::rpc(format!("10.0.0.{i}:50052"), bytes)
            } else {
                Gpu::new(u32::from(i), "fuzz", bytes)
            }
        })
        .collect();
    let Ok(gguf) = Gguf::parse(data) else {
        return;
    };
    let Ok(model) = Model::from_gguf(&gguf) else {
        return;
    };
    let Ok(parsed) = parse_llama_args(&args) else {
        return;
    };
    let mut params = parsed.params;
    if parsed.draft.is_some() {
        // The same file as its own draft: what matters here is the draft's arithmetic.
        let mut draft = Draft::new(model.clone());
        draft.gpu_layers = parsed.draft_gpu_layers;
        draft.n_max = parsed.draft_n_max;
        params.draft = Some(draft);
    }
    if let Ok(e) = estimate::estimate(&model, &params, &gpus) {
        let _ = (e.total(), e.fits(), e.shortfalls(), e.host().total());
        for i in 0..gpus.len() {
            let _ = e.device(i).map(|d| d.total());
        }
        // The inverse questions run many estimates: only for small models, to keep the pace.
        if model.n_layer <= 8 {
            let _ = estimate::suggestions(&model, &params, &gpus);
        }
    }
});
