//! Which GGUF file to load for a path: a file, a directory, or a split set.

use std::path::{Path, PathBuf};

use cortex_core::Diagnostic;
use cortex_gguf::SplitName;

/// What a model path resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResolvedGguf {
    /// The file to pass to the engine: the file itself, or the first shard of a split set.
    pub file: PathBuf,
    /// Every file the model consists of (several for a split set).
    pub files: Vec<PathBuf>,
}

/// Resolves `path` to the GGUF file to load.
///
/// - A file: itself; a shard of a split set (`NAME-00002-of-00005.gguf`): the first shard, after
///   checking every shard exists.
/// - A directory: the file named `model_file`; else the one GGUF model in it (a split set counts
///   as one), narrowed by `quant` (matched case-insensitively in file names, `Q4_K_M`). Projector
///   files (`mmproj*`) are not models.
///
/// # Errors
///
/// A [`Diagnostic`] for `field` naming what is missing, or the candidates when the choice is
/// ambiguous or none matches.
pub fn resolve_gguf(
    path: &Path,
    model_file: Option<&str>,
    quant: Option<&str>,
    field: &str,
) -> Result<ResolvedGguf, Diagnostic> {
    if path.is_dir() {
        if let Some(name) = model_file {
            let file = path.join(name);
            if !file.is_file() {
                return Err(Diagnostic::error(
                    "settings.model_file",
                    format!("{} has no file {name}", path.display()),
                ));
            }
            return resolve_file(&file, field);
        }
        let mut models: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Diagnostic::error(field, format!("cannot list {}: {e}", path.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_lowercase())
                    .unwrap_or_default();
                p.is_file()
                    && p.extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
                    && !name.starts_with("mmproj")
                    && SplitName::parse(p).is_none_or(|n| n.number() == 1)
            })
            .collect();
        models.sort();
        let all = models.clone();
        if let Some(q) = quant {
            let q = q.to_lowercase();
            models.retain(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().to_lowercase().contains(&q))
            });
        }
        let names = |v: &[PathBuf]| {
            v.iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return match models.as_slice() {
            [one] => resolve_file(one, field),
            [] if all.is_empty() => Err(Diagnostic::error(
                field,
                format!("{} holds no GGUF model", path.display()),
            )),
            [] => Err(Diagnostic::error(
                "settings.quant",
                format!(
                    "no GGUF file in {} matches quantization {:?}",
                    path.display(),
                    quant.unwrap_or_default()
                ),
            )
            .with_suggestion(format!("choose one of: {}", names(&all)))),
            many => Err(Diagnostic::error(
                field,
                format!("{} holds several GGUF models", path.display()),
            )
            .with_suggestion(format!(
                "set settings.model_file or settings.quant to one of: {}",
                names(many)
            ))),
        };
    }
    resolve_file(path, field)
}

fn resolve_file(path: &Path, field: &str) -> Result<ResolvedGguf, Diagnostic> {
    let Some(name) = SplitName::parse(path) else {
        return Ok(ResolvedGguf {
            file: path.to_owned(),
            files: vec![path.to_owned()],
        });
    };
    let count = name.count();
    let files: Vec<PathBuf> = (1..=count).map(|no| name.shard(no)).collect();
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !f.is_file())
        .map(|f| f.display().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Diagnostic::error(
            field,
            format!(
                "split set of {count} is incomplete: missing {}",
                missing.join(", ")
            ),
        ));
    }
    Ok(ResolvedGguf {
        file: files.first().cloned().unwrap_or_else(|| path.to_owned()),
        files,
    })
}
