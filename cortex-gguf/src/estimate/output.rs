//! The output buffer (`llama_context::output_reserve`): logits for `max(n_outputs, slots)` rows,
//! in host memory (`CUDA_Host`, pinned, when the output layer is on a CUDA GPU).

use super::context::Resolved;
use super::{Buffer, BufferKind, Device, Devices, EstimateError, MemoryKind, Model, product};

/// The output buffer.
pub(super) fn buffer(
    model: &Model,
    cx: &Resolved,
    output_layer: Device,
    devs: Devices<'_>,
    part: &'static str,
    buffers: &mut Vec<Buffer>,
) -> Result<(), EstimateError> {
    let Resolved {
        n_outputs, n_seq, ..
    } = *cx;
    let output_bytes = product(
        "the output buffer",
        [u64::from(model.n_vocab), u64::from(n_outputs.max(n_seq)), 4],
    )?;
    if model.memory != MemoryKind::None || model.n_vocab > 0 {
        let name = devs.host_of(output_layer);
        buffers.push(Buffer {
            device: Device::Host,
            kind: BufferKind::Output,
            name,
            part,
            bytes: output_bytes,
        });
    }
    Ok(())
}
