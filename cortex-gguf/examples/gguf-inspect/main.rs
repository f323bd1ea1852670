//! Prints what a GGUF file holds.
//!
//! ```text
//! gguf-inspect [--json] [--full] FILE
//! ```
//!
//! Without `--json`: a readable summary (the model as llama.cpp describes it, the metadata, the
//! tensors). With `--json`: the stable document described in docs/gguf.md; long arrays show their
//! length and first items unless `--full`. A split set is opened from any shard.

// Sizes and counts are shown rounded to two decimals: precision beyond 2^52 does not matter.
#![allow(clippy::cast_precision_loss)]

mod json;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use cortex_gguf::{GgufModel, Value};

fn main() -> ExitCode {
    cli("gguf-inspect", std::env::args().skip(1))
}

/// The program, from its arguments; `name` prefixes its usage and errors (`cortex gguf inspect`
/// runs it too, under that name).
pub(crate) fn cli(name: &str, args: impl Iterator<Item = String>) -> ExitCode {
    let mut json = false;
    let mut full = false;
    let mut path = None;
    for arg in args {
        match arg.as_str() {
            "--json" => json = true,
            "--full" => full = true,
            "-h" | "--help" => {
                println!(
                    "Metadata and tensors of a GGUF file (every shard of a split set).\n\n\
                     usage: {name} [--json] [--full] FILE\n\n  \
                     --json  the document of docs/gguf.md (a list of them for a split set)\n  \
                     --full  long arrays in full, not their length and first items"
                );
                return ExitCode::SUCCESS;
            }
            _ if path.is_none() && !arg.starts_with("--") => path = Some(arg),
            _ => {
                eprintln!(
                    "{name}: unexpected argument {arg:?}\nusage: {name} [--json] [--full] FILE"
                );
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = path else {
        eprintln!("{name}: no FILE given\nusage: {name} [--json] [--full] FILE");
        return ExitCode::from(2);
    };
    let model = match GgufModel::open(&path) {
        Ok(model) => model,
        Err(e) => {
            eprintln!("{name}: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    if json {
        // Split sets: the document of each shard, in order.
        let docs: Result<Vec<_>, _> = model
            .shards()
            .map(|s| json::document(&s.gguf(), full))
            .collect();
        match docs {
            Ok(mut docs) if docs.len() == 1 => return emit(name, &format!("{}\n", docs.remove(0))),
            Ok(docs) => return emit(name, &format!("{}\n", serde_json::Value::from(docs))),
            Err(e) => {
                eprintln!("{name}: {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    emit(name, &summary(&model, full))
}

/// Writes `text` to stdout; a closed pipe (`| head`) ends the program quietly.
fn emit(name: &str, text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The readable summary.
fn summary(model: &GgufModel, full: bool) -> String {
    let mut out = String::new();
    macro_rules! println {
        ($($t:tt)*) => {{
            let _ = writeln!(out, $($t)*);
        }};
    }
    let gguf = model.gguf();
    let info = model.info();
    let or = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!(
        "file:          GGUF v{} ({:?}-endian), {} shard(s)",
        gguf.version(),
        gguf.byte_order(),
        model.shard_count()
    );
    println!("architecture:  {}", or(info.architecture.clone()));
    println!("name:          {}", or(info.name.clone()));
    println!("file type:     {}", info.file_type.label);
    println!("parameters:    {:.2} M", info.parameters as f64 / 1e6);
    println!(
        "tensor data:   {:.2} MiB",
        info.tensor_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "layers:        {}",
        or(info.block_count.map(|v| v.to_string()))
    );
    println!(
        "context:       {}",
        or(info.context_length.map(|v| v.to_string()))
    );
    println!(
        "embedding:     {}",
        or(info.embedding_length.map(|v| v.to_string()))
    );
    println!(
        "heads / kv:    {} / {}",
        or(info.head_count.as_ref().map(|h| format!("{h:?}"))),
        or(info.head_count_kv.as_ref().map(|h| format!("{h:?}")))
    );
    println!(
        "sliding window:{}",
        or(info.sliding_window.map(|v| format!(" {v}")))
    );
    println!(
        "experts:       {} (used {})",
        or(info.expert_count.map(|v| v.to_string())),
        or(info.expert_used_count.map(|v| v.to_string()))
    );
    println!(
        "vocab:         {}",
        or(info.vocab_size.map(|v| v.to_string()))
    );
    println!(
        "chat template: {}",
        if info.has_chat_template { "yes" } else { "no" }
    );
    for (ty, n) in &info.tensor_types {
        println!("type {ty:>8}:  {n} tensors");
    }
    out.push_str(&metadata(&gguf, full));
    println!("\ntensors ({}):", model.tensors().count());
    for (shard, t) in model.tensors() {
        println!(
            "  {:<40} {:>8} {:?} shard {} offset {}",
            t.name(),
            t.ggml_type().to_string(),
            t.dims(),
            shard + 1,
            t.offset()
        );
    }
    out
}

/// The key-value listing of the summary.
fn metadata(gguf: &cortex_gguf::Gguf<'_>, full: bool) -> String {
    let mut out = String::new();
    macro_rules! println {
        ($($t:tt)*) => {{
            let _ = writeln!(out, $($t)*);
        }};
    }
    println!("\nmetadata ({} keys):", gguf.kv_count());
    for kv in gguf.kvs() {
        let value = match &kv.value {
            Value::Array(a) => {
                let shown: Vec<String> = a
                    .iter()
                    .take(if full { usize::MAX } else { 6 })
                    .map(|v| v.map_or_else(|e| format!("<{e}>"), |v| v.to_string()))
                    .collect();
                let more = if !full && a.len() > 6 { ", ..." } else { "" };
                format!(
                    "arr[{},{}] = [{}{more}]",
                    a.elem_type(),
                    a.len(),
                    shown.join(", ")
                )
            }
            v => {
                let text = v.to_string();
                let text: String = if full {
                    text
                } else {
                    text.chars().take(80).collect()
                };
                format!("{} = {}", v.value_type(), text.replace('\n', "\\n"))
            }
        };
        println!("  {:<45} {value}", kv.key);
    }
    out
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
