//! Real files: the Gemma 3 270M model and the vocab-only GGUFs of the pinned llama.cpp source, checked
//! against what the real llama-server printed when it loaded the same Gemma file
//! (`testdata/llama-server-captures/startup_log_default_lv4.txt`). No expected value is typed in.

// Test code: sizes are small and known, and a long test reads better as one story.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::too_many_lines
)]

#[path = "../support/mod.rs"]
mod support;

use cortex_gguf::{GgmlType, GgufFile, GgufModel, ModelInfo, Value};

/// The lines of llama-server's startup log after `marker`.
fn log_lines(marker: &str) -> Vec<String> {
    let log = std::fs::read_to_string(
        support::facts().join("llama-server-captures/startup_log_default_lv4.txt"),
    )
    .unwrap();
    log.lines()
        .filter_map(|l| l.split_once(marker).map(|(_, rest)| rest.to_owned()))
        .collect()
}

fn log_value(key: &str) -> String {
    log_lines("print_info: ")
        .into_iter()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("{key} not in the startup log"))
}

/// How llama.cpp's loader prints a value's type: `u32`, `str`, `arr[str,262144]`.
fn llama_type(v: &Value<'_>) -> String {
    match v {
        Value::Array(a) => format!("arr[{},{}]", a.elem_type().name(), a.len()),
        v => v.value_type().name().to_owned(),
    }
}

#[test]
fn gemma_matches_what_llama_server_printed() {
    let file = GgufFile::open(support::gemma()).unwrap();
    let gguf = file.gguf();

    // "loaded meta data with 33 key-value pairs and 236 tensors from ... (version GGUF V3 (latest))"
    let loaded = log_lines("llama_model_loader: loaded meta data with ")
        .pop()
        .unwrap();
    assert!(
        loaded.starts_with(&format!(
            "{} key-value pairs and {} tensors",
            gguf.kv_count(),
            gguf.tensor_count()
        )),
        "{loaded}"
    );
    assert_eq!(
        log_value("file format"),
        format!("GGUF V{} (latest)", gguf.version())
    );

    // "- kv   7:                      gemma3.context_length u32              = 32768"
    let dumped: Vec<(String, String, String)> = log_lines("llama_model_loader: - kv ")
        .into_iter()
        .map(|l| {
            let (_, rest) = l.split_once(':').unwrap();
            let (left, value) = rest.split_once(" = ").unwrap();
            let mut words = left.split_whitespace();
            let key = words.next().unwrap().to_owned();
            let ty = words.next().unwrap().to_owned();
            (key, ty, value.to_owned())
        })
        .collect();
    assert_eq!(dumped.len(), gguf.kv_count());
    for ((key, ty, printed), kv) in dumped.iter().zip(gguf.kvs()) {
        assert_eq!(kv.key, key, "keys in file order");
        assert_eq!(&llama_type(&kv.value), ty, "type of {key}");
        match kv.value {
            Value::U32(v) => assert_eq!(&v.to_string(), printed, "{key}"),
            Value::String(s) => assert_eq!(s, printed, "{key}"),
            Value::Bool(b) => assert_eq!(&b.to_string(), printed, "{key}"),
            Value::F32(f) => assert_eq!(&format!("{f:.6}"), printed, "{key}"),
            _ => {}
        }
    }

    // "- type q4_K:   27 tensors", in llama.cpp's order (by type id).
    let histogram: Vec<(GgmlType, u32)> = log_lines("llama_model_loader: - type ")
        .into_iter()
        .map(|l| {
            let (name, count) = l.split_once(':').unwrap();
            let count = count.trim().trim_end_matches(" tensors").parse().unwrap();
            (GgmlType::from_name(name.trim()).unwrap(), count)
        })
        .collect();
    let info = ModelInfo::new(&gguf);
    assert_eq!(info.tensor_types, histogram);
    assert_eq!(info.file_type.label, log_value("file type"));
    assert!(!info.file_type.guessed);
    assert_eq!(
        format!("{:.2} M", info.parameters as f64 / 1e6),
        log_value("model params")
    );
    assert_eq!(
        info.architecture.as_deref(),
        Some(log_value("arch").as_str())
    );
    assert_eq!(
        info.name.as_deref(),
        Some(log_value("general.name").as_str())
    );
    assert_eq!(info.block_count.unwrap().to_string(), log_value("n_layer"));
    assert_eq!(
        info.context_length.unwrap().to_string(),
        log_value("n_ctx_train")
    );
    assert_eq!(
        info.embedding_length.unwrap().to_string(),
        log_value("n_embd")
    );
    assert_eq!(
        info.head_count.unwrap().max().to_string(),
        log_value("n_head")
    );
    assert_eq!(
        info.head_count_kv.unwrap().max().to_string(),
        log_value("n_head_kv")
    );
    assert_eq!(
        info.key_length.unwrap().to_string(),
        log_value("n_embd_head_k")
    );
    assert_eq!(
        info.value_length.unwrap().to_string(),
        log_value("n_embd_head_v")
    );
    assert_eq!(info.sliding_window.unwrap().to_string(), log_value("n_swa"));
    assert_eq!(info.vocab_size.unwrap().to_string(), log_value("n_vocab"));
    assert_eq!(
        info.feed_forward_length.unwrap().max().to_string(),
        log_value("n_ff")
    );

    // Every tensor's data lies inside the file, and the last one ends at its end (no trailing bytes).
    let last = gguf
        .tensors()
        .max_by_key(cortex_gguf::TensorInfo::offset)
        .unwrap();
    assert_eq!(
        gguf.data_offset() + last.offset() + last.bytes().unwrap(),
        file.len()
    );
    for t in gguf.tensors() {
        assert_eq!(
            gguf.tensor_data(&t).unwrap().len() as u64,
            t.bytes().unwrap()
        );
    }
    // The tokenizer arrays iterate lazily to their declared lengths, every token valid UTF-8.
    let tokens = gguf
        .get::<cortex_gguf::Array<'_>>("tokenizer.ggml.tokens")
        .unwrap();
    assert_eq!(tokens.iter().flatten().count() as u64, tokens.len());
    assert_eq!(tokens.get(2).unwrap().unwrap(), Value::String("<bos>"));
}

#[test]
fn every_vocab_file_of_the_pinned_llama_cpp_parses() {
    for path in support::vocab_files() {
        let model = GgufModel::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let gguf = model.gguf();
        let info = model.info();
        assert_eq!(
            info.architecture.as_deref(),
            gguf.get::<&str>("general.architecture").ok()
        );
        assert_eq!(gguf.tensor_count(), 0, "{}: vocab only", path.display());
        let tokens = gguf
            .get::<cortex_gguf::Array<'_>>("tokenizer.ggml.tokens")
            .unwrap();
        assert!(tokens.len() > 1000, "{}", path.display());
        for token in &tokens {
            let token = token.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(matches!(token, Value::String(_)));
        }
        assert_eq!(info.vocab_size, Some(tokens.len()));
    }
}

/// The type table is `testdata/ggml-types.tsv` (from the pinned ggml) row for row: every id,
/// name, block size and bytes per block, and nothing else.
#[test]
fn the_type_table_is_the_pinned_ggml_table() {
    let tsv = std::fs::read_to_string(support::facts().join("ggml-types.tsv")).unwrap();
    let mut rows = 0;
    for line in tsv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (id, name, block, bytes) = (
            cols[0].parse().unwrap(),
            cols[1],
            cols[2].parse().unwrap(),
            cols[3].parse().unwrap(),
        );
        let layout = GgmlType(id)
            .block()
            .unwrap_or_else(|| panic!("type {id} ({name}) is missing"));
        assert_eq!(
            (layout.name, layout.elements, layout.bytes),
            (name, block, bytes),
            "type {id}"
        );
        assert_eq!(GgmlType::from_name(name), Some(GgmlType(id)));
        rows += 1;
    }
    assert_eq!(GgmlType::all().count(), rows, "no type beyond the table");
}
