//! Estimates what llama-server will allocate, per GPU and on the host, for a llama-server command
//! line pasted as is.
//!
//! ```text
//! gguf-estimate [--json] [--gpu NAME:TOTAL_MIB[:FREE_MIB]]... [--gpus FILE.toml] [--nvml]
//!               [--rpc-mib TOTAL_MIB] [llama-server] -m MODEL.gguf [llama-server flags]
//! ```
//!
//! llama-server's `--rpc host:port,…` adds those `ggml-rpc-server` devices before the GPUs, as
//! llama.cpp does; `--rpc-mib` says how much memory each reports (required with `--rpc`).
//!
//! GPUs come from `--gpu` (repeatable, in `CUDA0, CUDA1, …` order), a TOML inventory
//! (`[[gpu]]` tables: index, name, `total_bytes`, `free_bytes`), or `--nvml` (the NVIDIA driver; needs
//! the `nvml` feature); with none, everything is estimated on the host, as llama-server does
//! without a GPU. The text output is one table per device; `--json` prints the stable document
//! described in docs/estimator.md (schema `cortex.estimate/1`).

#![allow(clippy::cast_precision_loss, reason = "MiB for display")]

use std::process::ExitCode;

use cortex_gguf::estimate::{
    self, BufferKind, Device, Draft, Estimate, LlamaArgs, Model, parse_llama_args,
};
use cortex_gguf::{GgufModel, Gpu, GpuBackend, GpuInventory as _, StaticInventory};
use serde_json::json;

const USAGE: &str = "usage: {name} [--json] [--gpu NAME:TOTAL_MIB[:FREE_MIB]]... [--gpus FILE.toml] [--nvml] [--rpc-mib TOTAL_MIB] [llama-server] -m MODEL.gguf [llama-server flags]";

/// `--gpus FILE.toml`: `[[gpu]]` tables.
#[derive(serde::Deserialize)]
struct GpusFile {
    gpu: StaticInventory,
}

fn main() -> ExitCode {
    cli("gguf-estimate", std::env::args().skip(1))
}

/// The program, from its arguments; `name` prefixes its usage and errors (`cortex gguf estimate`
/// runs it too, under that name).
pub(crate) fn cli(name: &str, args: impl Iterator<Item = String>) -> ExitCode {
    match run(name, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(name: &str, args: impl Iterator<Item = String>) -> Result<ExitCode, String> {
    let mut json_out = false;
    let mut gpus: Vec<Gpu> = Vec::new();
    let mut rpc_mib: Option<u64> = None;
    let mut rest = Vec::new();
    let mut args = args;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json_out = true,
            "-h" | "--help" => {
                println!(
                    "What llama-server b11434 will allocate per GPU and on the host for a command line.\n\n{}",
                    USAGE.replace("{name}", name)
                );
                return Ok(ExitCode::SUCCESS);
            }
            "--gpu" => {
                let v = args.next().ok_or("--gpu needs NAME:TOTAL_MIB[:FREE_MIB]")?;
                gpus.push(parse_gpu(gpus.len(), &v)?);
            }
            "--gpus" => {
                let path = args.next().ok_or("--gpus needs a TOML file")?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                let file: GpusFile = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
                gpus.extend(file.gpu.gpus().map_err(|e| e.to_string())?);
            }
            "--nvml" => gpus.extend(nvml()?),
            "--rpc-mib" => {
                let v = args.next().ok_or("--rpc-mib needs TOTAL_MIB")?;
                rpc_mib = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("--rpc-mib {v}: not a number of MiB"))?,
                );
            }
            "llama-server" if rest.is_empty() => {}
            _ => rest.push(a),
        }
    }
    let parsed = parse_llama_args(&rest).map_err(|e| e.to_string())?;
    let path = parsed.model.clone().ok_or_else(|| {
        format!(
            "no model: pass -m MODEL.gguf\n{}",
            USAGE.replace("{name}", name)
        )
    })?;
    if !parsed.rpc.is_empty() {
        let mib = rpc_mib.ok_or(
            "llama-server --rpc: give the memory each RPC server reports with --rpc-mib TOTAL_MIB",
        )?;
        let rpc = parsed.rpc.iter().map(|e| Gpu::rpc(e.clone(), mib << 20));
        gpus.splice(0..0, rpc);
    }
    let (est, ladder) = compute(&path, &parsed, &gpus)?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&document(
                &path.display().to_string(),
                &est,
                &ladder,
                &parsed
            ))
            .map_err(|e| e.to_string())?
        );
    } else {
        print_tables(&path.display().to_string(), &est, &ladder, &parsed);
    }
    Ok(if est.fits() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// The estimate of the model at `path` for `parsed` on `gpus`, and the ladder of changes.
fn compute(
    path: &std::path::Path,
    parsed: &LlamaArgs,
    gpus: &[Gpu],
) -> Result<(Estimate, Vec<estimate::Suggestion>), String> {
    let mut params = parsed.params.clone();
    let model = load(path)?;
    attach(&mut params, parsed)?;
    let est = estimate::estimate(&model, &params, gpus).map_err(|e| e.to_string())?;
    let ladder = estimate::suggestions(&model, &params, gpus).map_err(|e| e.to_string())?;
    Ok((est, ladder))
}

/// The `cortex.estimate/1` document `--json` prints for the llama-server flags `args` (with
/// `-m`) on `gpus`: what `cortex serve`'s admin page shows, the same numbers.
#[allow(
    dead_code,
    reason = "called by the `cortex` binary, which compiles this file as a module"
)]
pub(crate) fn json_document(args: &[String], gpus: &[Gpu]) -> Result<serde_json::Value, String> {
    let parsed = parse_llama_args(args).map_err(|e| e.to_string())?;
    let path = parsed.model.clone().ok_or("no model: pass -m MODEL.gguf")?;
    let (est, ladder) = compute(&path, &parsed, gpus)?;
    Ok(document(
        &path.display().to_string(),
        &est,
        &ladder,
        &parsed,
    ))
}

pub(crate) fn load(path: &std::path::Path) -> Result<Model, String> {
    let file = GgufModel::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Model::from_parts(&file.gguf(), file.tensors()).map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn attach(params: &mut estimate::LlamaParams, parsed: &LlamaArgs) -> Result<(), String> {
    if let Some(d) = &parsed.draft {
        let mut draft = Draft::new(load(d)?);
        draft.gpu_layers = parsed.draft_gpu_layers;
        draft.n_max = parsed.draft_n_max;
        params.draft = Some(draft);
    }
    if let Some(m) = &parsed.mmproj {
        params.mmproj = Some(load(m)?);
    }
    for l in &parsed.lora {
        params.lora.push(load(l)?);
    }
    Ok(())
}

fn parse_gpu(index: usize, v: &str) -> Result<Gpu, String> {
    let mut parts = v.split(':');
    let name = parts.next().unwrap_or_default();
    let mib = |s: Option<&str>| -> Result<Option<u64>, String> {
        s.map(|s| {
            s.parse::<u64>()
                .map(|m| m << 20)
                .map_err(|_| format!("--gpu {v}: `{s}` is not a number of MiB"))
        })
        .transpose()
    };
    let total = mib(parts.next())?
        .ok_or_else(|| format!("--gpu {v}: expected NAME:TOTAL_MIB[:FREE_MIB]"))?;
    let mut gpu = Gpu::new(u32::try_from(index).unwrap_or(u32::MAX), name, total);
    if let Some(free) = mib(parts.next())? {
        gpu = gpu.with_free_bytes(free);
    }
    Ok(gpu)
}

#[cfg(feature = "nvml")]
fn nvml() -> Result<Vec<Gpu>, String> {
    cortex_gguf::NvmlInventory::new()
        .and_then(|n| n.gpus())
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "nvml"))]
fn nvml() -> Result<Vec<Gpu>, String> {
    Err("--nvml needs the `nvml` feature (cargo run --features nvml,mmap,serde --example gguf-estimate)".to_owned())
}

fn device_name(est: &Estimate, d: Device) -> String {
    match d {
        Device::Host => "host".to_owned(),
        Device::Gpu(i) => match est.gpus.get(i) {
            Some(g) if g.backend == GpuBackend::Cuda => {
                format!("{} ({})", est.device_name(d), g.name)
            }
            _ => est.device_name(d),
        },
    }
}

fn mib(b: u64) -> String {
    estimate::mib(b)
}

fn devices(est: &Estimate) -> Vec<Device> {
    (0..est.gpus.len())
        .map(Device::Gpu)
        .chain([Device::Host])
        .collect()
}

/// How far to trust the figures, the estimate's notes and what was ignored.
fn print_margins(est: &Estimate, parsed: &LlamaArgs) {
    println!(
        "margin: weights, KV and output in host memory and on RPC devices are exact (measured \
         against llama-server); on a CUDA GPU they are derived from its rules, not measured; \
         compute buffers are approximate (docs/estimator.md)"
    );
    for n in &est.notes {
        println!("note: {n}");
    }
    if !parsed.ignored.is_empty() {
        println!(
            "ignored (no effect on memory): {}",
            parsed.ignored.join(" ")
        );
    }
}

fn print_tables(path: &str, est: &Estimate, ladder: &[estimate::Suggestion], parsed: &LlamaArgs) {
    let c = &est.context;
    println!("{path}");
    println!(
        "context {} ({} per sequence, {} sequences, KV {}), flash attention {}, n_batch {}, n_ubatch {}, -ngl {}",
        c.n_ctx,
        c.n_ctx_seq,
        c.n_seq,
        if c.kv_unified {
            "unified"
        } else {
            "per sequence"
        },
        if c.flash_attn { "on" } else { "off" },
        c.n_batch,
        c.n_ubatch,
        c.gpu_layers
    );
    println!();
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "device (MiB)", "weights", "KV full", "KV SWA", "recurrent", "output", "compute", "total"
    );
    for d in devices(est) {
        let t = est.totals(d);
        if t.total() == 0 && d != Device::Host {
            continue;
        }
        let free = match d {
            Device::Gpu(i) => est
                .gpus
                .get(i)
                .map(|g| format!("  (free {})", mib(g.free())))
                .unwrap_or_default(),
            Device::Host => String::new(),
        };
        println!(
            "{:<28} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}{free}",
            device_name(est, d),
            mib(t.weights),
            mib(t.kv_full),
            mib(t.kv_swa),
            mib(t.recurrent),
            mib(t.output),
            mib(t.compute),
            mib(t.total())
        );
    }
    println!();
    for d in devices(est) {
        let layers: Vec<usize> = est
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == d)
            .map(|(i, _)| i)
            .collect();
        if !layers.is_empty() {
            println!("layers on {}: {}", device_name(est, d), ranges(&layers));
        }
    }
    println!("output layer on {}", device_name(est, est.output_layer));
    print_margins(est, parsed);
    for (i, short) in est.shortfalls() {
        println!(
            "does not fit: {} is short by {} MiB",
            est.device_name(Device::Gpu(i)),
            mib(short)
        );
    }
    for s in ladder {
        let worst = s
            .estimate
            .shortfalls()
            .iter()
            .map(|(_, b)| *b)
            .max()
            .unwrap_or(0);
        println!(
            "try {:<28} {}: {}",
            s.flags,
            if s.fits {
                "fits".to_owned()
            } else {
                format!("still short by {} MiB", mib(worst))
            },
            s.reason
        );
    }
}

fn ranges(v: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(&start) = v.get(i) {
        let mut end = start;
        while v.get(i + 1) == Some(&(end + 1)) {
            end += 1;
            i += 1;
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

fn kind_name(k: BufferKind) -> &'static str {
    match k {
        BufferKind::Weights => "weights",
        BufferKind::KvFull => "kv_full",
        BufferKind::KvSwa => "kv_swa",
        BufferKind::Recurrent => "recurrent",
        BufferKind::Output => "output",
        BufferKind::Compute => "compute",
        _ => "other",
    }
}

fn device_id(est: &Estimate, d: Device) -> String {
    match d {
        Device::Host => "host".to_owned(),
        Device::Gpu(_) => est.device_name(d),
    }
}

/// The `cortex.estimate/1` document (docs/estimator.md).
fn document(
    path: &str,
    est: &Estimate,
    ladder: &[estimate::Suggestion],
    parsed: &LlamaArgs,
) -> serde_json::Value {
    let c = &est.context;
    json!({
        "schema": "cortex.estimate/1",
        "model": path,
        "context": {
            "n_ctx": c.n_ctx, "n_ctx_seq": c.n_ctx_seq, "n_seq": c.n_seq, "kv_unified": c.kv_unified,
            "swa_cells": c.swa_cells, "flash_attn": c.flash_attn, "n_batch": c.n_batch,
            "n_ubatch": c.n_ubatch, "n_outputs": c.n_outputs, "gpu_layers": c.gpu_layers,
        },
        "devices": devices(est).into_iter().map(|d| {
            let t = est.totals(d);
            let gpu = match d { Device::Gpu(i) => est.gpus.get(i), Device::Host => None };
            json!({
                "device": device_id(est, d),
                "name": gpu.map(|g| g.name.clone()),
                "free_bytes": gpu.map(Gpu::free),
                "weights": t.weights, "kv_full": t.kv_full, "kv_swa": t.kv_swa,
                "recurrent": t.recurrent, "output": t.output, "compute": t.compute, "total": t.total(),
                "fits": gpu.is_none_or(|g| t.total() <= g.free()),
                "layers": est.layers.iter().enumerate().filter(|(_, l)| **l == d).map(|(i, _)| i).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
        "output_layer": device_id(est, est.output_layer),
        "buffers": est.buffers.iter().map(|b| json!({
            "device": device_id(est, b.device), "name": b.name, "kind": kind_name(b.kind), "part": b.part, "bytes": b.bytes,
            "basis": b.basis().as_str(),
        })).collect::<Vec<_>>(),
        "total": est.total(),
        "fits": est.fits(),
        "notes": est.notes,
        "ignored_flags": parsed.ignored,
        "suggestions": ladder.iter().map(|s| json!({
            "flags": s.flags, "reason": s.reason, "fits": s.fits,
            "gpu_totals": (0..s.estimate.gpus.len()).map(|i| s.estimate.totals(Device::Gpu(i)).total()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}
