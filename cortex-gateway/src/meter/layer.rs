use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::{MeterUsage, UsageSink};

/// Applies [`MeterUsage`]. See the [module docs](crate::meter).
#[derive(Clone)]
pub struct MeterUsageLayer {
    pub(super) sink: Arc<dyn UsageSink>,
}

impl fmt::Debug for MeterUsageLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeterUsageLayer").finish_non_exhaustive()
    }
}

// === impl MeterUsageLayer ===

impl MeterUsageLayer {
    /// Delivers records to `sink`.
    pub fn new(sink: impl UsageSink) -> Self {
        Self {
            sink: Arc::new(sink),
        }
    }
}

impl<S> Layer<S> for MeterUsageLayer {
    type Service = MeterUsage<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MeterUsage {
            inner,
            sink: Arc::clone(&self.sink),
        }
    }
}
