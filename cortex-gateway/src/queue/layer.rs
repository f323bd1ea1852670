use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use cortex_core::{Endpoint, InstanceId};
use tokio::sync::Semaphore;
use tower_layer::Layer;

use super::Queue;

type SlotsFn = dyn Fn(&Endpoint) -> usize + Send + Sync;

/// Applies [`Queue`]. See the [module docs](crate::queue).
#[derive(Clone)]
pub struct QueueLayer {
    pub(super) slots: usize,
    pub(super) per_replica: Option<Arc<SlotsFn>>,
    pub(super) max_waiting: usize,
    pub(super) timeout: Duration,
    pub(super) queues: Queues,
}

impl fmt::Debug for QueueLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueLayer")
            .field("slots", &self.slots)
            .field("max_waiting", &self.max_waiting)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

// === impl QueueLayer ===

impl QueueLayer {
    /// `slots` concurrent requests per replica (at least 1).
    pub fn new(slots: usize) -> Self {
        Self {
            slots: slots.max(1),
            per_replica: None,
            max_waiting: 256,
            timeout: Duration::from_secs(30),
            queues: Queues::default(),
        }
    }

    /// `slots` concurrent requests per replica (at least 1) for replicas not yet seen.
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = slots.max(1);
        self
    }

    /// The slots of each replica, asked once per replica (its `--parallel`); 0 is taken as 1.
    pub fn per_replica(
        mut self,
        slots: impl Fn(&Endpoint) -> usize + Send + Sync + 'static,
    ) -> Self {
        self.per_replica = Some(Arc::new(slots));
        self
    }

    /// Requests that may wait per replica (default 256); more are refused at once.
    pub fn max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = n;
        self
    }

    /// The longest wait (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The table of queues, to read depths from.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }
}

impl<S> Layer<S> for QueueLayer {
    type Service = Queue<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Queue {
            inner,
            config: self.clone(),
        }
    }
}

/// One replica's slots and waiters.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: Arc<str>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) waiting: AtomicUsize,
}

/// The queues of every replica.
#[derive(Debug, Clone, Default)]
pub struct Queues {
    single: Arc<OnceLock<Arc<Slot>>>,
    by_instance: Arc<RwLock<HashMap<InstanceId, Arc<Slot>>>>,
}

// === impl Queues ===

impl Queues {
    pub(crate) fn slot(
        &self,
        endpoint: Option<&Endpoint>,
        slots: impl FnOnce() -> usize,
    ) -> Arc<Slot> {
        let new = |name: &str, n: usize| {
            Arc::new(Slot {
                name: Arc::from(name),
                permits: Arc::new(Semaphore::new(n.max(1))),
                waiting: AtomicUsize::new(0),
            })
        };
        let Some(endpoint) = endpoint else {
            return Arc::clone(self.single.get_or_init(|| new("service", slots())));
        };
        if let Some(slot) = self
            .by_instance
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&endpoint.instance)
        {
            return Arc::clone(slot);
        }
        let mut map = self
            .by_instance
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            map.entry(endpoint.instance.clone())
                .or_insert_with(|| new(endpoint.instance.as_str(), slots())),
        )
    }

    /// Requests waiting for `instance`.
    pub fn waiting(&self, instance: &InstanceId) -> usize {
        self.by_instance
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(instance)
            .map_or(0, |s| s.waiting.load(Ordering::Relaxed))
    }

    /// Free slots of `instance`, if it has been seen.
    pub fn free(&self, instance: &InstanceId) -> Option<usize> {
        self.by_instance
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(instance)
            .map(|s| s.permits.available_permits())
    }
}
