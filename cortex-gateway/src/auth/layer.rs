use std::sync::Arc;

use tower_layer::Layer;

use super::{KeyStore, RequireApiKey};

/// Applies [`RequireApiKey`]. See the [module docs](crate::auth).
#[derive(Debug)]
pub struct RequireApiKeyLayer<K: ?Sized> {
    keys: Arc<K>,
    enabled: bool,
}

// === impl RequireApiKeyLayer ===

impl<K: KeyStore> RequireApiKeyLayer<K> {
    /// Checks keys against `keys`.
    pub fn new(keys: K) -> Self {
        Self {
            keys: Arc::new(keys),
            enabled: true,
        }
    }
}

impl<K: KeyStore + ?Sized> RequireApiKeyLayer<K> {
    /// Checks keys against a shared store.
    pub fn shared(keys: Arc<K>) -> Self {
        Self {
            keys,
            enabled: true,
        }
    }

    /// Turns checking off (`false`): every request passes, with no [`ApiKey`](super::ApiKey) in
    /// its extensions; presented keys are still removed before the request goes on. For
    /// gateways on a trusted network.
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }
}

impl<K: ?Sized> Clone for RequireApiKeyLayer<K> {
    fn clone(&self) -> Self {
        Self {
            keys: Arc::clone(&self.keys),
            enabled: self.enabled,
        }
    }
}

impl<S, K: ?Sized> Layer<S> for RequireApiKeyLayer<K> {
    type Service = RequireApiKey<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireApiKey {
            inner,
            keys: Arc::clone(&self.keys),
            enabled: self.enabled,
        }
    }
}
