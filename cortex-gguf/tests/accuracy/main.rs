//! The estimator against the real llama-server (pinned build 11434) on the real Gemma 3 270M
//! model: for each setting of the matrix the issue names (contexts 2048 / 8192 / 32768, parallel
//! auto / 1 / 4, KV unified on and off, cache f16 and `q8_0`, `--swa-full` on and off) and a few
//! more (flash attention off, `--no-mmap`, `--no-repack`, micro-batches), llama-server is started
//! with `-lv 4`, the buffer sizes it prints are read, and the estimate for the same flags is
//! compared: weights, KV and output buffers to 0.01 MiB, the compute buffer to 10%. No expected
//! number is typed in: the expectations are what llama-server prints.
//!
//! The table of every run is written to `target/estimator-accuracy.md` (docs/estimator.md quotes
//! it).

#![allow(
    clippy::cast_precision_loss,
    clippy::too_many_lines,
    clippy::format_push_string,
    reason = "test code: MiB figures for display and one story per test"
)]

#[path = "../support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cortex_gguf::estimate::{
    BufferKind, Cpu, Device, FlashAttn, LlamaParams, Model, Parallel, estimate,
};
use cortex_gguf::{GgmlType, GgufFile};

const MIB: f64 = 1024.0 * 1024.0;

/// One buffer line llama-server printed.
#[derive(Debug, Clone)]
struct Printed {
    name: String,
    kind: BufferKind,
    mib: f64,
}

/// What one llama-server start printed.
struct Run {
    buffers: Vec<Printed>,
    cpu: Cpu,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts llama-server with `args`, reads its log until the slots are ready, stops it.
fn run_server(args: &[&str]) -> Run {
    let bin = support::llama_server();
    let port = free_port().to_string();
    let mut child = Command::new(&bin)
        .args([
            "-m",
            support::gemma().to_str().unwrap(),
            "--host",
            "127.0.0.1",
        ])
        .args(["--port", &port, "-lv", "4", "-fit", "off"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let started = Instant::now();
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let done = line.contains("all slots are idle") || line.contains("server is listening");
        lines.push(line);
        if done || started.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    parse(&lines, args)
}

fn mib_of(line: &str) -> f64 {
    let (_, rest) = line.split_once("buffer size =").unwrap();
    rest.trim().trim_end_matches("MiB").trim().parse().unwrap()
}

/// The buffer lines of a llama-server log.
fn parse(lines: &[String], args: &[&str]) -> Run {
    let mut buffers = Vec::new();
    let mut kv_kind = BufferKind::KvFull;
    let mut cpu = Cpu::default();
    for l in lines {
        if l.contains("system_info:") {
            cpu = Cpu::new(l.contains("AVX2 = 1"), l.contains("AVX512 = 1"));
        }
        if l.contains("creating non-SWA KV cache") {
            kv_kind = BufferKind::KvFull;
        }
        if l.contains("creating     SWA KV cache") {
            kv_kind = BufferKind::KvSwa;
        }
        let name_before = |marker: &str| {
            let (head, _) = l.split_once(marker).unwrap();
            head.rsplit(':').next().unwrap().trim().to_owned()
        };
        let kind = if l.contains(" model buffer size =") {
            Some((BufferKind::Weights, name_before(" model buffer size")))
        } else if l.contains(" KV buffer size =") {
            Some((kv_kind, name_before(" KV buffer size")))
        } else if l.contains(" output buffer size =") {
            Some((BufferKind::Output, name_before(" output buffer size")))
        } else if l.contains(" compute buffer size =") {
            Some((BufferKind::Compute, name_before(" compute buffer size")))
        } else {
            None
        };
        if let Some((kind, name)) = kind {
            buffers.push(Printed {
                name,
                kind,
                mib: mib_of(l),
            });
        }
    }
    assert!(
        buffers.iter().any(|b| b.kind == BufferKind::Compute),
        "llama-server {args:?} did not get as far as its compute buffer; log:\n{}",
        lines.join("\n")
    );
    Run { buffers, cpu }
}

/// llama-server flags for one setting, and the same setting as estimator parameters.
struct Setting {
    label: String,
    args: Vec<String>,
    params: LlamaParams,
}

fn setting(label: &str, args: &[&str], f: impl FnOnce(&mut LlamaParams)) -> Setting {
    let mut params = LlamaParams::default();
    f(&mut params);
    Setting {
        label: label.to_owned(),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        params,
    }
}

fn matrix() -> Vec<Setting> {
    let mut out = Vec::new();
    for ctx in [2048u32, 8192, 32768] {
        for np in [None, Some(1u32), Some(4)] {
            for unified in [true, false] {
                for (ct, ty) in [("f16", GgmlType::F16), ("q8_0", GgmlType::Q8_0)] {
                    for swa_full in [false, true] {
                        let mut args = vec!["-c".to_owned(), ctx.to_string()];
                        if let Some(n) = np {
                            args.extend(["-np".to_owned(), n.to_string()]);
                        }
                        args.push(if unified { "-kvu" } else { "-no-kvu" }.to_owned());
                        args.extend(["-ctk", ct, "-ctv", ct].map(str::to_owned));
                        if swa_full {
                            args.push("--swa-full".to_owned());
                        }
                        let mut params = LlamaParams {
                            ctx_size: ctx,
                            parallel: np.map_or(Parallel::Auto, Parallel::Slots),
                            kv_unified: Some(unified),
                            cache_type_k: ty,
                            cache_type_v: ty,
                            swa_full,
                            ..LlamaParams::default()
                        };
                        params.gpu_layers = cortex_gguf::estimate::GpuLayers::Count(0);
                        out.push(Setting {
                            label: args.join(" "),
                            args,
                            params,
                        });
                    }
                }
            }
        }
    }
    out.push(setting(
        "-c 4096 -np 1 -fa off",
        &["-c", "4096", "-np", "1", "-fa", "off"],
        |p| {
            p.ctx_size = 4096;
            p.parallel = Parallel::Slots(1);
            p.flash_attn = FlashAttn::Off;
        },
    ));
    out.push(setting(
        "-c 4096 -fa off -ub 2048",
        &["-c", "4096", "-fa", "off", "-ub", "2048"],
        |p| {
            p.ctx_size = 4096;
            p.flash_attn = FlashAttn::Off;
            p.ubatch = 2048;
        },
    ));
    out.push(setting(
        "-c 4096 -ub 128",
        &["-c", "4096", "-ub", "128"],
        |p| {
            p.ctx_size = 4096;
            p.ubatch = 128;
        },
    ));
    out.push(setting(
        "-c 8192 -lm none",
        &["-c", "8192", "-lm", "none"],
        |p| {
            p.ctx_size = 8192;
            p.mmap = false;
        },
    ));
    out.push(setting(
        "-c 8192 --no-repack",
        &["-c", "8192", "--no-repack"],
        |p| {
            p.ctx_size = 8192;
            p.repack = false;
        },
    ));
    out.push(setting("(defaults)", &[], |_| {}));
    out
}

#[test]
fn estimates_match_llama_server_over_the_matrix() {
    let file = GgufFile::open(support::gemma()).unwrap();
    let model = Model::from_gguf(&file.gguf()).unwrap();

    let mut table = String::from(
        "| flags | weights MiB (est / real) | KV MiB | output MiB | compute MiB | compute err | total err |\n|---|---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    let mut worst_total = 0.0f64;
    let mut worst_compute = 0.0f64;
    for s in matrix() {
        let args: Vec<&str> = s.args.iter().map(String::as_str).collect();
        let run = run_server(&args);
        let mut params = s.params.clone();
        params.cpu = run.cpu;
        params.gpu_layers = cortex_gguf::estimate::GpuLayers::Count(0);
        let est = estimate(&model, &params, &[]).unwrap();

        // Every printed buffer has its estimate, by name and kind, and nothing extra is estimated.
        let est_mib = |kind: BufferKind, name: &str| -> Option<f64> {
            let v: Vec<_> = est
                .buffers
                .iter()
                .filter(|b| b.device == Device::Host && b.kind == kind && b.name == name)
                .collect();
            (!v.is_empty()).then(|| v.iter().map(|b| b.bytes as f64).sum::<f64>() / MIB)
        };
        for p in &run.buffers {
            let Some(e) = est_mib(p.kind, &p.name) else {
                failures.push(format!(
                    "{}: no estimate for {} {:?}",
                    s.label, p.name, p.kind
                ));
                continue;
            };
            if p.kind == BufferKind::Compute {
                let err = (e - p.mib).abs() / p.mib;
                worst_compute = worst_compute.max(err);
                if err > 0.10 {
                    failures.push(format!(
                        "{}: compute {e:.2} MiB estimated, {:.2} MiB real ({:.1}%)",
                        s.label,
                        p.mib,
                        err * 100.0
                    ));
                }
            } else if (e - p.mib).abs() > 0.01 {
                failures.push(format!(
                    "{}: {} {:?} {e:.2} MiB estimated, {:.2} MiB real",
                    s.label, p.name, p.kind, p.mib
                ));
            }
        }
        for b in &est.buffers {
            if !run
                .buffers
                .iter()
                .any(|p| p.kind == b.kind && p.name == b.name)
            {
                failures.push(format!(
                    "{}: estimated {} {:?} that llama-server did not allocate",
                    s.label, b.name, b.kind
                ));
            }
        }

        let sum = |f: &dyn Fn(BufferKind) -> bool| {
            run.buffers
                .iter()
                .filter(|p| f(p.kind))
                .map(|p| p.mib)
                .sum::<f64>()
        };
        let real_total = sum(&|_| true);
        let est_total = est.total() as f64 / MIB;
        let total_err = (est_total - real_total).abs() / real_total;
        worst_total = worst_total.max(total_err);
        let h = est.host();
        let real_compute = sum(&|k| k == BufferKind::Compute);
        table.push_str(&format!(
            "| `{}` | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1}% | {:.2}% |\n",
            s.label,
            h.weights as f64 / MIB,
            sum(&|k| k == BufferKind::Weights),
            h.kv() as f64 / MIB,
            sum(&|k| matches!(k, BufferKind::KvFull | BufferKind::KvSwa | BufferKind::Recurrent)),
            h.output as f64 / MIB,
            sum(&|k| k == BufferKind::Output),
            h.compute as f64 / MIB,
            real_compute,
            (h.compute as f64 / MIB - real_compute).abs() / real_compute * 100.0,
            total_err * 100.0,
        ));
    }
    table.push_str(&format!(
        "\nWorst relative error of the total: {:.2}%; of the compute buffer: {:.1}%.\n",
        worst_total * 100.0,
        worst_compute * 100.0
    ));
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/estimator-accuracy.md");
    std::fs::write(&out, &table).unwrap();
    println!("{table}");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
