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

#[path = "../support/server.rs"]
mod server;
#[path = "../support/mod.rs"]
mod support;

use server::{compare, run_server};

use cortex_gguf::estimate::{BufferKind, FlashAttn, LlamaParams, Model, Parallel, estimate};
use cortex_gguf::{GgmlType, GgufFile};

const MIB: f64 = 1024.0 * 1024.0;

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
        let run = run_server(&support::gemma(), &args);
        let mut params = s.params.clone();
        params.cpu = run.cpu;
        params.gpu_layers = cortex_gguf::estimate::GpuLayers::Count(0);
        let est = estimate(&model, &params, &[]).unwrap();

        // Every printed buffer has its estimate, by name and kind, and nothing extra is estimated.
        let cmp = compare(&s.label, &run, &est, 0.10);
        failures.extend(cmp.failures);
        worst_compute = worst_compute.max(cmp.compute_err);
        let total_err = cmp.total_err;

        let sum = |f: &dyn Fn(BufferKind) -> bool| {
            run.buffers
                .iter()
                .filter(|p| f(p.kind))
                .map(|p| p.mib)
                .sum::<f64>()
        };
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
    server::report_and_check("estimator-accuracy.md", &table, &failures);
}
