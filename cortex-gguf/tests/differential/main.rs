//! `gguf-inspect --json --full` against the reference reader (`PyPI` `gguf`) on the same files: the
//! real Gemma model, every vocab file of the pinned llama.cpp, and writer outputs. Same keys, value
//! types and values, tensor names, types, dims, offsets and sizes, version, byte order, alignment
//! and data offset.
//!
//! gguf-py cannot read GGUF v1 (it refuses the version), so v1 writer outputs are covered by the
//! round-trip property tests instead.

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use cortex_gguf::{ByteOrder, GgmlType, GgufBuilder, OwnedValue, ValueType};
use serde_json::Value as Json;

/// The example binary, which `cargo test` builds beside the test binaries.
fn inspect_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/gguf-inspect");
    assert!(
        bin.exists(),
        "{} was not built: run the tests with `cargo test --all-features`",
        bin.display()
    );
    bin
}

/// Runs `command` on `file` and reads the JSON document it prints.
fn document(command: &mut Command, file: &Path) -> Json {
    let out = command.arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ours(file: &Path) -> Json {
    document(
        Command::new(inspect_binary()).args(["--json", "--full"]),
        file,
    )
}

fn reference(file: &Path) -> Json {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential/reference.py");
    document(Command::new(support::python()).arg(script), file)
}

/// The first place two documents differ, as a path.
fn first_difference(ours: &Json, theirs: &Json, path: &str) -> Option<String> {
    match (ours, theirs) {
        (Json::Object(left), Json::Object(right)) => {
            let mut keys: Vec<&String> = left.keys().chain(right.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .find_map(|key| match (left.get(key), right.get(key)) {
                    (Some(l), Some(r)) => first_difference(l, r, &format!("{path}.{key}")),
                    (l, r) => Some(format!("{path}.{key}: {l:?} vs {r:?}")),
                })
        }
        (Json::Array(left), Json::Array(right)) if left.len() == right.len() => left
            .iter()
            .zip(right)
            .enumerate()
            .find_map(|(i, (l, r))| first_difference(l, r, &format!("{path}[{i}]"))),
        (l, r) if l == r => None,
        (l, r) => Some(format!("{path}: {l} vs {r}")),
    }
}

fn compare(file: &Path) {
    let (a, b) = (ours(file), reference(file));
    if let Some(diff) = first_difference(&a, &b, "$") {
        panic!(
            "{}: gguf-inspect and gguf-py differ at {diff}",
            file.display()
        );
    }
}

#[test]
fn the_gemma_model() {
    compare(&support::gemma());
}

#[test]
fn every_vocab_file() {
    // gguf-py takes seconds per file: two at a time, one per core.
    let files = support::vocab_files();
    for pair in files.chunks(2) {
        std::thread::scope(|s| {
            for file in pair {
                s.spawn(|| compare(file));
            }
        });
    }
}

#[test]
fn writer_outputs() {
    let dir = std::env::temp_dir().join(format!("cortex-gguf-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let every_type = |b: GgufBuilder| {
        b.kv("general.architecture", "llama")
            .kv("u8", 200u8)
            .kv("i8", -100i8)
            .kv("u16", 60000u16)
            .kv("i16", -30000i16)
            .kv("u32", 4_000_000_000u32)
            .kv("i32", -2_000_000_000i32)
            .kv("f32", 0.1f32)
            .kv("bool", true)
            .kv("str", "héllo \"wörld\"\n")
            .kv("u64", u64::MAX)
            .kv("i64", i64::MIN)
            .kv("f64", -1.5e300f64)
            .kv("f32.nan", f32::NAN)
            .kv("f32.inf", f32::NEG_INFINITY)
            .kv("arr.str", OwnedValue::strings(["a", "", "ünïcode"]))
            .kv(
                "arr.f32",
                OwnedValue::array(ValueType::F32, vec![1.0f32.into(), (-0.25f32).into()]),
            )
            .kv(
                "arr.i64",
                OwnedValue::array(ValueType::I64, vec![i64::MAX.into()]),
            )
            .kv(
                "arr.bool",
                OwnedValue::array(ValueType::Bool, vec![true.into(), false.into()]),
            )
            .kv("arr.empty", OwnedValue::array(ValueType::U32, vec![]))
            .tensor("a", [256, 3], GgmlType::Q4_K)
            .tensor("b", [7], GgmlType::F32)
            .tensor("c", [32, 2, 3, 4], GgmlType::Q8_0)
            .tensor("d", [64, 1], GgmlType::BF16)
    };
    let files = [
        ("v3-le.gguf", every_type(GgufBuilder::new())),
        (
            "v3-be.gguf",
            every_type(GgufBuilder::new().byte_order(ByteOrder::Big)),
        ),
        ("v2-le.gguf", every_type(GgufBuilder::new().version(2))),
        (
            "v3-align64.gguf",
            every_type(GgufBuilder::new().alignment(64)),
        ),
        ("empty.gguf", GgufBuilder::new()),
    ];
    for (name, builder) in files {
        let path = dir.join(name);
        std::fs::write(&path, builder.build()).unwrap();
        compare(&path);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
