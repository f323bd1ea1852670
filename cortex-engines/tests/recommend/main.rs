//! Engine recommendation from what the files are, with the vLLM list of the pinned version.

use std::path::{Path, PathBuf};

use cortex_core::{EngineKind, HubRepo, ModelSource};
use cortex_engines::{VLLM_ARCHITECTURES, recommend};

fn dir_with(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cortex-recommend-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (f, content) in files {
        std::fs::write(dir.join(f), content).unwrap();
    }
    dir
}

#[test]
fn the_architecture_list_is_the_pinned_registry() {
    let facts = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/vllm-0.32.0/vllm-architectures.txt"),
    )
    .unwrap();
    let supported: Vec<&str> = facts
        .lines()
        .filter(|l| {
            !l.starts_with('#') && !l.trim().is_empty() && !l.contains("NOT in get_supported_archs")
        })
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(*VLLM_ARCHITECTURES, supported);
    assert_eq!(supported.len(), 391, "the facts say 391 architectures");
}

#[test]
fn decided_by_the_files() {
    let gguf = dir_with("gguf", &[("m-Q4_K_M.gguf", "GGUF")]);
    let r = recommend(&ModelSource::Path(gguf.join("m-Q4_K_M.gguf")));
    assert_eq!(r.engine, Some(EngineKind::LLAMA_CPP), "{}", r.reason);
    assert_eq!(
        recommend(&ModelSource::Path(gguf.clone())).engine,
        Some(EngineKind::LLAMA_CPP)
    );

    // gpt-oss is served by vLLM 0.32.0: the source documents' claim otherwise is out of date.
    let hf = dir_with(
        "gptoss",
        &[("config.json", r#"{"architectures":["GptOssForCausalLM"]}"#)],
    );
    let r = recommend(&ModelSource::Path(hf.clone()));
    assert_eq!(r.engine, Some(EngineKind::VLLM));
    assert_eq!(
        r.reason,
        "GptOssForCausalLM (config.json) is served by vLLM 0.32.0"
    );

    let old = dir_with(
        "old",
        &[(
            "config.json",
            r#"{"architectures":["Fairseq2LlamaForCausalLM"]}"#,
        )],
    );
    let r = recommend(&ModelSource::Path(old.clone()));
    assert_eq!(r.engine, None);
    assert!(
        r.reason.contains("is not served by vLLM 0.32.0"),
        "{}",
        r.reason
    );

    let hub = recommend(&ModelSource::Hub(
        HubRepo::new("openai/gpt-oss-20b").unwrap(),
    ));
    assert_eq!(hub.engine, None);
    assert!(hub.reason.contains("download it"), "{}", hub.reason);
    assert_eq!(
        recommend(&ModelSource::Path("/nope".into())).reason,
        "/nope does not exist"
    );
    for d in [gguf, hf, old] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
