//! The KV cache and recurrent state (`llama_model::create_memory`): per attention layer, K and V
//! rows of `cells × streams` (SWA layers with the window's cells), on the layer's device unless
//! `-nkvo`; per recurrent layer, conv and SSM state per sequence in f32.

use super::context::Resolved;
use super::{
    Buffer, BufferKind, Device, Devices, EstimateError, LayerShape, LlamaParams, MemoryKind, Model,
    add_to, product, row_bytes, sum,
};

/// The context memory's buffers.
pub(super) fn buffers(
    model: &Model,
    params: &LlamaParams,
    cx: &Resolved,
    layers: &[Device],
    devs: Devices<'_>,
    part: &'static str,
    buffers: &mut Vec<Buffer>,
) -> Result<(), EstimateError> {
    let Resolved {
        fa,
        n_ctx_seq,
        n_seq,
        n_stream,
        swa_cells,
        ..
    } = *cx;
    let kv_device = |il: usize| -> Device {
        if params.kv_offload {
            layers.get(il).copied().unwrap_or(Device::Host)
        } else {
            Device::Host
        }
    };
    let swa_any = model.is_swa_any();
    let attn_layer = |l: &LayerShape| match model.memory {
        MemoryKind::Kv => l.n_head_kv > 0,
        // Falcon-H1 layers carry both; other hybrids one or the other.
        MemoryKind::Hybrid => {
            l.n_head_kv > 0 && (!l.recurrent || model.architecture == "falcon-h1")
        }
        MemoryKind::Recurrent | MemoryKind::None => false,
    };
    let mut kv: Vec<(Device, BufferKind, u64)> = Vec::new();
    let mut add = |device: Device, kind: BufferKind, bytes: u64| -> Result<(), EstimateError> {
        match kv.iter_mut().find(|(d, k, _)| *d == device && *k == kind) {
            Some((_, _, b)) => add_to(b, bytes, "the KV cache")?,
            None => kv.push((device, kind, bytes)),
        }
        Ok(())
    };
    for (il, l) in model.layers.iter().enumerate() {
        if attn_layer(l) {
            let (cells, kind) = if swa_any && l.swa {
                (swa_cells, BufferKind::KvSwa)
            } else {
                (n_ctx_seq, BufferKind::KvFull)
            };
            let rows = product("the KV cache", [u64::from(cells), u64::from(n_stream)])?;
            let k = product(
                "the K cache",
                [row_bytes(params.cache_type_k, l.k_row()), rows],
            )?;
            // V rows are as wide as the widest layer's when V is stored transposed (no FA) and
            // widths vary.
            let v_row = if fa {
                l.v_row()
            } else {
                model
                    .layers
                    .iter()
                    .map(LayerShape::v_row)
                    .max()
                    .unwrap_or(0)
                    .max(l.v_row())
            };
            let v = if model.mla {
                0
            } else {
                product("the V cache", [row_bytes(params.cache_type_v, v_row), rows])?
            };
            add(kv_device(il), kind, sum("the KV cache", [k, v])?)?;
        }
        if l.recurrent {
            if let Some(r) = model.recurrent {
                let mem = u64::from(n_seq.max(1));
                let state = product(
                    "the recurrent state",
                    [sum("the recurrent state", [r.r, r.s])?, 4, mem],
                )?;
                add(kv_device(il), BufferKind::Recurrent, state)?;
            }
        }
    }
    for (device, kind, bytes) in kv {
        buffers.push(Buffer {
            device,
            kind,
            name: devs.name(device),
            part,
            bytes,
        });
    }
    Ok(())
}
