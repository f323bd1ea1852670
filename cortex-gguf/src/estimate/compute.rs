//! Compute (graph) buffers per device — an approximation: llama.cpp knows them only after
//! building the graph and running ggml's allocator at `llama_context` reservation. The formula
//! and its calibration are in docs/estimator.md; each buffer says it is approximate
//! ([`Basis`](super::Basis)).

use super::context::Resolved;
use super::{
    Buffer, BufferKind, Device, Devices, EstimateError, LlamaParams, MemoryKind, Model, Role,
    SplitMode, placement, product, sum,
};

/// Input copies per device under pipeline parallelism (`GGML_SCHED_MAX_COPIES`, 4 in the
/// default build).
const PIPELINE_COPIES: u64 = 4;

#[allow(clippy::cast_precision_loss, reason = "MiB for a note")]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// How ggml's scheduler runs the graph across the devices (`ggml_backend_sched`).
struct Split {
    /// Pipeline parallelism (`llama_context`: more than one device, every layer and the output
    /// offloaded, `-sm layer`, KV offloaded, no tensor overrides; CUDA and RPC devices have the
    /// async compute and events it needs): `PIPELINE_COPIES` copies of every input.
    pipeline: bool,
    /// CUDA's `offload_op`: with weights used on the host and micro-batches of 32 tokens or
    /// more, the first CUDA GPU runs those operations and copies each weight in, one per split;
    /// the GPU and the largest such weight.
    offload: Option<(Device, u64)>,
}

impl Split {
    fn new(
        model: &Model,
        params: &LlamaParams,
        cx: &Resolved,
        devs: Devices<'_>,
        layers: &[Device],
        output_layer: Device,
    ) -> Result<Self, EstimateError> {
        let pipeline = devs.gpus.len() > 1
            && output_layer != Device::Host
            && !layers.contains(&Device::Host)
            && params.split_mode == SplitMode::Layer
            && params.kv_offload
            && params.overrides.is_empty();
        let cuda = (0..devs.gpus.len())
            .map(Device::Gpu)
            .find(|d| devs.is_cuda(*d));
        let offload = match cuda {
            Some(gpu) if params.op_offload && cx.n_ubatch >= 32 => {
                let placed = placement::tensors(model, params, devs.gpus, layers, output_layer)?;
                placed
                    .iter()
                    .filter(|(t, role, device, _)| {
                        *device == Device::Host
                            && (*role != Role::Input && super::model::is_matmul_weight(t)
                                || *role == Role::Output && t.name == "token_embd.weight")
                    })
                    .map(|(t, ..)| t.bytes)
                    .max()
                    .map(|bytes| (gpu, bytes))
            }
            _ => None,
        };
        Ok(Self { pipeline, offload })
    }
}

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
    devs: Devices<'_>,
    part: &'static str,
    buffers: &mut Vec<Buffer>,
    notes: &mut Vec<String>,
) -> Result<(), EstimateError> {
    let split = Split::new(model, params, cx, devs, layers, output_layer)?;
    if split.pipeline {
        notes.push(format!(
            "pipeline parallelism: ggml's scheduler keeps {PIPELINE_COPIES} copies of every input on each device"
        ));
    }
    if let Some((gpu, bytes)) = split.offload {
        notes.push(format!(
            "{} runs the host's weight operations (batches of 32+ tokens), copying in one weight at a time (up to {:.1} MiB); --no-op-offload keeps them on the host",
            devs.name(gpu),
            mib(bytes)
        ));
    }
    let compute = compute_bytes(model, params, cx, layers, output_layer, &split)?;
    for (device, bytes) in compute {
        buffers.push(Buffer {
            device,
            kind: BufferKind::Compute,
            name: if device == Device::Host {
                devs.host_of(Device::Gpu(0))
            } else {
                devs.name(device)
            },
            part,
            bytes,
        });
    }
    Ok(())
}

/// The graph's inputs, in bytes: what the host's compute buffer holds for the scheduler whatever
/// runs where, and what a device running layers gets copies of.
#[derive(Debug, Clone, Copy, Default)]
struct Inputs {
    /// Attention masks, one per cache kind (`n_kv × n_ubatch`, f16 with flash attention, f32
    /// without).
    masks: u64,
    /// KV cache row indices, one pair per cache kind: `n_ubatch` i64 for K, and for V as many
    /// (flash attention) or one per value of the transposed V row.
    idx: u64,
    /// One `n_embd × n_ubatch` f32 activation (the embeddings, a split's hand-over).
    embd: u64,
    /// Token ids (plain and mixed), positions, mixed-batch slots, row scales: `n_ubatch` each.
    tokens: u64,
    /// The output row ids.
    out_ids: u64,
}

/// The inputs of the reserved graph (`llm_graph_input_*` in llama-graph.cpp, as the pinned
/// build creates them: `inp_tokens`, `inp_embd`, `inp_mixed_tokens`, `inp_mixed_embd`,
/// `inp_mixed_slots`, `inp_scale_rows`, `inp_pos`, `attn_inp_k_idxs`, `attn_inp_v_idxs`,
/// `attn_inp_kq_mask`, `out_ids`).
fn inputs(model: &Model, cx: &Resolved) -> Result<Inputs, EstimateError> {
    const WHAT: &str = "the compute buffer";
    let ub = u64::from(cx.n_ubatch);
    let mask_elem = if cx.fa { 2 } else { 4 };
    let attn = |swa: bool| {
        model
            .layers
            .iter()
            .filter(|l| l.n_head_kv > 0 && (model.is_swa_any() && l.swa) == swa)
            .map(super::model::LayerShape::v_row)
            .max()
    };
    let mut kinds = Vec::new();
    if !matches!(model.memory, MemoryKind::Recurrent | MemoryKind::None) {
        if let Some(v_row) = attn(false) {
            kinds.push((cx.n_ctx_seq, v_row));
        }
        if let Some(v_row) = attn(true) {
            kinds.push((cx.swa_cells, v_row));
        }
    }
    let mut masks = 0;
    let mut idx = 0;
    for (cells, v_row) in kinds {
        masks = sum(
            WHAT,
            [masks, product(WHAT, [u64::from(cells), ub, mask_elem])?],
        )?;
        let v_idx = if cx.fa {
            ub
        } else {
            product(WHAT, [ub, v_row])?
        };
        idx = sum(
            WHAT,
            [idx, product(WHAT, [ub, 8])?, product(WHAT, [v_idx, 8])?],
        )?;
    }
    Ok(Inputs {
        masks,
        idx,
        embd: product(WHAT, [u64::from(model.n_embd), ub, 4])?,
        // tokens and mixed tokens (i32), slots (i64), row scales (f32), positions (i32)
        tokens: product(WHAT, [ub, 4 + 4 + 8 + 4 + 4])?,
        out_ids: product(WHAT, [u64::from(cx.n_outputs), 4])?,
    })
}

/// The working sets, in bytes: of a layer, of the last layer (attention only: its
/// feed-forward part runs on the output rows), and of the output stage.
struct Working {
    layer: u64,
    last: u64,
    output: u64,
}

/// The working sets (docs/estimator.md: coefficients fitted on the CPU backend).
fn working(
    model: &Model,
    params: &LlamaParams,
    cx: &Resolved,
    inp: &Inputs,
) -> Result<Working, EstimateError> {
    const WHAT: &str = "the compute buffer";
    let ub = u64::from(cx.n_ubatch);
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
    let ssm = model
        .recurrent
        .map_or(0, |r| r.working.saturating_sub(n_embd.saturating_mul(3)));
    let scores = if cx.fa {
        0
    } else {
        product(WHAT, [n_head, u64::from(cx.n_ctx_seq)])?
    };
    let layer_floats = if cx.fa {
        sum(WHAT, [product(WHAT, [2, q])?, product(WHAT, [3, ff])?])?
    } else {
        // The transposed V cache's row indices (`inp.idx`) are in the fitted terms already.
        sum(
            WHAT,
            [product(WHAT, [2, q])?, product(WHAT, [3, ff])? / 2, scores],
        )?
        .saturating_sub(inp.idx.checked_div(ub.saturating_mul(4)).unwrap_or(0))
    }
    .saturating_sub(n_embd.saturating_mul(2))
    .max(ssm);
    let quantized_k = params.cache_type_k.block().is_some_and(|b| b.elements > 1);
    let q8 = if quantized_k {
        product(WHAT, [q, ub, 34])? / 32
    } else {
        0
    };
    let bytes = |floats: u64| -> Result<u64, EstimateError> {
        sum(WHAT, [product(WHAT, [floats, ub, 4])?, q8])
    };
    let attention_floats = sum(WHAT, [product(WHAT, [2, q])?, n_embd, scores])?;
    let logits = product(WHAT, [u64::from(model.n_vocab), u64::from(cx.n_outputs), 4])?;
    Ok(Working {
        layer: bytes(layer_floats)?,
        // A recurrent last layer scans every token: its working set is the layer's.
        last: bytes(attention_floats.max(ssm).min(layer_floats))?,
        output: sum(WHAT, [logits, inp.embd])?,
    })
}

/// Compute buffer bytes per device.
///
/// The inputs are exact, the working sets an approximation (docs/estimator.md):
///
/// - the host keeps every graph input (`ggml_backend_sched_backend_id_from_cur` in
///   ggml-backend.cpp: "graph input … last backend (assumed CPU)"): the masks and indices, four
///   `n_embd × n_ubatch` activations (the embedding inputs and the two token lookups), token ids
///   and positions, output ids — measured to 0.01 MiB against llama-server offloading every
///   layer to a second backend;
/// - a device running layers gets copies of what its split reads from another backend
///   (pass 5 of `ggml_backend_sched_split_graph`): the masks and indices, the positions, and
///   either the embeddings (three activations, with layer 0) or the previous split's output (one);
/// - each device running layers, the host included, adds the working set of its largest layer:
///   per token of the micro-batch `2·q + 3·n_ff − 2·n_embd` floats with flash attention (`MoE`:
///   the used experts' width plus the router's logits for `n_ff`), `2·q + 1.5·n_ff − 2·n_embd +
///   n_head × n_kv` without (the score matrix), less the V indices counted with the inputs, or for Mamba-style layers `2·d_in_proj +
///   2·conv_dim + d_inner − 3·n_embd`; the last layer runs its feed-forward part on the output
///   rows only, so its working set is the attention part, `2·q + n_embd` (and the scores without
///   flash attention), or a Mamba-style layer's; with a quantized K
///   cache, `q × 34/32` bytes per token more (the CPU quantizes Q);
/// - the output layer's device: the logits (`n_vocab × n_outputs` floats) and one activation
///   may be the peak instead.
///
/// The coefficients are calibrated against llama-server on the CPU backend, and the split
/// between devices against it offloading to RPC devices (`cortex-gguf/tests/archs`).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "a rounded estimate"
)]
fn compute_bytes(
    model: &Model,
    params: &LlamaParams,
    cx: &Resolved,
    layers: &[Device],
    output_layer: Device,
    split: &Split,
) -> Result<Vec<(Device, u64)>, EstimateError> {
    const WHAT: &str = "the compute buffer";
    let inp = inputs(model, cx)?;
    let n_embd = u64::from(model.n_embd);
    let Working {
        layer: w_layer,
        last: w_last,
        output: w_output,
    } = working(model, params, cx, &inp)?;

    // Where each layer's work runs: CUDA's op offload moves the host's layers (and a host
    // output layer) to the first CUDA GPU, leaving the host its inputs.
    let runs_on = |d: Device| match split.offload {
        Some((gpu, _)) if d == Device::Host => gpu,
        _ => d,
    };
    let work: Vec<Device> = layers.iter().map(|d| runs_on(*d)).collect();
    let output_work = runs_on(output_layer);
    let last = work.len().checked_sub(1);
    let copies = if split.pipeline { PIPELINE_COPIES } else { 1 };
    let mut devices: Vec<Device> = work.clone();
    devices.push(output_work);
    devices.push(Device::Host);
    devices.sort();
    devices.dedup();
    let mut out: Vec<(Device, u64)> = Vec::new();
    for d in devices {
        let mut w = 0;
        for (il, _) in work.iter().enumerate().filter(|(_, l)| **l == d) {
            w = w.max(if Some(il) == last { w_last } else { w_layer });
        }
        let runs_layers = work.contains(&d);
        let bytes = if d == Device::Host {
            // Graph inputs stay allocated (leafs); with pipeline parallelism each has its
            // copies, the two token lookups (nodes) excepted.
            let leafs = sum(
                WHAT,
                [
                    inp.masks,
                    inp.idx,
                    product(WHAT, [2, inp.embd])?,
                    inp.tokens,
                    inp.out_ids,
                ],
            )?;
            let held = sum(
                WHAT,
                [
                    product(WHAT, [leafs, copies])?,
                    product(WHAT, [2, inp.embd])?,
                ],
            )?;
            let w = if output_work == d { w.max(w_output) } else { w };
            sum(WHAT, [held, w])?
        } else {
            // A split's copies of what it reads from other backends are freed after their last
            // use (the output stage runs without them), unless pipeline parallelism keeps them.
            let handed = if work.first() == Some(&d) {
                product(WHAT, [3, inp.embd])?
            } else {
                inp.embd
            };
            let held = if runs_layers {
                sum(WHAT, [inp.masks, inp.idx, handed, inp.tokens, inp.out_ids])?
            } else {
                product(WHAT, [n_embd, u64::from(cx.n_outputs), 4])?
            };
            let weight = match split.offload {
                Some((gpu, bytes)) if gpu == d => bytes,
                _ => 0,
            };
            if split.pipeline {
                // Kept copies are outputs too, so the operations reading them cannot work in
                // place: about three activations more (measured on RPC devices).
                sum(
                    WHAT,
                    [
                        product(WHAT, [held, copies])?,
                        product(WHAT, [3, inp.embd])?,
                        w.max(if output_work == d { w_output } else { 0 }),
                    ],
                )?
            } else {
                let layer_peak = sum(WHAT, [held, w, weight])?;
                if output_work == d {
                    layer_peak.max(sum(WHAT, [w_output, weight])?)
                } else {
                    layer_peak
                }
            }
        };
        out.push((d, bytes));
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
