//! Which engine should serve a model, decided from the files, and explained.

use std::path::Path;
use std::sync::LazyLock;

use cortex_core::{EngineKind, ModelSource};

/// The architectures vLLM 0.32.0 serves (`config.json`'s `architectures`), generated from its model
/// registry (`testdata/vllm-0.32.0/vllm-architectures.txt`).
pub static VLLM_ARCHITECTURES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    include_str!("vllm/architectures-0.32.0.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
});

/// An engine recommendation and the reason for it, to show the user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recommendation {
    /// The engine, when one fits.
    pub engine: Option<EngineKind>,
    /// Why, in words.
    pub reason: String,
}

/// Recommends an engine for `source` from what its files are: GGUF → llama.cpp; a Hugging Face
/// directory whose `config.json` names an architecture vLLM 0.32.0 serves → vLLM; otherwise no
/// engine, and why. No model is special-cased by name.
pub fn recommend(source: &ModelSource) -> Recommendation {
    let none = |reason: String| Recommendation {
        engine: None,
        reason,
    };
    let path = match source {
        ModelSource::Path(p) => p,
        ModelSource::Hub(h) => {
            return none(format!(
                "{} is a hub repository: its files are not here to look at; download it and point source.path at the directory, or choose the engine yourself",
                h.repo
            ));
        }
        _ => return none("unsupported source".into()),
    };
    if path.is_file() {
        return if is_gguf(path) {
            Recommendation {
                engine: Some(EngineKind::LLAMA_CPP),
                reason: format!(
                    "{} is a GGUF file, which llama.cpp loads natively",
                    path.display()
                ),
            }
        } else {
            none(format!(
                "{} is neither a GGUF file nor a model directory",
                path.display()
            ))
        };
    }
    if !path.is_dir() {
        return none(format!("{} does not exist", path.display()));
    }
    let has_gguf = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| is_gguf(&e.path()));
    let config = path.join("config.json");
    if config.is_file() {
        let archs: Vec<String> = std::fs::read_to_string(&config)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v.get("architectures")
                    .and_then(|a| serde_json::from_value(a.clone()).ok())
            })
            .unwrap_or_default();
        if let Some(arch) = archs
            .iter()
            .find(|a| VLLM_ARCHITECTURES.contains(&a.as_str()))
        {
            return Recommendation {
                engine: Some(EngineKind::VLLM),
                reason: format!("{arch} (config.json) is served by vLLM 0.32.0"),
            };
        }
        if has_gguf {
            return Recommendation {
                engine: Some(EngineKind::LLAMA_CPP),
                reason: format!(
                    "{} is not served by vLLM 0.32.0, but the directory holds GGUF files for llama.cpp",
                    show(&archs)
                ),
            };
        }
        return none(format!(
            "{} is not served by vLLM 0.32.0 and the directory holds no GGUF file; convert the model to GGUF for llama.cpp",
            show(&archs)
        ));
    }
    if has_gguf {
        return Recommendation {
            engine: Some(EngineKind::LLAMA_CPP),
            reason: format!(
                "{} holds GGUF files, which llama.cpp loads natively",
                path.display()
            ),
        };
    }
    none(format!(
        "{} has neither a config.json nor GGUF files",
        path.display()
    ))
}

fn is_gguf(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn show(archs: &[String]) -> String {
    if archs.is_empty() {
        "a config.json without architectures".into()
    } else {
        archs.join(", ")
    }
}
