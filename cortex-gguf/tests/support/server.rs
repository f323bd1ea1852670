//! Starts the real llama-server on a model and reads the buffer sizes it prints (`-lv 4`).
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cortex_gguf::estimate::{BufferKind, Cpu, Estimate};

/// One buffer line llama-server printed.
#[derive(Debug, Clone)]
pub struct Printed {
    pub name: String,
    pub kind: BufferKind,
    pub mib: f64,
}

/// What one llama-server start printed.
pub struct Run {
    pub buffers: Vec<Printed>,
    pub cpu: Cpu,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `ggml-rpc-server` on a free loopback port, stopped when dropped: llama-server offloads to
/// it with `--rpc` as to a GPU (the scheduler splits the graph between the two backends).
pub struct RpcServer {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub endpoint: String,
}

impl RpcServer {
    pub fn start() -> Self {
        let port = free_port();
        let endpoint = format!("127.0.0.1:{port}");
        let child = Command::new(crate::support::rpc_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-t", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(&endpoint).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the RPC server did not listen on {endpoint}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, endpoint }
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts llama-server with `args`, reads its log until the slots are ready, stops it.
pub fn run_server(model: &Path, args: &[&str]) -> Run {
    let bin = crate::support::llama_server();
    let port = free_port().to_string();
    let mut child = Command::new(&bin)
        .args(["-m", model.to_str().unwrap(), "--host", "127.0.0.1"])
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
            // The last word: `CPU_Mapped`, `CUDA0`, `RPC0[127.0.0.1:PORT]` (which has a colon).
            head.split_whitespace().last().unwrap().to_owned()
        };
        let kind = if l.contains(" model buffer size =") {
            Some((BufferKind::Weights, name_before(" model buffer size")))
        } else if l.contains(" KV buffer size =") {
            Some((kv_kind, name_before(" KV buffer size")))
        } else if l.contains(" RS buffer size =") {
            Some((BufferKind::Recurrent, name_before(" RS buffer size")))
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

/// How an estimate compares with what llama-server printed.
pub struct Comparison {
    /// Every mismatch, described.
    pub failures: Vec<String>,
    /// Relative error of the total.
    pub total_err: f64,
    /// Relative error of the compute buffers.
    pub compute_err: f64,
}

/// Compares buffer by buffer: weights, KV, recurrent state and output to 0.01 MiB, compute to
/// `compute_tolerance` (relative); every printed buffer must have its estimate and the other way
/// round.
#[allow(clippy::cast_precision_loss)]
pub fn compare(label: &str, run: &Run, est: &Estimate, compute_tolerance: f64) -> Comparison {
    const MIB: f64 = 1024.0 * 1024.0;
    let mut failures = Vec::new();
    let est_mib = |kind: BufferKind, name: &str| -> Option<f64> {
        let v: Vec<_> = est
            .buffers
            .iter()
            .filter(|b| b.kind == kind && b.name == name)
            .collect();
        (!v.is_empty()).then(|| v.iter().map(|b| b.bytes as f64).sum::<f64>() / MIB)
    };
    let mut kinds_seen: Vec<(BufferKind, &str)> = Vec::new();
    for p in &run.buffers {
        if kinds_seen.contains(&(p.kind, p.name.as_str())) {
            continue;
        }
        kinds_seen.push((p.kind, p.name.as_str()));
        let real: f64 = run
            .buffers
            .iter()
            .filter(|q| q.kind == p.kind && q.name == p.name)
            .map(|q| q.mib)
            .sum();
        let Some(e) = est_mib(p.kind, &p.name) else {
            failures.push(format!("{label}: no estimate for {} {:?}", p.name, p.kind));
            continue;
        };
        if p.kind == BufferKind::Compute {
            let err = (e - real).abs() / real;
            if err > compute_tolerance {
                failures.push(format!(
                    "{label}: {} compute {e:.2} MiB estimated, {real:.2} MiB real ({:.1}%)",
                    p.name,
                    err * 100.0
                ));
            }
        } else if (e - real).abs() > 0.01 * kinds_count(run, p.kind, &p.name) {
            failures.push(format!(
                "{label}: {} {:?} {e:.2} MiB estimated, {real:.2} MiB real",
                p.name, p.kind
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
                "{label}: estimated {} {:?} that llama-server did not allocate",
                b.name, b.kind
            ));
        }
    }
    let real_total: f64 = run.buffers.iter().map(|p| p.mib).sum();
    let real_compute: f64 = run
        .buffers
        .iter()
        .filter(|p| p.kind == BufferKind::Compute)
        .map(|p| p.mib)
        .sum();
    let est_compute = est
        .buffers
        .iter()
        .filter(|b| b.kind == BufferKind::Compute)
        .map(|b| b.bytes as f64)
        .sum::<f64>()
        / MIB;
    Comparison {
        failures,
        total_err: (est.total() as f64 / MIB - real_total).abs() / real_total,
        compute_err: (est_compute - real_compute).abs() / real_compute,
    }
}

/// Printed lines of one kind (each rounded to 0.01 MiB on its own).
#[allow(clippy::cast_precision_loss)]
fn kinds_count(run: &Run, kind: BufferKind, name: &str) -> f64 {
    run.buffers
        .iter()
        .filter(|p| p.kind == kind && p.name == name)
        .count() as f64
}

/// Writes `report` to `target/<file>` (docs/estimator.md quotes these tables), prints it, and
/// fails with every mismatch.
pub fn report_and_check(file: &str, report: &str, failures: &[String]) {
    let out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(file);
    std::fs::write(&out, report).unwrap();
    println!("{report}");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
