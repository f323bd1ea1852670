//! The context as llama.cpp resolves it from the options (`llama_context`'s constructor with
//! llama-server's defaults): slots, unified or per-sequence KV, `n_ctx` padded to 256, batch and
//! micro-batch, outputs, and the cells of the sliding-window cache.

use super::{EstimateError, LlamaParams, Model, Parallel, pad};

/// The resolved context every other rule reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resolved {
    pub(super) fa: bool,
    pub(super) n_ctx: u32,
    pub(super) n_ctx_seq: u32,
    pub(super) n_seq: u32,
    pub(super) kv_unified: bool,
    pub(super) n_stream: u32,
    pub(super) n_batch: u32,
    pub(super) n_ubatch: u32,
    pub(super) n_outputs: u32,
    pub(super) swa_cells: u32,
}

/// Resolves the context of `model` under `params` (flash attention already decided); notes
/// llama.cpp's own adjustments in `notes`.
#[allow(
    clippy::similar_names,
    reason = "llama.cpp's own names: n_batch and n_ubatch"
)]
pub(super) fn resolve(
    model: &Model,
    params: &LlamaParams,
    fa: bool,
    notes: &mut Vec<String>,
) -> Result<Resolved, EstimateError> {
    let (n_seq, forced_unified) = match params.parallel {
        Parallel::Auto => (4, true),
        Parallel::Slots(n) => (n, false),
    };
    let kv_unified = forced_unified || params.kv_unified.unwrap_or(false);
    let ctx = if params.ctx_size == 0 {
        model.n_ctx_train
    } else {
        params.ctx_size
    };
    let mut n_ctx = pad(ctx, 256);
    let n_ctx_seq = if kv_unified {
        n_ctx
    } else {
        let per = pad(n_ctx.checked_div(n_seq).unwrap_or(0), 256);
        if per == 0 {
            return Err(EstimateError::param("-c", "n_ctx_seq == 0"));
        }
        let whole = per
            .checked_mul(n_seq)
            .ok_or_else(|| EstimateError::param("-c", "n_ctx_seq × n_seq overflows"))?;
        if n_ctx != whole {
            n_ctx = whole;
            notes.push(format!(
                "n_ctx is not divisible by n_seq_max - rounding down to {n_ctx}"
            ));
        }
        per
    };
    let n_stream = if kv_unified { 1 } else { n_seq };
    let n_batch = n_ctx.min(params.batch);
    let n_ubatch = n_batch.min(params.ubatch);
    let n_draft = params.draft.as_ref().map_or(0, |d| d.n_max);
    // Both bounded by `validate` (256 slots, 2^24 draft tokens): the product fits in u64.
    let n_outputs = u32::try_from(
        u64::from(n_seq)
            .saturating_mul(u64::from(n_draft).saturating_add(1))
            .min(u64::from(n_batch)),
    )
    .unwrap_or(n_batch);

    // The sliding-window cache (`llama_kv_cache_iswa`): the window per stream plus a micro-batch,
    // padded; `--swa-full` keeps the whole context.
    let swa_any = model.is_swa_any();
    let swa_cells = if swa_any {
        if params.swa_full {
            n_ctx_seq
        } else {
            let window = model
                .n_swa
                .saturating_mul(if kv_unified { n_seq } else { 1 })
                .saturating_add(n_ubatch);
            pad(n_ctx_seq.min(window), 256)
        }
    } else {
        0
    };
    Ok(Resolved {
        fa,
        n_ctx,
        n_ctx_seq,
        n_seq,
        kv_unified,
        n_stream,
        n_batch,
        n_ubatch,
        n_outputs,
        swa_cells,
    })
}
