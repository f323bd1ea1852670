//! Inverse questions: the largest context or `-ngl` that fits, a split by free memory, and what to
//! change when nothing fits.

use crate::{GgmlType, Gpu};

use super::{Device, Estimate, EstimateError, GpuLayers, LlamaParams, Model, Parallel, estimate};

/// Whether `est` leaves `margin` bytes free on every GPU.
fn fits_with(est: &Estimate, margin: u64) -> bool {
    est.gpus
        .iter()
        .enumerate()
        .all(|(i, g)| est.totals(Device::Gpu(i)).total().saturating_add(margin) <= g.free())
}

/// The largest context (a multiple of 256, at most the model's training context unless
/// `params.ctx_size` asks for more) that fits on `gpus` leaving `margin` bytes free on each, with
/// everything else as `params` says; `None` when not even 256 tokens fit.
///
/// # Errors
///
/// As [`estimate`].
pub fn max_context(
    model: &Model,
    params: &LlamaParams,
    gpus: &[Gpu],
    margin: u64,
) -> Result<Option<u32>, EstimateError> {
    let cap = params.ctx_size.max(model.n_ctx_train).max(256);
    let try_ctx = |c: u32| -> Result<bool, EstimateError> {
        let p = LlamaParams {
            ctx_size: c,
            ..params.clone()
        };
        Ok(fits_with(&estimate(model, &p, gpus)?, margin))
    };
    let best = largest(1, cap / 256, |blocks| try_ctx(blocks.saturating_mul(256)))?;
    Ok(best.map(|blocks| blocks.saturating_mul(256)))
}

/// The largest `x` in `lo..=hi` for which `fits` holds, where it holds up to some point and not
/// after (a binary search); `None` where it holds for none.
fn largest(
    lo: u32,
    hi: u32,
    mut fits: impl FnMut(u32) -> Result<bool, EstimateError>,
) -> Result<Option<u32>, EstimateError> {
    let (mut lo, mut hi) = (lo, hi);
    let mut best = None;
    while lo <= hi {
        let mid = lo.midpoint(hi);
        let next = if fits(mid)? {
            best = Some(mid);
            mid.checked_add(1).map(|n| (n, hi))
        } else {
            mid.checked_sub(1).map(|n| (lo, n))
        };
        let Some(next) = next else { break };
        (lo, hi) = next;
    }
    Ok(best)
}

/// The largest `-ngl` (the output layer counts as one) that fits on `gpus` leaving `margin`
/// bytes free on each.
///
/// # Errors
///
/// As [`estimate`].
pub fn max_gpu_layers(
    model: &Model,
    params: &LlamaParams,
    gpus: &[Gpu],
    margin: u64,
) -> Result<u32, EstimateError> {
    let best = largest(0, model.n_layer.saturating_add(1), |ngl| {
        let p = LlamaParams {
            gpu_layers: GpuLayers::Count(ngl),
            ..params.clone()
        };
        Ok(fits_with(&estimate(model, &p, gpus)?, margin))
    })?;
    Ok(best.unwrap_or(0))
}

/// A `-ts` value proportional to each GPU's free memory (what llama.cpp does with no `-ts`),
/// written as llama-server takes it: whole MiB, comma-separated.
pub fn split_by_free_memory(gpus: &[Gpu]) -> String {
    gpus.iter()
        .map(|g| (g.free() >> 20).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// One change that makes a model fit, with its estimated effect.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Suggestion {
    /// The flags to add or change, as llama-server spells them (`-ctk q8_0 -ctv q8_0`).
    pub flags: String,
    /// Why.
    pub reason: String,
    /// The estimate with the change.
    pub estimate: Estimate,
    /// Whether the change alone makes everything fit.
    pub fits: bool,
}

/// When `params` does not fit, a ladder of changes, each with its estimated effect, from the
/// least intrusive: a quantized KV cache (`q8_0`, then `q4_0`), a smaller context, fewer slots,
/// partial offload. Empty when it fits already.
///
/// # Errors
///
/// As [`estimate`].
pub fn suggestions(
    model: &Model,
    params: &LlamaParams,
    gpus: &[Gpu],
) -> Result<Vec<Suggestion>, EstimateError> {
    let base = estimate(model, params, gpus)?;
    if base.fits() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut push = |flags: String, reason: String, p: LlamaParams| -> Result<(), EstimateError> {
        let e = estimate(model, &p, gpus)?;
        let fits = e.fits();
        out.push(Suggestion {
            flags,
            reason,
            estimate: e,
            fits,
        });
        Ok(())
    };

    for (ty, name) in [(GgmlType::Q8_0, "q8_0"), (GgmlType(2), "q4_0")] {
        if params.cache_type_k != ty {
            let p = LlamaParams {
                cache_type_k: ty,
                cache_type_v: ty,
                ..params.clone()
            };
            if estimate(model, &p, gpus).is_ok() {
                push(
                    format!("-ctk {name} -ctv {name}"),
                    format!("a {name} KV cache (flash attention on)"),
                    p,
                )?;
            }
        }
    }
    if let Some(ctx) = max_context(model, params, gpus, 0)? {
        if ctx < base.context.n_ctx {
            push(
                format!("-c {ctx}"),
                format!(
                    "the largest context that fits (from {})",
                    base.context.n_ctx
                ),
                LlamaParams {
                    ctx_size: ctx,
                    ..params.clone()
                },
            )?;
        }
    }
    if base.context.n_seq > 1 {
        let p = LlamaParams {
            parallel: Parallel::Slots(1),
            ..params.clone()
        };
        push(
            "-np 1".to_owned(),
            "one slot (smaller sliding-window cache and output buffer)".to_owned(),
            p,
        )?;
    }
    let ngl = max_gpu_layers(model, params, gpus, 0)?;
    if ngl < base.context.gpu_layers || matches!(params.gpu_layers, GpuLayers::All) {
        push(
            format!("-ngl {ngl}"),
            format!(
                "offload {ngl} of {} layers; the rest run on the CPU",
                model.n_layer.saturating_add(1)
            ),
            LlamaParams {
                gpu_layers: GpuLayers::Count(ngl),
                ..params.clone()
            },
        )?;
    }
    Ok(out)
}
