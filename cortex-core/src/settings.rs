//! [`EngineSettings`]: the engine-defined part of a [`ModelSpec`](crate::ModelSpec).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Engine settings as written in a config file, decoded into the engine's own typed struct on use.
///
/// `cortex-core` does not know what llama.cpp or vLLM accept; each engine crate defines a `serde`
/// struct for its settings and decodes this payload with [`decode`](Self::decode). Keeping the payload
/// untyped here lets one config file hold models of different engines, and lets users add engines
/// without changing this crate. Decoding errors name the offending field by its path.
///
/// ```
/// use cortex_core::EngineSettings;
/// use serde::Deserialize;
///
/// #[derive(Debug, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct MySettings {
///     ctx_size: u32,
/// }
///
/// let settings: EngineSettings = serde_json::from_str(r#"{"ctx_size": 8192}"#).unwrap();
/// assert_eq!(settings.decode::<MySettings>().unwrap().ctx_size, 8192);
///
/// let bad: EngineSettings = serde_json::from_str(r#"{"ctx_size": "big"}"#).unwrap();
/// let err = bad.decode::<MySettings>().unwrap_err();
/// assert_eq!(err.path(), "ctx_size");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EngineSettings(Map<String, Value>);

/// Engine settings that do not decode into the engine's settings type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid engine setting `{path}`: {message}")]
pub struct SettingsError {
    path: String,
    message: String,
}

// === impl SettingsError ===

impl SettingsError {
    /// The path of the offending field, like `draft.max_tokens` or `lora[1].scale`; `.` for the
    /// settings table itself.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What was wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

// === impl EngineSettings ===

impl EngineSettings {
    /// No settings: every engine default applies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes a typed settings struct.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] when `settings` does not serialize to a map (a struct or a map type).
    pub fn from_typed<T: Serialize>(settings: &T) -> Result<Self, SettingsError> {
        match serde_json::to_value(settings) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(other) => Err(SettingsError {
                path: ".".to_owned(),
                message: format!("expected a table of settings, found {}", kind_of(&other)),
            }),
            Err(e) => Err(SettingsError {
                path: ".".to_owned(),
                message: e.to_string(),
            }),
        }
    }

    /// Decodes the settings into an engine's typed struct.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] naming the path of the first field that does not fit `T`: an unknown field
    /// (when `T` denies them), a missing required field, or a value of the wrong type.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, SettingsError> {
        // Deserializing from a borrowed `Value` clones only what `T` keeps.
        let value = Value::Object(self.0.clone());
        serde_path_to_error::deserialize(value).map_err(|e| SettingsError {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }

    /// Whether no setting is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One setting by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Sets one setting, returning the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.0.insert(key.into(), value.into())
    }

    /// The settings as a JSON map.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Typed {
        ctx_size: u32,
        #[serde(default)]
        lora: Vec<Lora>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Lora {
        path: String,
        scale: f32,
    }

    #[test]
    fn typed_round_trip() {
        let typed = Typed {
            ctx_size: 4096,
            lora: vec![Lora {
                path: "a.gguf".into(),
                scale: 0.5,
            }],
        };
        let settings = EngineSettings::from_typed(&typed).unwrap();
        assert_eq!(settings.get("ctx_size"), Some(&Value::from(4096)));
        assert_eq!(settings.decode::<Typed>().unwrap(), typed);
    }

    #[test]
    fn errors_name_the_path() {
        let s: EngineSettings =
            serde_json::from_str(r#"{"ctx_size": 1, "lora": [{"path": "a", "scale": "x"}]}"#)
                .unwrap();
        let err = s.decode::<Typed>().unwrap_err();
        assert_eq!(err.path(), "lora[0].scale");
        assert!(
            err.to_string()
                .starts_with("invalid engine setting `lora[0].scale`: ")
        );

        let s: EngineSettings = serde_json::from_str(r#"{"ctx_size": 1, "ctx": 2}"#).unwrap();
        let err = s.decode::<Typed>().unwrap_err();
        assert_eq!(err.path(), "ctx");
        assert!(err.message().contains("unknown field `ctx`"), "{err}");
    }

    #[test]
    fn non_table_is_refused() {
        let err = EngineSettings::from_typed(&5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid engine setting `.`: expected a table of settings, found a number"
        );
    }
}
