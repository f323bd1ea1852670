//! `gguf::parse_header`: parsing a memory-mapped GGUF header.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use cortex_benches::synthetic_model;
use cortex_gguf::{Gguf, GgufFile};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/gguf-bench")
}

fn gemma() -> Option<PathBuf> {
    let cache = std::env::var_os("CORTEX_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/cortex")))?;
    Some(cache.join("models/gemma-3-270m-q4_k_m.gguf")).filter(|p| p.exists())
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("gguf::parse_header");
    let mut files = vec![
        ("synthetic_1GiB", synthetic_model(&bench_dir(), 1 << 30)),
        ("synthetic_100GiB", synthetic_model(&bench_dir(), 100 << 30)),
    ];
    match gemma() {
        Some(path) => files.push(("gemma_3_270m", path)),
        None => eprintln!(
            "gguf::parse_header/gemma_3_270m skipped: run scripts/setup to install the model"
        ),
    }
    for (name, path) in files {
        // The map is made once; each iteration parses the whole header from it.
        let file = GgufFile::open(&path).expect("open");
        let bytes = file.gguf().bytes();
        group.bench_function(name, |b| {
            b.iter(|| black_box(Gguf::parse(black_box(bytes)).unwrap()));
        });
    }
    group.finish();

    // Open + map + parse, as a user calls it.
    let mut group = c.benchmark_group("gguf::open");
    for (name, size) in [
        ("synthetic_1GiB", 1u64 << 30),
        ("synthetic_100GiB", 100 << 30),
    ] {
        let path = synthetic_model(&bench_dir(), size);
        group.bench_function(name, |b| {
            b.iter(|| black_box(GgufFile::open(&path).unwrap()));
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
