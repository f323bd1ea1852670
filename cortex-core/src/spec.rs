//! [`ModelSpec`]: what a user asks for, as written in a config file.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{EngineKind, EngineSettings, ModelId};

/// One model a user wants served: where it comes from, which engine runs it, and how.
///
/// This is the unit of configuration. In TOML:
///
/// ```
/// # use cortex_core::{ModelSpec, ModelSource, Task, EngineKind};
/// let spec: ModelSpec = toml::from_str(r#"
///     id = "gemma"
///     served_name = "gemma-3-270m"
///     engine = "llamacpp"
///     source = { path = "/models/gemma-3-270m-Q4_K_M.gguf" }
///     startup_timeout = "2m"
///     args = ["--jinja"]
///
///     [settings]
///     ctx_size = 8192
/// "#).unwrap();
///
/// assert_eq!(spec.served_name(), "gemma-3-270m");
/// assert_eq!(spec.engine, EngineKind::LLAMA_CPP);
/// assert_eq!(spec.task, Task::Generate);
/// assert_eq!(spec.replicas.get(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelSpec {
    /// The model's id, unique within a supervisor.
    pub id: ModelId,
    /// The name clients put in a request's `model` field; the id when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_name: Option<String>,
    /// Where the weights come from.
    pub source: ModelSource,
    /// What the model is served for.
    #[serde(default)]
    pub task: Task,
    /// Which engine serves it.
    pub engine: EngineKind,
    /// The engine's own settings, decoded by the engine.
    #[serde(default, skip_serializing_if = "EngineSettings::is_empty")]
    pub settings: EngineSettings,
    /// Extra command-line arguments, validated by the engine against its flag table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables for the engine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// How long the engine may take to become ready; the engine's default when not given.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub startup_timeout: Option<Duration>,
    /// How many instances to run; each is one endpoint.
    #[serde(default = "one")]
    pub replicas: NonZeroU32,
    /// What to do when an instance exits while running.
    #[serde(default, skip_serializing_if = "RestartPolicy::is_no")]
    pub restart: RestartPolicy,
    /// Other names clients may use for this model: the gateway sends a request naming one to
    /// this model, with the request's `model` rewritten to the served name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Served names of other models, in order, that take this model's requests when none of
    /// its replicas is usable (none running, or every circuit open).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
    /// When the model runs: from the start (`always`, the default) or from its first request
    /// (`on-demand`), stopped again after [`idle_unload`](Self::idle_unload) without requests.
    #[serde(default, skip_serializing_if = "Load::is_always")]
    pub load: Load,
    /// How long an on-demand model may go without requests before it is stopped; never when
    /// not given.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_unload: Option<Duration>,
}

/// When a model runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Load {
    /// Started with the server and kept running.
    #[default]
    Always,
    /// Started by its first request (which waits for it), stopped when idle.
    OnDemand,
}

impl Load {
    /// Whether this is [`Load::Always`].
    pub fn is_always(&self) -> bool {
        *self == Self::Always
    }
}

fn one() -> NonZeroU32 {
    NonZeroU32::MIN
}

// === impl ModelSpec ===

impl ModelSpec {
    /// A spec with every optional field at its default.
    pub fn new(id: ModelId, engine: EngineKind, source: ModelSource) -> Self {
        Self {
            id,
            served_name: None,
            source,
            task: Task::default(),
            engine,
            settings: EngineSettings::default(),
            args: Vec::new(),
            env: BTreeMap::new(),
            startup_timeout: None,
            replicas: one(),
            restart: RestartPolicy::default(),
            aliases: Vec::new(),
            fallback: Vec::new(),
            load: Load::Always,
            idle_unload: None,
        }
    }

    /// Loads the model on demand, stopping it after `idle` without requests (`None`: never).
    pub fn on_demand(mut self, idle: Option<Duration>) -> Self {
        self.load = Load::OnDemand;
        self.idle_unload = idle;
        self
    }

    /// Sets the aliases.
    pub fn with_aliases<I, S>(mut self, aliases: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.aliases = aliases.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the fallbacks, in order.
    pub fn with_fallback<I, S>(mut self, fallback: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fallback = fallback.into_iter().map(Into::into).collect();
        self
    }

    /// The name clients use: [`served_name`](Self::served_name) or else the id.
    pub fn served_name(&self) -> &str {
        self.served_name.as_deref().unwrap_or(self.id.as_str())
    }

    /// Sets the served name.
    pub fn with_served_name(mut self, name: impl Into<String>) -> Self {
        self.served_name = Some(name.into());
        self
    }

    /// Sets the task.
    pub fn with_task(mut self, task: Task) -> Self {
        self.task = task;
        self
    }

    /// Sets the engine settings.
    pub fn with_settings(mut self, settings: EngineSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Sets the extra command-line arguments.
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the startup timeout.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = Some(timeout);
        self
    }

    /// Sets the number of replicas.
    pub fn with_replicas(mut self, replicas: NonZeroU32) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets the restart policy.
    pub fn with_restart(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }
}

/// Where a model's weights come from.
///
/// Written as a table with exactly one of `path` or `hub`:
/// `source = { path = "/models/m.gguf" }` or
/// `source = { hub = "Qwen/Qwen3-8B", revision = "main" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSource", into = "RawSource")]
#[non_exhaustive]
pub enum ModelSource {
    /// A file or directory on the machine that runs the engine.
    Path(PathBuf),
    /// A Hugging Face hub repository.
    Hub(HubRepo),
}

/// A Hugging Face hub repository, optionally at a revision and narrowed to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubRepo {
    /// `owner/name`.
    pub repo: String,
    /// A branch, tag or commit; the default branch when not given.
    pub revision: Option<String>,
    /// One file inside the repository (a GGUF file, say).
    pub file: Option<String>,
}

/// A source table that is not exactly one valid `path` or `hub`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model source: {0}")]
pub struct InvalidSource(String);

// === impl HubRepo ===

impl HubRepo {
    /// A repository id, checked to be `owner/name` with each part made of ASCII letters, digits,
    /// `-`, `_` and `.`, and at most 96 characters in all, as the hub requires.
    ///
    /// # Errors
    ///
    /// [`InvalidSource`] naming the repository id and the rule it breaks.
    pub fn new(repo: impl Into<String>) -> Result<Self, InvalidSource> {
        let repo = repo.into();
        let valid_part = |p: &str| {
            !p.is_empty()
                && !p.starts_with(['-', '.'])
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        let ok = repo.len() <= 96
            && matches!(repo.split_once('/'), Some((owner, name)) if valid_part(owner) && valid_part(name));
        if ok {
            Ok(Self {
                repo,
                revision: None,
                file: None,
            })
        } else {
            Err(InvalidSource(format!(
                "hub repository {repo:?} is not of the form owner/name \
                 (ASCII letters, digits, '-', '_', '.'; at most 96 characters)"
            )))
        }
    }

    /// Sets the revision.
    pub fn with_revision(mut self, revision: impl Into<String>) -> Self {
        self.revision = Some(revision.into());
        self
    }

    /// Sets the file.
    pub fn with_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<String>,
}

impl TryFrom<RawSource> for ModelSource {
    type Error = InvalidSource;

    fn try_from(raw: RawSource) -> Result<Self, Self::Error> {
        match (raw.path, raw.hub) {
            (Some(path), None) => {
                if raw.revision.is_some() || raw.file.is_some() {
                    return Err(InvalidSource(
                        "`revision` and `file` apply to `hub` sources only; \
                         for a local path name the file in `path`"
                            .into(),
                    ));
                }
                if path.as_os_str().is_empty() {
                    return Err(InvalidSource("`path` is empty".into()));
                }
                Ok(Self::Path(path))
            }
            (None, Some(hub)) => {
                let mut repo = HubRepo::new(hub)?;
                repo.revision = raw.revision;
                repo.file = raw.file;
                Ok(Self::Hub(repo))
            }
            (Some(_), Some(_)) => Err(InvalidSource(
                "give either `path` or `hub`, not both".into(),
            )),
            (None, None) => Err(InvalidSource(
                "give one of `path` (a local file or directory) or `hub` (owner/name)".into(),
            )),
        }
    }
}

impl From<ModelSource> for RawSource {
    fn from(source: ModelSource) -> Self {
        match source {
            ModelSource::Path(path) => Self {
                path: Some(path),
                hub: None,
                revision: None,
                file: None,
            },
            ModelSource::Hub(h) => Self {
                path: None,
                hub: Some(h.repo),
                revision: h.revision,
                file: h.file,
            },
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Hub(h) => {
                write!(f, "hub:{}", h.repo)?;
                if let Some(file) = &h.file {
                    write!(f, "/{file}")?;
                }
                if let Some(rev) = &h.revision {
                    write!(f, "@{rev}")?;
                }
                Ok(())
            }
        }
    }
}

/// What a model is served for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Task {
    /// Text generation: chat and completions.
    #[default]
    Generate,
    /// Embeddings.
    Embed,
    /// Reranking.
    Rerank,
}

/// What the supervisor does when an instance exits while its model is running.
///
/// The default is [`No`](Self::No), as the source documents require: a crashed engine is shown as
/// failed, with its last log lines, until someone starts it again.
/// In TOML: `restart = "no"` or `restart = { on_failure = { max_restarts = 3, backoff = "5s" } }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum RestartPolicy {
    /// Never restart; the model becomes [`Failed`](crate::ModelState::Failed).
    #[default]
    No,
    /// Restart the exited instance up to `max_restarts` times over the model's life, waiting
    /// `backoff` before each attempt; after that the model becomes failed.
    OnFailure {
        /// Restarts allowed per replica before giving up.
        max_restarts: u32,
        /// Wait before each restart.
        #[serde(with = "humantime_serde", default = "default_backoff")]
        backoff: Duration,
    },
}

fn default_backoff() -> Duration {
    Duration::from_secs(5)
}

// === impl RestartPolicy ===

impl RestartPolicy {
    fn is_no(&self) -> bool {
        matches!(self, Self::No)
    }

    /// Restart up to `max_restarts` times with the given backoff.
    pub fn on_failure(max_restarts: u32, backoff: Duration) -> Self {
        Self::OnFailure {
            max_restarts,
            backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_repo_rules() {
        assert!(HubRepo::new("Qwen/Qwen3-8B").is_ok());
        assert!(HubRepo::new("unsloth/gpt-oss-20b-GGUF").is_ok());
        for bad in [
            "",
            "noslash",
            "a/",
            "/b",
            "a/b/c",
            "a/b c",
            "-a/b",
            &format!("a/{}", "b".repeat(95)),
        ] {
            assert!(HubRepo::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn source_display() {
        assert_eq!(
            ModelSource::Path("/m/x.gguf".into()).to_string(),
            "/m/x.gguf"
        );
        let hub = HubRepo::new("a/b")
            .unwrap()
            .with_file("q4.gguf")
            .with_revision("main");
        assert_eq!(ModelSource::Hub(hub).to_string(), "hub:a/b/q4.gguf@main");
    }
}
