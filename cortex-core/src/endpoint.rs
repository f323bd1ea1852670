//! [`Endpoint`]: where a ready instance of a model answers.

use std::fmt;
use std::sync::Arc;

use http::Uri;
use serde::{Deserialize, Serialize};

use crate::{EngineKind, InstanceId, ModelId};

/// One ready instance of a model, as the [`Registry`](crate::Registry) hands it to the gateway.
///
/// Cheap to clone: the served name is shared and the URI is reference-counted inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Endpoint {
    /// The model this endpoint serves.
    pub model: ModelId,
    /// The name clients ask for.
    pub served_name: Arc<str>,
    /// Which replica, from 0.
    pub replica: u32,
    /// The runtime's instance behind it; unique among endpoints.
    pub instance: InstanceId,
    /// The engine answering.
    pub engine: EngineKind,
    /// Scheme and authority the engine answers on, such as `http://127.0.0.1:39211`.
    #[serde(with = "crate::uri_serde")]
    pub base_url: Uri,
}

// === impl Endpoint ===

impl Endpoint {
    /// An endpoint.
    pub fn new(
        model: ModelId,
        served_name: impl Into<Arc<str>>,
        replica: u32,
        instance: InstanceId,
        engine: EngineKind,
        base_url: Uri,
    ) -> Self {
        Self {
            model,
            served_name: served_name.into(),
            replica,
            instance,
            engine,
            base_url,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} replica {} at {} ({})",
            self.served_name, self.replica, self.base_url, self.instance
        )
    }
}
