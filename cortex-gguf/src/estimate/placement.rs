//! Where llama.cpp puts each layer and each weight (`llama_model::load_tensors` and
//! `llama_model_loader`'s buffer selection): the last `-ngl` layers offloaded (the output layer
//! first), split over the GPUs by `-ts` or free memory; tensor overrides (`-ot`, `--cpu-moe`);
//! host weights mapped, allocated or repacked; GPU weights padded and aligned as CUDA allocates
//! them.

use super::{
    Buffer, BufferKind, Device, Devices, EstimateError, LlamaParams, Model, Role, SplitMode,
    Tensor, add_to, align, compile_overrides, layer_devices, mapped_span, model,
};
use crate::Gpu;

/// Each repeating layer's device, the output layer's, and how many layers are offloaded.
pub(super) fn layers(
    model: &Model,
    params: &LlamaParams,
    gpus: &[Gpu],
    ngl: u32,
) -> (Vec<Device>, Device, u32) {
    let n_layer = model.n_layer;
    let devices = layer_devices(params, gpus);
    let act = if devices.is_empty() {
        0
    } else {
        ngl.min(n_layer.saturating_add(1))
    };
    let gpu_start = n_layer.saturating_add(1).saturating_sub(ngl);
    let device_of = |il: u32| -> Device {
        let Some(offloaded) = il.checked_sub(gpu_start).filter(|i| *i < act) else {
            return Device::Host;
        };
        #[allow(clippy::cast_precision_loss, reason = "layer counts are small")]
        let x = f64::from(offloaded) / f64::from(act);
        let pos = devices
            .iter()
            .position(|(_, s)| *s > x)
            .unwrap_or(devices.len().saturating_sub(1));
        Device::Gpu(devices.get(pos).map_or(0, |(i, _)| *i))
    };
    let layers: Vec<Device> = (0..n_layer).map(device_of).collect();
    let output_layer = device_of(n_layer);
    (layers, output_layer, act)
}

/// The weight buffers of `model` on the devices its layers were given.
#[allow(
    clippy::too_many_arguments,
    reason = "internal: the placement and where to write"
)]
pub(super) fn weights(
    model: &Model,
    params: &LlamaParams,
    gpus: &[Gpu],
    layers: &[Device],
    output_layer: Device,
    part: &'static str,
    buffers: &mut Vec<Buffer>,
    notes: &mut Vec<String>,
) -> Result<(), EstimateError> {
    let mut host_mapped: Vec<&Tensor> = Vec::new();
    let mut host_repack: u64 = 0;
    let mut host_alloc: u64 = 0;
    let mut gpu_alloc: Vec<u64> = vec![0; gpus.len()];
    let placed = tensors(model, params, gpus, layers, output_layer)?;
    let mut overridden = 0_usize;
    for &(t, role, device, by_override) in &placed {
        if by_override {
            overridden = overridden.saturating_add(1);
        }
        match device {
            Device::Host => {
                if params.repack
                    && role != Role::Input
                    && model::is_matmul_weight(t)
                    && params.cpu.repacks(t)
                {
                    add_to(&mut host_repack, t.bytes, "the repacked host weights")?;
                } else if params.mmap {
                    // The tied output projection is the token embedding tensor itself when
                    // both are on the host: mapped once.
                    if !(role == Role::Output && model.tied_output && t.name == "token_embd.weight")
                    {
                        host_mapped.push(t);
                    }
                } else if !(role == Role::Output
                    && model.tied_output
                    && t.name == "token_embd.weight")
                {
                    add_to(&mut host_alloc, align(t.bytes, 32), "the host weights")?;
                }
            }
            Device::Gpu(i) => {
                if let Some(slot) = gpu_alloc.get_mut(i) {
                    add_to(slot, Devices { gpus }.alloc(t, device), "a GPU's weights")?;
                }
            }
        }
    }
    if overridden > 0 {
        notes.push(format!(
            "{overridden} tensors placed by -ot/--cpu-moe: their layers' work runs where ggml's scheduler sends it (derived rules, docs/estimator.md)"
        ));
    }
    let host = [
        ("CPU_Mapped", mapped_span(&host_mapped)),
        ("CPU", host_alloc),
        ("CPU_REPACK", host_repack),
    ];
    let gpu = gpu_alloc.iter().enumerate().map(|(i, bytes)| {
        (
            Device::Gpu(i),
            Devices { gpus }.name(Device::Gpu(i)),
            *bytes,
        )
    });
    let all = host
        .into_iter()
        .map(|(name, bytes)| (Device::Host, name.to_owned(), bytes))
        .chain(gpu);
    for (device, name, bytes) in all.filter(|(.., bytes)| *bytes > 0) {
        buffers.push(Buffer {
            device,
            kind: BufferKind::Weights,
            name,
            part,
            bytes,
        });
    }
    if params.split_mode == SplitMode::Row && gpus.len() > 1 {
        notes.push("-sm row: weights are shown on the main GPU; llama.cpp spreads each matrix's rows over all GPUs".to_owned());
    }
    Ok(())
}

/// Every tensor with its role and its device, the tied output projection included (the token
/// embeddings again, for the output layer), and whether a tensor override (`-ot`, `--cpu-moe`)
/// moved it from its layer's device.
pub(super) fn tensors<'m>(
    model: &'m Model,
    params: &LlamaParams,
    gpus: &[Gpu],
    layers: &[Device],
    output_layer: Device,
) -> Result<Vec<(&'m Tensor, Role, Device, bool)>, EstimateError> {
    let tied = model
        .tied_output
        .then(|| model.tensors.iter().find(|t| t.name == "token_embd.weight"))
        .flatten();
    let overrides = compile_overrides(&params.overrides, gpus.len())?;
    Ok(model
        .tensors
        .iter()
        .map(|t| (t, t.role))
        .chain(tied.map(|t| (t, Role::Output)))
        .map(|(t, role)| {
            let by_layer = match role {
                Role::Input => Device::Host,
                Role::Layer(il) => layers.get(il as usize).copied().unwrap_or(Device::Host),
                Role::Output => output_layer,
            };
            let device = overrides
                .iter()
                .find(|(re, _)| re.is_match(&t.name))
                .map_or(by_layer, |(_, d)| *d);
            (t, role, device, device != by_layer)
        })
        .collect())
}
