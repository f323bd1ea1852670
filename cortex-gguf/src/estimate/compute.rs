//! Compute (graph) buffers per device — an approximation: llama.cpp knows them only after
//! building the graph and running ggml's allocator at `llama_context` reservation. The formula
//! and its calibration are in docs/estimator.md; each buffer says it is approximate
//! ([`Basis`](super::Basis)).

use super::context::Resolved;
use super::{
    Buffer, BufferKind, Device, EstimateError, LlamaParams, MemoryKind, Model, buffer_name,
    product, sum,
};

/// The compute buffers, on every device that runs layers (and the host).
#[allow(
    clippy::too_many_arguments,
    reason = "internal: the placement and where to write"
)]
pub(super) fn buffers(
    model: &Model,
    params: &LlamaParams,
    cx: &Resolved,
    layers: &[Device],
    output_layer: Device,
    gpus: usize,
    part: &'static str,
    buffers: &mut Vec<Buffer>,
) -> Result<(), EstimateError> {
    let compute = compute_bytes(
        model,
        params,
        cx.fa,
        cx.n_ctx_seq,
        cx.swa_cells,
        cx.n_ubatch,
        cx.n_outputs,
        layers,
        output_layer,
    )?;
    for (device, bytes) in compute {
        buffers.push(Buffer {
            device,
            kind: BufferKind::Compute,
            name: buffer_name(device, gpus > 0),
            part,
            bytes,
        });
    }
    Ok(())
}

/// Compute buffer bytes per device.
///
/// Masks are exact: one per cache kind, `n_kv × n_ubatch` in f16 with flash attention (f32
/// without). The rest is the activation working set, per token of the micro-batch:
/// `2·n_embd + 2·n_head·head_k + 3·n_ff` floats (`MoE`: the used experts' width, plus router
/// logits), and without flash attention the attention scores
/// `n_head × n_kv` floats plus `2·n_embd + 2·q + 1.5·n_ff`. With a quantized K cache the CPU
/// quantizes Q for the dot products (`q × 34/32` bytes per token). The coefficients are
/// calibrated against llama-server on the CPU backend (docs/estimator.md has the table).
#[allow(clippy::too_many_arguments, reason = "internal; the resolved context")]
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "a rounded estimate"
)]
fn compute_bytes(
    model: &Model,
    params: &LlamaParams,
    fa: bool,
    n_ctx_seq: u32,
    swa_cells: u32,
    n_ubatch: u32,
    n_outputs: u32,
    layers: &[Device],
    output_layer: Device,
) -> Result<Vec<(Device, u64)>, EstimateError> {
    const WHAT: &str = "the compute buffer";
    let ub = u64::from(n_ubatch);
    let mask_elem = if fa { 2 } else { 4 };
    let has_full = model
        .layers
        .iter()
        .any(|l| l.n_head_kv > 0 && !(model.is_swa_any() && l.swa));
    let has_swa = model.is_swa_any();
    // n_kv at reserve is the whole cache (per stream); tokens split across streams.
    let masks = match model.memory {
        MemoryKind::Recurrent | MemoryKind::None => 0,
        _ => {
            let full = if has_full {
                product(WHAT, [u64::from(n_ctx_seq), ub, mask_elem])?
            } else {
                0
            };
            let swa = if has_swa {
                product(WHAT, [u64::from(swa_cells), ub, mask_elem])?
            } else {
                0
            };
            sum(WHAT, [full, swa])?
        }
    };
    let n_embd = u64::from(model.n_embd);
    let q = model
        .layers
        .iter()
        .map(|l| u64::from(l.n_head).saturating_mul(u64::from(l.head_k)))
        .max()
        .unwrap_or(0);
    let n_head = model
        .layers
        .iter()
        .map(|l| u64::from(l.n_head))
        .max()
        .unwrap_or(0);
    let ff = ff_width(model)?;
    let ssm = model.recurrent.map_or(0, |r| r.working);
    let (embd2, q2) = (product(WHAT, [2, n_embd])?, product(WHAT, [2, q])?);
    let per_token = if fa {
        sum(WHAT, [embd2, q2, product(WHAT, [3, ff])?])?
    } else {
        let scores = product(WHAT, [n_head, u64::from(n_ctx_seq)])?;
        sum(WHAT, [embd2, q2, product(WHAT, [3, ff])? / 2, scores])?
    }
    .max(ssm);
    let quantized_k = params.cache_type_k.block().is_some_and(|b| b.elements > 1);
    let q8 = if quantized_k {
        product(WHAT, [q, ub, 34])? / 32
    } else {
        0
    };
    let working = sum(WHAT, [product(WHAT, [per_token, ub, 4])?, q8])?;
    let logits = product(WHAT, [u64::from(model.n_vocab), u64::from(n_outputs), 4])?;
    let output_stage = sum(WHAT, [masks, logits, product(WHAT, [5, n_embd, ub, 4])?])?;
    let layer_stage = sum(WHAT, [masks, working])?;

    // Each device running layers holds the masks and a working set; on the output layer's
    // device the output stage can be the peak instead (small micro-batches, large vocabularies).
    let mut out: Vec<(Device, u64)> = Vec::new();
    let mut devs: Vec<Device> = layers.to_vec();
    devs.push(output_layer);
    devs.sort();
    devs.dedup();
    for d in devs {
        let bytes = if d == output_layer {
            // The output stage: the logits beside the last layer's activations.
            layer_stage.max(output_stage)
        } else {
            layer_stage
        };
        out.push((d, bytes));
    }
    if !out.iter().any(|(d, _)| *d == Device::Host) {
        // Fully offloaded: the scheduler still gives every graph input to the last backend, the
        // CPU (`ggml_backend_sched_backend_id_from_cur` in ggml-backend.cpp: "graph input …
        // last backend (assumed CPU)"), and copies it into each split that reads it. So the
        // host's compute buffer holds the attention masks (one per cache kind), the token ids
        // and positions, the output ids, and the token embeddings looked up there (the table is
        // in host memory). Derived from the source, not measured on a GPU.
        let ids = product(WHAT, [ub, 8])?;
        let out_ids = product(WHAT, [u64::from(n_outputs), 4])?;
        out.push((
            Device::Host,
            sum(WHAT, [masks, product(WHAT, [n_embd, ub, 4])?, ids, out_ids])?,
        ));
    }
    Ok(out)
}

/// The feed-forward width a token passes through: the widest layer's, or for `MoE` the used
/// experts' together plus the router's logits.
fn ff_width(model: &Model) -> Result<u64, EstimateError> {
    const WHAT: &str = "the compute buffer";
    Ok(if model.n_expert > 0 {
        sum(
            WHAT,
            [
                product(
                    WHAT,
                    [
                        u64::from(model.n_expert_used),
                        u64::from(model.n_ff_exp.max(1)),
                    ],
                )?,
                u64::from(model.n_expert),
            ],
        )?
    } else {
        model
            .layers
            .iter()
            .map(|l| u64::from(l.n_ff))
            .max()
            .unwrap_or(0)
    })
}
