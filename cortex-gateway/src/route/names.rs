//! Other names for served models: aliases and ordered fallbacks, resolved by [`Route`](super::Route).

use std::collections::HashMap;

/// Aliases (several names for one served model) and fallbacks (an ordered list of models to use
/// when every replica of a model is down or its circuit is open), as [`Route`](super::Route)
/// resolves them:
///
/// - a request naming an alias goes to its model, with the body's `model` rewritten to the served
///   name (a `"model"` member appended: the engines' JSON parsers keep the last duplicate);
/// - a request for a model with no usable replica goes to the first fallback that has one and that
///   the caller's key may use, rewritten the same way; one hop only (a fallback's own fallbacks are
///   not followed);
/// - `GET /v1/models` lists aliases beside the models (`"alias_of"`), and each model's fallbacks
///   (`"fallbacks"`).
///
/// A key that may use a model may use its aliases, and a key that names an alias may use it; a
/// fallback is used only when the key may use it by its own name.
///
/// ```
/// use cortex_gateway::route::Names;
///
/// let names = Names::new()
///     .alias("gpt-4o-mini", "gemma-3")
///     .fallback("qwen3-32b", ["gemma-3"]);
/// assert_eq!(names.target("gpt-4o-mini"), Some("gemma-3"));
/// assert_eq!(names.fallbacks("qwen3-32b"), ["gemma-3"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    aliases: HashMap<String, String>,
    fallbacks: HashMap<String, Vec<String>>,
}

// === impl Names ===

impl Names {
    /// No aliases, no fallbacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// `alias` names `model` (a served name).
    #[must_use]
    pub fn alias(mut self, alias: impl Into<String>, model: impl Into<String>) -> Self {
        self.aliases.insert(alias.into(), model.into());
        self
    }

    /// When `model` has no usable replica, try these served names in order.
    #[must_use]
    pub fn fallback<I, S>(mut self, model: impl Into<String>, fallbacks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fallbacks.insert(
            model.into(),
            fallbacks.into_iter().map(Into::into).collect(),
        );
        self
    }

    /// The model an alias names.
    pub fn target(&self, alias: &str) -> Option<&str> {
        self.aliases.get(alias).map(String::as_str)
    }

    /// A model's fallbacks, in order (empty when none).
    pub fn fallbacks(&self, model: &str) -> &[String] {
        self.fallbacks.get(model).map_or(&[], Vec::as_slice)
    }

    /// Every alias with its model.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &str)> {
        self.aliases.iter().map(|(a, m)| (a.as_str(), m.as_str()))
    }

    /// Whether there is nothing to resolve.
    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty() && self.fallbacks.is_empty()
    }
}
