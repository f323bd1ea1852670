//! Identifiers: [`ModelId`], [`InstanceId`] and [`EngineKind`].

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The longest model id accepted: ids become parts of container names and labels.
pub const MODEL_ID_MAX_LEN: usize = 63;

/// The id of a model under management, unique within one [`Supervisor`](crate::Supervisor).
///
/// An id is 1 to 63 ASCII characters: letters, digits, `-`, `_` and `.`, starting with a letter or a
/// digit. Ids are used verbatim in container names (`llamacpp-model-{id}`) and labels, so the rule is
/// the intersection of what Docker accepts for names and what is safe in a file name.
///
/// ```
/// use cortex_core::ModelId;
///
/// let id: ModelId = "gemma-3-270m".parse()?;
/// assert_eq!(id.as_str(), "gemma-3-270m");
/// assert!("../etc".parse::<ModelId>().is_err());
/// # Ok::<(), cortex_core::InvalidModelId>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelId(Arc<str>);

/// A string that is not a valid [`ModelId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model id {id:?}: {reason}")]
pub struct InvalidModelId {
    id: String,
    reason: &'static str,
}

impl InvalidModelId {
    /// The rejected input.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Why it was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

// === impl ModelId ===

impl ModelId {
    /// Validates `id` and wraps it.
    ///
    /// # Errors
    ///
    /// [`InvalidModelId`] when `id` is empty, longer than [`MODEL_ID_MAX_LEN`], does not start with an
    /// ASCII letter or digit, or contains a character other than ASCII letters, digits, `-`, `_`, `.`.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidModelId> {
        let id = id.into();
        let reason = if id.is_empty() {
            Some("must not be empty")
        } else if id.len() > MODEL_ID_MAX_LEN {
            Some("must be at most 63 characters")
        } else if !id.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric) {
            Some("must start with an ASCII letter or digit")
        } else if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            Some("may only contain ASCII letters, digits, '-', '_' and '.'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(InvalidModelId { id, reason }),
            None => Ok(Self(id.into())),
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ModelId {
    type Err = InvalidModelId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for ModelId {
    type Error = InvalidModelId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ModelId> for String {
    fn from(id: ModelId) -> Self {
        id.0.to_string()
    }
}

impl AsRef<str> for ModelId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The id a [`Runtime`](crate::Runtime) gives one running instance of a plan: a container id, a
/// process id, a pod name. Opaque to everything but the runtime that issued it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(Arc<str>);

// === impl InstanceId ===

impl InstanceId {
    /// Wraps a runtime's id for an instance.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which engine serves a model: `"llamacpp"`, `"vllm"`, or the name of an engine a user brings.
///
/// The supervisor looks engines up by kind, so a user's own [`Engine`](crate::Engine) can sit beside
/// the built-in ones without changing this crate.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EngineKind(Cow<'static, str>);

// === impl EngineKind ===

impl EngineKind {
    /// llama.cpp's `llama-server`.
    pub const LLAMA_CPP: Self = Self(Cow::Borrowed("llamacpp"));
    /// vLLM's `vllm serve`.
    pub const VLLM: Self = Self(Cow::Borrowed("vllm"));

    /// An engine kind by name.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self(name.into())
    }

    /// The kind's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for EngineKind {
    fn from(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }
}

impl From<String> for EngineKind {
    fn from(name: String) -> Self {
        Self(Cow::Owned(name))
    }
}

impl fmt::Debug for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_id_rules() {
        for ok in ["a", "gemma-3-270m", "Qwen3.5_8B", &"x".repeat(63)] {
            assert_eq!(ModelId::new(ok).unwrap().as_str(), ok);
        }
        let cases = [
            ("", "must not be empty"),
            ("-x", "must start with an ASCII letter or digit"),
            (".hidden", "must start with an ASCII letter or digit"),
            (
                "a/b",
                "may only contain ASCII letters, digits, '-', '_' and '.'",
            ),
            (
                "a b",
                "may only contain ASCII letters, digits, '-', '_' and '.'",
            ),
            ("é", "must start with an ASCII letter or digit"),
        ];
        for (bad, reason) in cases {
            let err = ModelId::new(bad).unwrap_err();
            assert_eq!(err.reason(), reason, "{bad:?}");
            assert_eq!(err.id(), bad);
        }
        let long = "x".repeat(64);
        assert_eq!(
            ModelId::new(long.clone()).unwrap_err().to_string(),
            format!("invalid model id {long:?}: must be at most 63 characters")
        );
    }

    #[test]
    fn engine_kind_constants() {
        assert_eq!(EngineKind::LLAMA_CPP, EngineKind::new("llamacpp"));
        assert_eq!(EngineKind::VLLM.to_string(), "vllm");
    }
}
